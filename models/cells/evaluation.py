"""Evaluation helpers shared by ``scripts/evaluate_cells.py`` and the tests.

``oracle_pattern_output`` builds the pattern analysis's output from a synthetic slide's truth
label map (exact viable-tumour tiles), so the cell analyses can be measured on their own, apart
from the pattern model's errors; the full pipeline is measured separately.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from models.analyses import AnalysisOutput
from models.cells.matching import match_points
from wsi.results import RasterMap
from wsi.synthetic.classes import PATTERN_CLASSES, TUMOUR_PATTERNS

if TYPE_CHECKING:
    from models.settings import PipelineSettings
    from wsi.synthetic.truth import SlideTruth

_TUMOUR_VALUES = [PATTERN_CLASSES.index(c) for c in TUMOUR_PATTERNS]


def oracle_pattern_output(
    label_map: NDArray[np.uint8], label_l0_per_px: float, mpp: float, tile_um: float = 224.0
) -> AnalysisOutput:
    """Return a ``pattern`` output whose tumour probability is the true viable-tumour fraction.

    Args:
        label_map: truth label map (PATTERN_CLASSES values).
        label_l0_per_px: level-0 pixels per label pixel.
        mpp: level-0 µm/px.
        tile_um: pattern tile edge in µm (the pattern model's 224 µm).
    """
    per_tile = max(1, round(tile_um / mpp / label_l0_per_px))
    rows = -(-label_map.shape[0] // per_tile)
    cols = -(-label_map.shape[1] // per_tile)
    pad = np.zeros((rows * per_tile, cols * per_tile), dtype=np.uint8)
    pad[: label_map.shape[0], : label_map.shape[1]] = label_map
    tum = np.isin(pad, _TUMOUR_VALUES).reshape(rows, per_tile, cols, per_tile).mean(axis=(1, 3))
    tumour_px = int(np.isin(label_map, _TUMOUR_VALUES).sum())
    viable_mm2 = tumour_px * (label_l0_per_px * mpp / 1000.0) ** 2
    rm = RasterMap(
        "tumour_probability", tum.astype(np.float32), per_tile * label_l0_per_px, "probability"
    )
    return AnalysisOutput(
        "pattern",
        report={"viable_tumour_mm2": round(viable_mm2, 4), "oracle": True},
        data={"tumour_prob": rm, "viable_tumour_mm2": viable_mm2},
    )


def oracle_necrosis_output(label_map: NDArray[np.uint8], label_l0_per_px: float) -> AnalysisOutput:
    """Return a ``necrosis`` output whose mask is the true necrosis label."""
    mask = label_map == PATTERN_CLASSES.index("necrosis")
    return AnalysisOutput(
        "necrosis",
        report={"oracle": True},
        data={"mask": mask, "l0_per_px": float(label_l0_per_px)},
    )


def mitosis_metrics(
    det: NDArray[np.float64],
    truth_xy: NDArray[np.float64],
    truth_classes: tuple[str, ...],
    mpp: float,
    radius_um: float = 7.5,
    ignore: SlideTruth | None = None,
) -> dict[str, Any]:
    """Detection F1 and tripolar precision/recall, one-to-one within ``radius_um`` (MIDOG).

    ``det`` is (n, 6): ``models.analyses.mitosis.COLS`` in level-0 px. With ``ignore`` (the
    slide's truth), truth figures and detections on artefact (background) label pixels are left
    out of the matching on both sides (``SlideTruth.on_artefact``).
    """
    if ignore is not None:
        det = det[~ignore.on_artefact(det[:, :2])]
        keep = ~ignore.on_artefact(truth_xy)
        truth_xy = np.asarray(truth_xy)[keep]
        truth_classes = tuple(c for c, k in zip(truth_classes, keep, strict=True) if k)
    r = radius_um / mpp
    m = match_points(det[:, :2], truth_xy, r)
    from models.analyses.mitosis import subtypes

    tri_pred = subtypes(det)[1]
    tri_true = np.array([c == "mitosis_tripolar" for c in truth_classes], dtype=bool)
    mt = match_points(det[tri_pred, :2], np.asarray(truth_xy)[tri_true], r)
    return {
        "n_true": len(truth_xy),
        "n_pred": len(det),
        "tp": m.tp,
        "fp": m.fp,
        "fn": m.fn,
        "precision": round(m.precision, 4),
        "recall": round(m.recall, 4),
        "f1": round(m.f1, 4),
        "tripolar_true": int(tri_true.sum()),
        "tripolar_pred": int(tri_pred.sum()),
        "tripolar_tp": mt.tp,
        "tripolar_precision": round(mt.precision, 4),
        "tripolar_recall": round(mt.recall, 4),
    }


def relative_error(pred: float, true: float) -> float:
    """Return |pred − true| / true (inf when true is 0 and pred is not)."""
    if true == 0:
        return 0.0 if pred == 0 else float("inf")
    return abs(pred - true) / true


def run_cell_analyses(
    slide_path: Path,
    settings: PipelineSettings,
    pattern: AnalysisOutput,
    names: tuple[str, ...] = ("mitosis", "tam"),
    necrosis: AnalysisOutput | None = None,
) -> dict[str, AnalysisOutput]:
    """Run the named cell analyses on a slide with given ``pattern`` (and ``necrosis``) outputs.

    Uses the same context, engine and plugins as ``models.analysis.analyze_slide``; only the
    prerequisite stages are supplied (e.g. from the truth) instead of computed.
    """
    from models.analyses import AnalysisContext, get_analysis
    from models.device import resolve_device
    from models.engine import Engine
    from wsi.slide import open_slide
    from wsi.tissue import compute_tissue_mask

    device = resolve_device(settings.engine.device, settings.engine.precision)
    with open_slide(slide_path, settings=settings.slide) as slide:
        ctx = AnalysisContext(
            slide_path=Path(slide_path),
            slide=slide,
            tissue=compute_tissue_mask(slide, settings.tissue),
            settings=settings,
            device=device,
            engine=Engine(device, settings.engine),
        )
        ctx.results["pattern"] = pattern
        if necrosis is not None:
            ctx.results["necrosis"] = necrosis
        for name in names:
            ctx.results[name] = get_analysis(name).run(ctx)
    return {n: ctx.results[n] for n in names}
