"""The ATC pattern analysis: per-tile class probabilities, pattern areas, predominant pattern, mix.

Areas use the hard (argmax) class of each tile times the tissue it holds, so a tile half on glass
counts half. Later analyses read ``output.data["tumour_prob"]`` (a raster of viable-tumour
probability per pattern tile) through :func:`tumour_probability_in_boxes`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from models.accumulate import TileArrayAccumulator
from models.analyses import AnalysisContext, AnalysisOutput, register_analysis
from wsi.results import RasterMap, TileTable
from wsi.synthetic.classes import PATTERN_DISPLAY, TUMOUR_PATTERNS
from wsi.tiling import TileGrid


def summarise_patterns(
    probs: NDArray[np.float32],
    tissue_mm2: NDArray[np.float64],
    classes: tuple[str, ...],
    mixed_threshold: float,
) -> dict[str, Any]:
    """Turn per-tile probabilities into the report's pattern section.

    Args:
        probs: (N, C) class probabilities; rows with NaN (unreadable tiles) are ignored.
        tissue_mm2: (N,) tissue area of each tile in mm².
        classes: class names of the C channels.
        mixed_threshold: a secondary tumour pattern above this share of viable tumour makes the
            slide "mixed".
    """
    valid = np.isfinite(probs).all(axis=1)
    label = np.where(valid, np.argmax(np.nan_to_num(probs, nan=-1.0), axis=1), -1)
    tissue_total = float(tissue_mm2[valid].sum())
    areas = {c: float(tissue_mm2[label == k].sum()) for k, c in enumerate(classes)}
    tumour = sum(areas[c] for c in TUMOUR_PATTERNS if c in areas)
    tissue_classes = {
        c: {
            "display": PATTERN_DISPLAY.get(c, c),
            "tiles": int((label == k).sum()),
            "area_mm2": round(areas[c], 4),
            "percent_of_tissue": round(100 * areas[c] / tissue_total, 2) if tissue_total else 0.0,
        }
        for k, c in enumerate(classes)
    }
    per_class = {
        c: {
            "display": PATTERN_DISPLAY.get(c, c),
            "area_mm2": round(areas[c], 4),
            "percent_of_tumour": round(100 * areas[c] / tumour, 2) if tumour else 0.0,
        }
        for c in TUMOUR_PATTERNS
        if c in areas
    }
    ranked = sorted(per_class, key=lambda c: -areas[c])
    predominant = ranked[0] if ranked and areas[ranked[0]] > 0 else None
    secondary = [c for c in ranked[1:] if tumour and areas[c] / tumour > mixed_threshold]
    return {
        "per_class": per_class,
        "tissue_classes": tissue_classes,
        "classified_tissue_mm2": round(tissue_total, 4),
        "viable_tumour_mm2": round(tumour, 4),
        "predominant": predominant,
        "predominant_display": PATTERN_DISPLAY[predominant] if predominant else None,
        "mixed": bool(secondary),
        "secondary_patterns": secondary,
        "mixed_threshold": mixed_threshold,
    }


def tumour_probability_in_boxes(
    output: AnalysisOutput, l0_xy: NDArray[np.int64], l0_size: float
) -> NDArray[np.float32]:
    """Highest viable-tumour probability of the pattern tiles each box overlaps.

    Args:
        output: the pattern analysis output.
        l0_xy: (K, 2) level-0 top-left corners of the boxes.
        l0_size: box edge in level-0 pixels.

    Returns:
        (K,) probabilities; 0 where no pattern tile was classified.
    """
    rm: RasterMap = output.data["tumour_prob"]
    vals = np.nan_to_num(rm.values, nan=0.0)
    rows, cols = vals.shape
    xy = np.asarray(l0_xy, dtype=np.float64).reshape(-1, 2)
    c0 = np.clip(np.floor(xy[:, 0] / rm.l0_per_px), 0, cols - 1).astype(int)
    r0 = np.clip(np.floor(xy[:, 1] / rm.l0_per_px), 0, rows - 1).astype(int)
    c1 = np.clip(np.ceil((xy[:, 0] + l0_size) / rm.l0_per_px), 1, cols).astype(int)
    r1 = np.clip(np.ceil((xy[:, 1] + l0_size) / rm.l0_per_px), 1, rows).astype(int)
    out = np.zeros(len(xy), dtype=np.float32)
    for k in range(len(xy)):
        out[k] = vals[r0[k] : max(r1[k], r0[k] + 1), c0[k] : max(c1[k], c0[k] + 1)].max()
    return out


def _maps(grid: TileGrid, probs: NDArray[np.float32], classes: tuple[str, ...]) -> list[RasterMap]:
    out = []
    for k, c in enumerate(classes):
        if c == "background":
            continue
        out.append(
            RasterMap(f"pattern_{c}", grid.as_raster(probs[:, k]), grid.l0_stride, "probability")
        )
    return out


def _blur_qc(
    focus: NDArray[np.float32],
    probs: NDArray[np.float32],
    classes: tuple[str, ...],
    threshold: float,
) -> dict[str, float]:
    """Share of tissue tiles (not background) whose Laplacian variance is below ``threshold``."""
    valid = np.isfinite(probs).all(axis=1) & np.isfinite(focus)
    if "background" in classes:
        valid &= np.argmax(np.nan_to_num(probs, nan=0.0), axis=1) != classes.index("background")
    n = int(valid.sum())
    blurred = int((focus[valid] < threshold).sum()) if n else 0
    return {"blur_fraction": round(blurred / n, 4) if n else 0.0, "blur_focus_threshold": threshold}


@register_analysis
class PatternAnalysis:
    """Tile classification into the six tissue classes of ``wsi.synthetic.classes``."""

    name = "pattern"
    requires: tuple[str, ...] = ()
    after: tuple[str, ...] = ()

    def run(self, ctx: AnalysisContext) -> AnalysisOutput:
        """Classify every tissue tile and summarise the patterns."""
        ps = ctx.settings.pattern
        spec, model = ctx.model(ps.model)
        grid = TileGrid.for_slide(
            ctx.slide,
            target_mpp=spec.input_mpp,
            tile_px=spec.tile_px,
            mask=ctx.tissue,
            min_tissue=ps.min_tissue,
        )
        acc = TileArrayAccumulator(len(grid), "probs", (len(spec.classes),))
        focus = TileArrayAccumulator(len(grid), "focus", ())
        stats = ctx.run_engine(model, spec, grid, [acc, focus], tag=self.name, tile_stats=True)
        probs = acc.finalize()
        sharp = focus.finalize()
        tissue_mm2 = grid.tissue_fraction.astype(np.float64) * grid.tile_area_mm2
        report = {
            "model": spec.name,
            "mpp": spec.input_mpp,
            "tile_px": spec.tile_px,
            "tile_um": spec.tile_px * spec.input_mpp,
            **summarise_patterns(probs, tissue_mm2, spec.classes, ps.mixed_threshold),
        }
        tumour_idx = [spec.classes.index(c) for c in TUMOUR_PATTERNS if c in spec.classes]
        tumour = probs[:, tumour_idx].sum(axis=1)
        valid = np.isfinite(probs).all(axis=1)
        return AnalysisOutput(
            name=self.name,
            report=report,
            maps=_maps(grid, probs, spec.classes),
            tiles=TileTable(
                l0_xy=np.asarray(grid.l0_xy[valid]),
                l0_size=grid.l0_tile,
                class_names=spec.classes,
                probs=np.ascontiguousarray(probs[valid]),
            ),
            models=[spec.provenance()],
            qc={**ctx.engine_qc(stats), **_blur_qc(sharp, probs, spec.classes, ps.blur_focus)},
            data={
                "grid": grid,
                "probs": probs,
                "tumour_prob": RasterMap(
                    "tumour_probability", grid.as_raster(tumour), grid.l0_stride, "probability"
                ),
                "viable_tumour_mm2": report["viable_tumour_mm2"],
            },
        )
