"""TAM analysis on small generated slides: H&E route, CD68 IHC route, mis-configured route."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.analyses.settings_cells import TamSettings
from models.cells.evaluation import oracle_pattern_output, relative_error, run_cell_analyses
from models.settings import EngineSettings, PipelineSettings
from wsi.synthetic.classes import PATTERN_CLASSES, TUMOUR_PATTERNS
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


def _true_tumour_density(truth: SlideTruth) -> tuple[float, float]:
    """Return (macrophages per mm² of viable tumour, macrophages per mm² of tissue)."""
    import numpy as np

    lab, f = truth.label_map, truth.label_l0_per_px
    tum = [PATTERN_CLASSES.index(c) for c in TUMOUR_PATTERNS]
    r = np.clip((truth.macrophages[:, 1] // f).astype(int), 0, lab.shape[0] - 1)
    c = np.clip((truth.macrophages[:, 0] // f).astype(int), 0, lab.shape[1] - 1)
    px_mm2 = (f * truth.mpp / 1000) ** 2
    viable = np.isin(lab, tum).sum() * px_mm2
    tissue = (lab != 0).sum() * px_mm2
    return float(np.isin(lab[r, c], tum).sum() / viable), float(len(truth.macrophages) / tissue)


@pytest.mark.slow
def test_ihc_route_on_cd68_slide(tmp_path_factory: pytest.TempPathFactory) -> None:
    folder, truth = _slide(tmp_path_factory, "cd68")
    res = _run(folder, truth)  # route auto: must pick IHC from the DAB on the slide
    rep = res["report"]
    assert isinstance(rep, dict)
    assert rep["route"] == "ihc" and rep["stain"] == "cd68" and not rep["warnings"]
    true_tumour, _ = _true_tumour_density(truth)
    assert relative_error(rep["density_per_mm2"], true_tumour) <= 0.3, (rep, true_tumour)
    assert 0.0 < rep["dab_positive_area_fraction"] < 0.6
    out = res["out"]
    assert [m.name for m in out.maps] == ["tam_density"]  # type: ignore[attr-defined]
    assert out.maps[0].unit == "cells/mm²"  # type: ignore[attr-defined]


@pytest.mark.slow
def test_he_route_density_and_fraction(tmp_path_factory: pytest.TempPathFactory) -> None:
    folder, truth = _slide(tmp_path_factory, "he")
    rep = _run(folder, truth)["report"]
    assert isinstance(rep, dict)
    assert rep["route"] == "he" and not rep["warnings"]
    true_tumour, _ = _true_tumour_density(truth)
    assert relative_error(rep["density_per_mm2"], true_tumour) <= 0.3, (rep, true_tumour)
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
