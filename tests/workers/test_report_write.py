"""write_outputs on a real slide: every file present, aligned, consistent and atomic."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import openslide
import pytest
from outputs_factory import SLIDE, make_outputs, make_withheld_outputs

import workers.report.write as write_mod
from workers.report import OutputSettings, ReportValidationError, validate_report, write_outputs
from wsi import open_slide
from wsi.results import SlideOutputs


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[SlideOutputs, dict[str, Path], Path]:
    outputs = make_outputs()
    out_dir = tmp_path_factory.mktemp("out")
    paths = write_outputs(outputs, out_dir, SLIDE, settings=OutputSettings(asap_xml=True))
    return outputs, paths, out_dir


def test_every_file_is_written(written: tuple[SlideOutputs, dict[str, Path], Path]) -> None:
    outputs, paths, out_dir = written
    for role in ("report", "report_html", "annotations", "tiles", "overlay_index", "asap"):
        assert paths[role].is_file() and paths[role].stat().st_size > 0, role
    tiffs = sorted(p.name for p in (out_dir / "overlays").glob("*.tiff"))
    assert tiffs == sorted(f"{m.name}.{form}.tiff" for m in outputs.maps for form in ("rgba", "u8"))
    assert not [p for p in out_dir.rglob("*") if p.name.endswith(".tmp")]
    report = json.loads(paths["report"].read_text(encoding="utf-8"))
    validate_report(report)
    assert {o["path"] for o in report["outputs"]["overlays"]} == {f"overlays/{t}" for t in tiffs}


def test_every_overlay_opens_aligned_with_exact_values(
    written: tuple[SlideOutputs, dict[str, Path], Path],
) -> None:
    outputs, _, out_dir = written
    report = json.loads((out_dir / "report.json").read_text(encoding="utf-8"))
    by_name = {m.name: m for m in outputs.maps}
    with open_slide(SLIDE) as slide:
        dims, mpp = slide.dimensions, slide.mpp
    for entry in report["outputs"]["overlays"]:
        with openslide.OpenSlide(str(out_dir / entry["path"])) as osr:
            assert osr.dimensions == dims, entry
            assert float(osr.properties["openslide.mpp-x"]) == pytest.approx(mpp, rel=1e-6)
            if entry["form"] != "u8":
                continue
            raster = by_name[entry["name"]]
            rows, cols = raster.values.shape
            for i, j in [(1, 1), (rows // 2, cols // 3), (rows - 2, cols - 2)]:
                x, y = int((j + 0.5) * raster.l0_per_px), int((i + 0.5) * raster.l0_per_px)
                code = np.asarray(osr.read_region((x, y), 0, (1, 1)))[0, 0, 0]
                value = code * entry["value_per_code"]
                assert value == pytest.approx(
                    float(raster.values[i, j]), abs=0.5 * entry["value_per_code"]
                )


def test_geojson_round_trips_the_report(
    written: tuple[SlideOutputs, dict[str, Path], Path],
) -> None:
    outputs, paths, _ = written
    report = outputs.report
    fc = json.loads(paths["annotations"].read_text(encoding="utf-8"))
    points = Counter(
        f["properties"]["classification"]["name"]
        for f in fc["features"]
        if f["geometry"]["type"] == "Point"
    )
    mitosis = report["mitosis"]
    assert points["Mitosis: Typical"] == mitosis["count_typical"]
    assert points["Mitosis: Tripolar"] == mitosis["count_tripolar"]
    assert points["Mitosis: Typical"] + points["Mitosis: Tripolar"] == mitosis["count_total"]
    tiles = [
        f
        for f in fc["features"]
        if f["properties"]["objectType"] == "detection" and f["geometry"]["type"] == "Polygon"
    ]
    assert len(tiles) == len(outputs.tiles.l0_xy)  # type: ignore[union-attr]
    assert set(tiles[0]["properties"]["measurements"]) == {
        "P(Background)",
        "P(Spindle)",
        "P(Pleomorphic giant cell)",
        "P(Squamoid)",
        "P(Necrosis)",
        "P(Non-tumour)",
    }
    hotspot = next(
        f
        for f in fc["features"]
        if f["properties"]["classification"]["name"].startswith("Mitosis hotspot")
    )
    ring = np.asarray(hotspot["geometry"]["coordinates"][0])
    centre = mitosis["hotspot_2mm2"]["l0_center"]
    radius = mitosis["hotspot_2mm2"]["l0_radius"]
    assert hotspot["properties"]["measurements"]["count"] == mitosis["mitoses_per_2mm2_hotspot"]
    np.testing.assert_allclose(np.hypot(*(ring - centre).T), radius, rtol=1e-9)
    area_mm2 = math.pi * (radius * outputs.mpp / 1000) ** 2
    assert area_mm2 == pytest.approx(2.0, rel=1e-6)
    necrosis = [
        f for f in fc["features"] if f["properties"]["classification"]["name"] == "Necrosis"
    ]
    assert len(necrosis) == 1 and necrosis[0]["properties"]["objectType"] == "annotation"


def test_tiles_npz_round_trips(written: tuple[SlideOutputs, dict[str, Path], Path]) -> None:
    outputs, paths, _ = written
    with np.load(paths["tiles"]) as npz:
        np.testing.assert_array_equal(npz["l0_xy"], outputs.tiles.l0_xy)  # type: ignore[union-attr]
        np.testing.assert_array_equal(npz["probs"], outputs.tiles.probs)  # type: ignore[union-attr]
        assert tuple(npz["class_names"]) == outputs.tiles.class_names  # type: ignore[union-attr]
        np.testing.assert_array_equal(npz["map__tam_density"], outputs.maps[-1].values)
        assert json.loads(str(npz["map__tam_density__meta"]))["vmax"] == 200.0
        np.testing.assert_array_equal(
            npz[f"points__{outputs.points[0].name}"], outputs.points[0].l0_xy
        )


def test_html_is_self_contained_and_readable(
    written: tuple[SlideOutputs, dict[str, Path], Path],
) -> None:
    _, paths, _ = written
    page = paths["report_html"].read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*['"]?(https?:)?//""", page)
    assert "<script" not in page and "@import" not in page
    # five figures + the detection gallery: 6 + 6 mitoses, 3 tripolar, 6 + 6 macrophages
    assert len(re.findall(r"src='data:image/png;base64,", page)) == 5 + 12 + 3 + 12
    for text in (
        "Mitoses in 2 mm² hotspot",
        "Per 10 HPF",
        "0.237 mm²",
        "Decision support only",
        "WHO 2022: ≥ 5 mitoses per 2 mm²",
        "not assessed",
        "Growth patterns",
        "Spindle",
        "atc-pattern-v1",
        "CMU-1-Small-Region.svs",
    ):
        assert text in page, text


