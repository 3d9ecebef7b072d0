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
