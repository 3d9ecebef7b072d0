"""``atc-wsi analyze`` end to end on the real CMU slide, and its refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from workers.cli import app

CMU = Path(__file__).resolve().parents[3] / "shared" / "data" / "slides" / "CMU-1-Small-Region.svs"

pytestmark = pytest.mark.skipif(not CMU.is_file(), reason="shared data not present")


def test_analyze_writes_report_and_tiles(tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app,
        [
            "analyze",
            str(CMU),
            "--out",
            str(out),
            "--device",
            "cpu",
            "--analyses",
            "pattern,necrosis",
            "--work-dir",
            str(tmp_path / "work"),
        ],
    )
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    assert report["slide"]["width"] == 2220 and report["slide"]["mpp"] == pytest.approx(0.499)
    assert report["provenance"]["device"].startswith("cpu")
    names = {m["name"] for m in report["provenance"]["models"]}
    assert names == {"atc-pattern-v1", "atc-necrosis-v1"}
    assert all(len(m["sha256"]) == 64 for m in report["provenance"]["models"])
    assert set(report["provenance"]["durations_s"]) >= {"tissue", "pattern", "necrosis", "total"}
    with np.load(out / "tiles.npz") as z:
        assert z["l0_xy"].shape[0] == z["probs"].shape[0] > 0
        assert np.allclose(z["probs"].sum(axis=1), 1.0, atol=1e-4)
    assert "pattern" in (tmp_path / "work" / "chunks.log").read_text()


@pytest.mark.slow
def test_analyze_benign_slide_says_not_assessed(tmp_path: Path) -> None:
    """All analyses on benign skin ("no tumour found"): the summary and report.json say the
    counts were not assessed and why, instead of 0; no hotspot circle is exported."""
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["analyze", str(CMU), "--out", str(out), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    lines = {line.split()[0]: line for line in res.output.splitlines() if line.startswith("  ")}
    assert "no_tumour" in lines["scope"]
    for key in ("mitoses", "TAM"):
        assert lines[key].endswith("not assessed — no tumour was found on this slide"), lines[key]
    assert "share of the tumour bed not assessed" in lines["necrosis"]
    report = json.loads((out / "report.json").read_text())
    assert report["mitosis"]["count_total"] is None and report["tam"]["density_per_mm2"] is None
    assert report["mitosis"]["withheld"].startswith("no_tumour: No tumour was found")
    geo = json.loads((out / "annotations.geojson").read_text())
    names = {f["properties"]["classification"]["name"] for f in geo["features"]}
    assert not any(n.startswith(("Mitosis", "Macrophage")) for n in names), names
    assert not (out / "overlays" / "tam_density.u8.tiff").exists()
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "Not assessed — no tumour was found on this slide" in page


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--analyses", "patterns"], "unknown analysis 'patterns'"),
        (["--models", "pattern=atc-nope"], "unknown model 'atc-nope'"),
        (["--models", "pattern"], "ANALYSIS=MODEL"),
        (["--device", "tpu"], "device"),
    ],
)
def test_bad_options_exit_2_with_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    res = CliRunner().invoke(app, ["analyze", str(CMU), "--out", str(tmp_path), *args])
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert "Traceback" not in res.output


def test_missing_slide_exits_2(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["analyze", str(tmp_path / "nope.svs"), "--out", str(tmp_path)])
    assert res.exit_code == 2
    assert "nope.svs" in res.output
