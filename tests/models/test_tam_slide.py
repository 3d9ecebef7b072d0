"""TAM analysis on small generated slides: H&E route, CD68 IHC route, mis-configured route."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.analyses.settings_cells import TamSettings
from models.cells.evaluation import oracle_pattern_output, relative_error, run_cell_analyses
from models.settings import EngineSettings, PipelineSettings
from wsi.synthetic.slide import generate_slide
from wsi.synthetic.spec import SynthSpec
from wsi.synthetic.truth import SlideTruth, load_truth

SEED = 15


def _slide(tmp_path_factory: pytest.TempPathFactory, stain: str) -> tuple[Path, SlideTruth]:
    folder = tmp_path_factory.getbasetemp() / f"cells-slide-{SEED}-{stain}"
    if not (folder / "truth.json").is_file():
        spec = SynthSpec(
            seed=SEED,
            width=2048,
            height=2048,
            stain=stain,
            mitoses_per_2mm2=200,
            tam_fraction=0.4,
            artefacts=False,
            workers=1,
        )
        generate_slide(spec, folder)
    return folder, load_truth(folder)


def _run(folder: Path, truth: SlideTruth, **tam: object) -> dict[str, object]:
    s = PipelineSettings(
        engine=EngineSettings(device="cpu", precision="fp32", num_workers=0, batch_size=16),
        tam=TamSettings(**tam),  # type: ignore[arg-type]
    )
    pattern = oracle_pattern_output(truth.label_map, truth.label_l0_per_px, truth.mpp)
    out = run_cell_analyses(folder / "slide.tiff", s, pattern, names=("tam",))["tam"]
    return {"report": out.report, "out": out}


def _true_region_density(truth: SlideTruth, report: dict[str, object]) -> float:
    """Return true macrophages per mm² over the analysis's own tumour region.

    The TAM analysis counts cells inside the tumour region (pattern tiles, here the oracle's
    224 µm tiles holding ≥ 50% tumour) and divides by the tissue area of that region; on a slide
    of a few tiles this region differs from the exact tumour, so the detector is judged against
    the true cells of the same region.
    """
    from models.analyses.mitosis import tumour_region

    pattern = oracle_pattern_output(truth.label_map, truth.label_l0_per_px, truth.mpp)
    region = tumour_region(pattern.data["tumour_prob"])
    area = report["tumour_region_tissue_mm2"]
    assert isinstance(area, float) and area > 0
    return float(region.contains(truth.macrophages).sum()) / area


@pytest.mark.slow
@pytest.mark.parametrize("cells", ["net", "dab_peaks"])
def test_ihc_route_on_cd68_slide(tmp_path_factory: pytest.TempPathFactory, cells: str) -> None:
    folder, truth = _slide(tmp_path_factory, "cd68")
    res = _run(folder, truth, ihc_cells=cells)  # route auto: must pick IHC from the DAB
    rep = res["report"]
    assert isinstance(rep, dict)
    assert rep["route"] == "ihc" and rep["stain"] == "cd68" and not rep["warnings"]
    assert rep["ihc_cells"] == cells
    true_region = _true_region_density(truth, rep)
    assert relative_error(rep["density_per_mm2"], true_region) <= 0.3, (rep, true_region)
    assert 0.0 < rep["dab_positive_area_fraction"] < 0.6
    if cells == "net":  # the network also finds the counterstained nuclei
        assert 0.0 < rep["tam_fraction"] < 1.0
    else:
        assert rep["tam_fraction"] is None
    out = res["out"]
    assert [m.name for m in out.maps] == ["tam_density"]  # type: ignore[attr-defined]
    assert out.maps[0].unit == "cells/mm²"  # type: ignore[attr-defined]


@pytest.mark.slow
def test_he_route_density_and_fraction(tmp_path_factory: pytest.TempPathFactory) -> None:
    folder, truth = _slide(tmp_path_factory, "he")
    rep = _run(folder, truth)["report"]
    assert isinstance(rep, dict)
    assert rep["route"] == "he" and not rep["warnings"]
    true_region = _true_region_density(truth, rep)
    assert relative_error(rep["density_per_mm2"], true_region) <= 0.3, (rep, true_region)
    assert 0.0 < rep["tam_fraction"] < 1.0


@pytest.mark.slow
def test_he_slide_configured_as_ihc_warns(tmp_path_factory: pytest.TempPathFactory) -> None:
    folder, truth = _slide(tmp_path_factory, "he")
    res = _run(folder, truth, route="ihc", stain="cd163")
    rep = res["report"]
    assert isinstance(rep, dict)
    assert rep["route"] is None
    assert len(rep["warnings"]) == 1 and "no DAB" in rep["warnings"][0]
    assert "density_per_mm2" not in rep  # no numbers that would be nonsense
    assert res["out"].points == []  # type: ignore[attr-defined]
