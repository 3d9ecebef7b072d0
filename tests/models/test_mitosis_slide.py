"""Mitosis analysis on a small generated slide with known figures, shipped weights, CPU.

The pattern stage is supplied from the truth label map (``oracle_pattern_output``) so the test
measures the mitosis analysis itself; the pattern model has its own tests.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from models.analyses.hotspot import densest_circle
from models.analyses.mitosis import tumour_region
from models.analyses.settings_cells import MitosisSettings
from models.cells.evaluation import (
    mitosis_metrics,
    oracle_necrosis_output,
    oracle_pattern_output,
    run_cell_analyses,
)
from models.settings import EngineSettings, PipelineSettings
from wsi.synthetic.slide import generate_slide
from wsi.synthetic.spec import SynthSpec
from wsi.synthetic.truth import SlideTruth, load_truth

SEED = 15


def slide_dir(tmp_path_factory: pytest.TempPathFactory, stain: str) -> Path:
    """Generate (once per session) the 2048² test slide in ``stain``."""
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
    return folder


@pytest.fixture(scope="module")
def he_slide(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SlideTruth]:
    folder = slide_dir(tmp_path_factory, "he")
    return folder, load_truth(folder)


def _settings(**mitosis: object) -> PipelineSettings:
    return PipelineSettings(
        engine=EngineSettings(device="cpu", precision="fp32", num_workers=0, batch_size=16),
        mitosis=MitosisSettings(**mitosis),  # type: ignore[arg-type]
    )


@pytest.mark.slow
def test_mitoses_found_and_counted(he_slide: tuple[Path, SlideTruth]) -> None:
    folder, truth = he_slide
    assert len(truth.mitoses) >= 8  # the slide was generated with a high mitotic density
    pattern = oracle_pattern_output(truth.label_map, truth.label_l0_per_px, truth.mpp)
    # a small hotspot (0.05 mm², radius 126 µm) makes the geometry meaningful on a small slide
    s = _settings(hotspot_area_mm2=0.05)  # default min_score (chosen on validation slides)
    out = run_cell_analyses(
        folder / "slide.tiff",
        s,
        pattern,
        names=("mitosis",),
        necrosis=oracle_necrosis_output(truth.label_map, truth.label_l0_per_px),
    )["mitosis"]
    det = out.data["detections"]
    m = mitosis_metrics(det, truth.mitoses, truth.mitosis_classes, truth.mpp)
    # the held-out target (F1 ≥ 0.85) is measured on larger slides by scripts/evaluate_cells.py;
    # this 15-figure slide guards against regressions
    assert m["f1"] >= 0.6, m
    # a sharp slide loses no tile to the out-of-focus rule (models.analyses.focus)
    assert out.report["out_of_focus_excluded"]["tiles"] == 0, out.report["out_of_focus_excluded"]
    n_true = len(truth.mitoses)
    assert abs(out.report["count_total"] - n_true) <= max(3, 0.3 * n_true), (out.report, m)
    rep = out.report
    assert rep["count_atypical"] + rep["count_typical"] == rep["count_total"]
    assert rep["count_tripolar"] <= rep["count_atypical"]  # tripolar figures are atypical
    # the hotspot sits where the true figures are densest and holds about their count
    region = tumour_region(pattern.data["tumour_prob"])
    true_hot = densest_circle(truth.mitoses, area_mm2=0.05, mpp=truth.mpp, region=region)
    assert true_hot is not None
    # the count may exceed the truth by the false positives inside the circle (≈ 1 in 4 here)
    found = out.report["mitoses_per_2mm2_hotspot"]
    assert true_hot.count - max(1, 0.3 * true_hot.count) <= found, (found, true_hot)
    assert found <= true_hot.count + max(3, 0.5 * true_hot.count), (found, true_hot)
    got = out.report["hotspot_2mm2"]
    assert got["area_mm2"] == 0.05
    inside = np.hypot(*(truth.mitoses - np.array(got["l0_center"])).T) <= got["l0_radius"]
    assert inside.sum() >= true_hot.count - max(1, 0.3 * true_hot.count)
    # HPF arithmetic is reported with its area
    assert out.report["hpf_area_mm2"] == 0.237
    assert out.report["hpf_circle"]["area_mm2"] == pytest.approx(2.37)
    assert math.isclose(
        out.report["hpf_circle"]["l0_radius"], math.sqrt(2.37e6 / math.pi) / truth.mpp, rel_tol=1e-3
    )
    names = {p.name for p in out.points}
    assert names == {"Mitosis: Typical", "Mitosis: Atypical", "Mitosis: Tripolar"}
    assert {c.name for c in out.circles} == {
        "Mitosis hotspot 0.05 mm²",
        "Mitosis 10 HPF (2.37 mm²)",
    }


@pytest.mark.slow
def test_mitosis_scans_only_tumour_tiles(he_slide: tuple[Path, SlideTruth]) -> None:
    folder, truth = he_slide
    pattern = oracle_pattern_output(truth.label_map, truth.label_l0_per_px, truth.mpp)
    pattern.data["tumour_prob"].values[:] = 0.0  # no tumour anywhere
    out = run_cell_analyses(folder / "slide.tiff", _settings(), pattern, names=("mitosis",))
    rep = out["mitosis"].report
    assert rep["tiles_scanned"] == 0 and rep["count_total"] == 0
    assert rep["tiles_in_tissue"] > 0


@pytest.mark.slow
def test_ihc_slide_gives_a_warning_not_mitoses(tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = slide_dir(tmp_path_factory, "cd68")
    truth = load_truth(folder)
    pattern = oracle_pattern_output(truth.label_map, truth.label_l0_per_px, truth.mpp)
    out = run_cell_analyses(folder / "slide.tiff", _settings(), pattern, names=("mitosis",))
    rep = out["mitosis"].report
    assert rep["count_total"] is None
    assert "immunohistochemistry" in rep["warnings"][0]
    assert out["mitosis"].points == []


@pytest.mark.slow
def test_out_of_focus_part_is_left_out(he_slide: tuple[Path, SlideTruth], tmp_path: Path) -> None:
    """A copy of the test slide with its left strip blurred: no mitoses counted there."""
    from scipy import ndimage as ndi

    from tests.slide_helpers import write_pyramid
    from wsi.slide import open_slide

    folder, truth = he_slide
    with open_slide(folder / "slide.tiff") as slide:
        w, h = slide.dimensions
        rgb = slide.read_region((0, 0), 0, (w, h))[..., :3].copy()
    strip = 1000  # level-0 px (250 µm): still a minority of the tiles, the median stays sharp
    rgb[:, :strip] = ndi.gaussian_filter(rgb[:, :strip], sigma=(4, 4, 0))

    def color(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        r = np.clip(y.astype(int), 0, h - 1)
        c = np.clip(x.astype(int), 0, w - 1)
        return rgb[r, c]

    blurred = write_pyramid(tmp_path / "blurred.tiff", w, h, truth.mpp, color, tile=256)
    pattern = oracle_pattern_output(truth.label_map, truth.label_l0_per_px, truth.mpp)
    necrosis = oracle_necrosis_output(truth.label_map, truth.label_l0_per_px)
    runs = {
        rel: run_cell_analyses(
            blurred, _settings(min_relative_focus=rel), pattern, ("mitosis",), necrosis
        )["mitosis"]
        for rel in (0.0, 0.35)
    }
    off, on = runs[0.0], runs[0.35]
    excluded = on.report["out_of_focus_excluded"]
    assert off.report["out_of_focus_excluded"]["tiles"] == 0
    assert excluded["tiles"] >= 1 and excluded["tumour_mm2"] > 0, excluded
    assert excluded["detections_dropped"] >= 1, excluded
    # every tile called out of focus lies in the blurred strip, so nothing right of it is lost
    kept = on.data["detections"]
    right = off.data["detections"][off.data["detections"][:, 0] > strip + 512]
    assert len(kept) <= len(off.data["detections"])
    assert all(np.hypot(*(kept[:, :2] - p[:2]).T).min() < 1 for p in right)
    if on.report["per_mm2_viable_tumour"] is not None:
        assert on.report["viable_tumour_mm2"] < off.report["viable_tumour_mm2"]