def test_subset_report_and_missing_slide(tmp_path: Path) -> None:
    outputs = make_outputs()
    outputs.report = {k: outputs.report[k] for k in ("schema_version", "slide", "provenance")}
    outputs.maps, outputs.points, outputs.circles, outputs.polygons = [], [], [], []
    paths = write_outputs(outputs, tmp_path, tmp_path / "moved-away.svs")
    page = paths["report_html"].read_text(encoding="utf-8")
    assert "Thumbnail unavailable" in page and "Growth patterns" not in page
    validate_report(json.loads(paths["report"].read_text(encoding="utf-8")))


def test_invalid_report_writes_nothing(tmp_path: Path) -> None:
    outputs = make_outputs()
    del outputs.report["provenance"]
    with pytest.raises(ReportValidationError, match="provenance"):
        write_outputs(outputs, tmp_path / "out", SLIDE)
    assert not (tmp_path / "out").exists()


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def test_crash_while_writing_keeps_previous_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outputs = make_outputs()
    outputs.maps = outputs.maps[-2:]  # keep it quick
    write_outputs(outputs, tmp_path, SLIDE)
    before = _snapshot(tmp_path)
    changed = make_outputs()
    changed.maps = [
        type(m)(m.name, m.values * 0.5, m.l0_per_px, m.kind, m.unit, m.vmax) for m in outputs.maps
    ]
    changed.report["mitosis"]["count"] = 99

    def crash(*_args: Any, **_kwargs: Any) -> str:
        raise MemoryError("killed while rendering")

    monkeypatch.setattr(write_mod, "render_html", crash)
    with pytest.raises(MemoryError):
        write_outputs(changed, tmp_path, SLIDE)
    after = _snapshot(tmp_path)
    assert set(after) == set(before)  # no temporary files left behind
    assert after["report.json"] == before["report.json"]  # still the previous complete report
    assert after["report.html"] == before["report.html"]
    for name in before:  # every file is either the old or a complete new version
        if name.endswith(".tiff"):
            with openslide.OpenSlide(str(tmp_path / name)) as osr:
                assert osr.dimensions == outputs.l0_dimensions


def test_crash_on_first_write_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outputs = make_outputs()
    outputs.maps = []

    def crash(_outputs: SlideOutputs) -> bytes:
        raise OSError("disk full")

    monkeypatch.setattr(write_mod, "tiles_npz", crash)
    with pytest.raises(OSError, match="disk full"):
        write_outputs(outputs, tmp_path, SLIDE)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "tiles.npz" not in names and "report.json" not in names
    assert not [n for n in names if n.endswith(".tmp")]


def test_withheld_figures_read_not_assessed(tmp_path: Path) -> None:
    """A slide judged "no tumour found": no 0 where a count would be, the reason instead; no
    hotspot circle, no mitosis or macrophage objects, no TAM overlay."""
    outputs = make_withheld_outputs()
    paths = write_outputs(outputs, tmp_path, SLIDE)
    report = json.loads(paths["report"].read_text(encoding="utf-8"))
    validate_report(report)
    assert report["mitosis"]["count_total"] is None and report["tam"]["density_per_mm2"] is None
    fc = json.loads(paths["annotations"].read_text(encoding="utf-8"))
    names = {f["properties"]["classification"]["name"] for f in fc["features"]}
    assert not any(n.startswith(("Mitosis", "Macrophage")) for n in names), names
    assert not any(k.startswith("overlay:tam_density") for k in paths)
    page = paths["report_html"].read_text(encoding="utf-8")
    reason = "not assessed — no tumour was found on this slide"
    assert "Not assessed — no tumour was found on this slide" in page  # the mitosis section
    assert page.count(reason) == 2  # necrosis share, TAM density
    assert "mitoses not assessed, no hotspot" in page
    cards = re.findall(r"<div class='v na'>not assessed</div><div class='k'>([^<]+)</div>", page)
    assert cards == [
        "Predominant pattern",
        "Necrosis, % of tumour bed",
        "Mitoses in 2 mm² hotspot",
        "Mitoses per 10 HPF (0.237 mm² per HPF)",
        "TAM density",
    ]
    # thumbnail and pattern map; no pattern mix, mitotic density, TAM map or detection gallery
    assert len(re.findall(r"src='data:image/png;base64,", page)) == 2
    assert "Total detected" not in page and "Detections to check" not in page
