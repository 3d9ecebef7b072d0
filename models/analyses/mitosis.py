"""Mitosis analysis: detection in viable tumour, typical vs atypical (tripolar as its own subtype),
hotspot and per-10-HPF counts.

Only the tiles the pattern analysis calls viable tumour are scanned at 0.25 µm/px, so the costly
high-resolution pass covers no more than it must. Each tile goes through the registered detector
(haematoxylin-peak candidates + crop classifier, ``models.cells.mitosis_net``); detections become
level-0 points, duplicates from tile overlaps are suppressed, and the densest 2 mm² circle and
10-HPF-area circle are searched within tumour (``models.analyses.hotspot``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

import models.cells.zoo  # noqa: F401  (registers the cell models)
from models.accumulate import TileArrayAccumulator
from models.analyses import AnalysisContext, AnalysisOutput, register_analysis
from models.analyses.focus import out_of_focus
from models.analyses.hotspot import RegionMask, densest_circle, hpf_circle_area_mm2
from models.analyses.pattern import tumour_probability_in_boxes
from models.analyses.scope import counts_withheld, withhold
from models.analyses.settings_cells import MitosisSettings
from models.cells.candidates import cluster_points
from models.cells.mitosis_net import MitosisTileDetector
from models.cells.points import PointAccumulator
from models.cells.stain import stain_evidence
from models.engine import TileInputsFn
from wsi.results import Circle, PointSet, RasterMap
from wsi.taxonomy import MITOSIS_CLASSES, MITOSIS_DISPLAY
from wsi.tiling import TileGrid
from wsi.tissue import read_downsampled

#: Columns of the finalised detection array (class probabilities as the classifier gave them).
COLS = ("l0_x", "l0_y", "score", "p_typical", "p_atypical", "p_tripolar")
#: Report keys withheld (null) when the scope verdict withholds the counts (no tumour found).
COUNT_KEYS = (
    "count_total",
    "count_typical",
    "count_atypical",
    "count_tripolar",
    "percent_atypical",
    "percent_tripolar",
    "per_mm2_viable_tumour",
    "hotspot_2mm2",
    "mitoses_per_2mm2_hotspot",
    "hpf_circle",
    "mitoses_per_10hpf",
)
#: Width of one candidate row of the detector output: row, col, OD, then one P per class.
RAW_COLS = 3 + len(MITOSIS_CLASSES)


def decode_tile(min_score: float, tripolar_min_score: float = 1.01) -> Any:
    """Return a decoder of one tile's (K, 7) detector output to (n, 6) row, col, score, p, p, p.

    A candidate is kept when P(mitosis) = 1 − P(negative) ≥ ``min_score``, or when it looks
    tripolar (P(tripolar) above P(typical)) with P(tripolar) ≥ ``tripolar_min_score``.
    """

    def decode(raw: NDArray[np.float32]) -> NDArray[np.float32]:
        raw = np.asarray(raw).reshape(-1, RAW_COLS)
        p = raw[:, 4:]  # typical, atypical, tripolar
        p_mit = p.sum(axis=1)
        tripolar = (p[:, 2] >= tripolar_min_score) & (p[:, 2] > p[:, 0])
        keep = (raw[:, 2] >= 0) & ((p_mit >= min_score) | tripolar)
        return np.column_stack([raw[keep, 0], raw[keep, 1], p_mit[keep], p[keep]])

    return decode


def subtypes(det: NDArray[np.float64]) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """(atypical, tripolar) masks of finalised detections.

    A figure is atypical when the atypical classes together outweigh typical; an atypical figure
    is tripolar when tripolar outweighs the other atypical forms.
    """
    p_typ, p_atyp, p_tri = det[:, 3], det[:, 4], det[:, 5]
    atypical = (p_atyp + p_tri) > p_typ
    return atypical, atypical & (p_tri >= p_atyp)


def finalise_detections(det: NDArray[np.float64], nms_l0: float) -> NDArray[np.float64]:
    """Merge duplicates (tile overlaps, figures split into chromosome groups) within ``nms_l0``.

    Each merged figure sits at the score-weighted centre of its candidates, with the highest
    score and the score-weighted class probabilities.
    """
    det = np.asarray(det, dtype=np.float64).reshape(-1, len(COLS))
    return cluster_points(det, nms_l0)


def drop_in_necrosis(
    det: NDArray[np.float64], necrosis: AnalysisOutput | None
) -> tuple[NDArray[np.float64], int]:
    """Remove detections on the necrosis mask (karyorrhectic debris is not a mitosis).

    Returns the kept detections and how many were dropped (0 when necrosis did not run).
    """
    mask = necrosis_mask(necrosis)
    if mask is None or len(det) == 0:
        return det, 0
    inside = mask.contains(det[:, :2])
    return det[~inside], int(inside.sum())


def necrosis_mask(necrosis: AnalysisOutput | None) -> RegionMask | None:
    """The necrosis analysis's mask as a RegionMask (None when necrosis did not run)."""
    if necrosis is None or "mask" not in necrosis.data:
        return None
    return RegionMask(np.asarray(necrosis.data["mask"], dtype=bool), necrosis.data["l0_per_px"])


def tumour_region(tumour_prob: RasterMap, threshold: float = 0.5) -> RegionMask:
    """Return the viable-tumour mask (pattern tiles with tumour probability ≥ threshold)."""
    vals = np.nan_to_num(tumour_prob.values, nan=0.0)
    return RegionMask(vals >= threshold, tumour_prob.l0_per_px, tumour_prob.l0_origin)


def summarise_mitoses(
    det: NDArray[np.float64],
    *,
    mpp: float,
    region: RegionMask | None,
    viable_tumour_mm2: float | None,
    settings: MitosisSettings,
) -> tuple[dict[str, Any], list[PointSet], list[Circle]]:
    """Build the mitosis report section, the point sets and the hotspot circles.

    Args:
        det: (n, 6) finalised detections (``COLS``), level-0 px.
        mpp: level-0 µm/px.
        region: where hotspot centres may lie (viable tumour); None: anywhere.
        viable_tumour_mm2: viable tumour area for the density (None: not reported).
        settings: thresholds, hotspot and HPF areas.
    """
    atyp, tri = subtypes(det)
    n, n_atyp, n_tri = len(det), int(atyp.sum()), int(tri.sum())
    xy = det[:, :2]
    hot = densest_circle(
        xy,
        area_mm2=settings.hotspot_area_mm2,
        mpp=mpp,
        region=region,
        step_um=settings.hotspot_step_um,
    )
    hpf_area = hpf_circle_area_mm2(settings.hpf_area_mm2, settings.n_hpf)
    hpf = densest_circle(
        xy, area_mm2=hpf_area, mpp=mpp, region=region, step_um=settings.hotspot_step_um
    )

    def circ(h: Any) -> dict[str, Any] | None:
        if h is None:
            return None
        return {
            "l0_center": [round(h.l0_center[0], 1), round(h.l0_center[1], 1)],
            "l0_radius": round(h.l0_radius, 1),
            "area_mm2": round(h.area_mm2, 4),
            "count": h.count,
            "tumour_fraction": round(h.tumour_fraction, 3),
        }

    report: dict[str, Any] = {
        "count_total": n,
        "count_typical": n - n_atyp,
        "count_atypical": n_atyp,
        "count_tripolar": n_tri,
        "percent_atypical": round(100.0 * n_atyp / n, 2) if n else None,
        "percent_tripolar": round(100.0 * n_tri / n, 2) if n else None,
        "viable_tumour_mm2": viable_tumour_mm2,
        "per_mm2_viable_tumour": (round(n / viable_tumour_mm2, 3) if viable_tumour_mm2 else None),
        "hotspot_2mm2": circ(hot),
        "mitoses_per_2mm2_hotspot": hot.count if hot else 0,
        "hpf_area_mm2": settings.hpf_area_mm2,
        "n_hpf": settings.n_hpf,
        "hpf_circle": circ(hpf),
        "mitoses_per_10hpf": hpf.count if hpf else 0,
        "hpf_note": (
            f"per-{settings.n_hpf}-HPF count = densest circle of {settings.n_hpf} × "
            f"{settings.hpf_area_mm2} mm² = {hpf_area:.3f} mm² (HPF area from configuration)"
        ),
        "min_score": settings.min_score,
        "warnings": [],
    }
    dens = report["per_mm2_viable_tumour"]
    if dens is not None and dens > settings.implausible_per_mm2:
        report["warnings"].append(
            f"{dens:.0f} mitoses per mm² of viable tumour is implausibly high (more than "
            f"{settings.implausible_per_mm2:g}, mitosis.implausible_per_mm2); false positives are "
            "likely (the detector is trained on generated slides): check the detections visually"
        )
    other_atyp = atyp & ~tri
    points = [
        PointSet(MITOSIS_DISPLAY[cls], xy[m].copy(), det[m, 2].astype(np.float32))
        for cls, m in (
            ("mitosis_typical", ~atyp),
            ("mitosis_atypical", other_atyp),
            ("mitosis_tripolar", tri),
        )
    ]
    circles = []
    if hot is not None:
        circles.append(hot.to_circle(f"Mitosis hotspot {settings.hotspot_area_mm2:g} mm²"))
    if hpf is not None:
        circles.append(hpf.to_circle(f"Mitosis {settings.n_hpf} HPF ({hpf_area:.2f} mm²)"))
    return report, points, circles


@register_analysis
class MitosisAnalysis:
    """Mitotic figures (typical, atypical, tripolar) in viable tumour, hotspot and per-10-HPF
    counts."""

    name = "mitosis"
    requires: tuple[str, ...] = ("pattern",)
    after: tuple[str, ...] = ("necrosis", "scope")

    def run(self, ctx: AnalysisContext) -> AnalysisOutput:
        """Scan the tumour tiles at 0.25 µm/px and summarise the detections."""
        ms = ctx.settings.mitosis
        warning = ihc_warning(ctx) or resolution_refusal(ctx.slide.mpp, ms.max_slide_mpp)
        if warning is not None:
            return AnalysisOutput(self.name, report={"warnings": [warning], "count_total": None})
        spec, model = ctx.model(ms.model)
        detector = isinstance(model, MitosisTileDetector)
        if isinstance(model, MitosisTileDetector):
            model.configure(
                min_od=ms.candidate_min_od,
                sigma_um=ms.candidate_sigma_um,
                max_candidates=ms.max_candidates,
                stride=ms.candidate_stride,
                tta_floor=ms.tta_floor,
                margin_px=ms.overlap_px / 2,
            )
        grid = TileGrid.for_slide(
            ctx.slide,
            target_mpp=spec.input_mpp,
            tile_px=ms.tile_px,
            overlap_px=ms.overlap_px,
            mask=ctx.tissue,
            min_tissue=0.01,
        )
        pattern = ctx.results["pattern"]
        prob = tumour_probability_in_boxes(pattern, grid.l0_xy, grid.l0_tile)
        indices = np.flatnonzero(prob >= ms.min_tumour_prob).astype(np.int64)
        acc = PointAccumulator(
            "det",
            decode_tile(ms.min_score, ms.tripolar_min_score),
            len(COLS) - 2,
            l0_per_px=grid.l0_tile / grid.tile_px,
            tile_px=grid.tile_px,
            margin_px=ms.overlap_px / 2,
            grid=grid,
            scanned=indices,
        )
        judge_focus = ms.min_relative_focus > 0
        focus = TileArrayAccumulator(len(grid), "focus", ())
        stats = ctx.run_engine(
            model,
            spec,
            grid,
            [acc, focus] if judge_focus else [acc],
            tag=self.name,
            indices=indices,
            head=_head,
            tile_stats=judge_focus,
            # candidates in a margin a scanned neighbour owns are not classified (the
            # accumulator would drop them): about a third of the crops, same detections
            tile_inputs=_neighbour_inputs(acc) if detector else None,
        )
        mpp = ctx.slide.mpp
        det = finalise_detections(acc.finalize(), ms.nms_um / mpp)
        det, in_necrosis = drop_in_necrosis(det, ctx.results.get("necrosis"))
        viable = pattern.data.get("viable_tumour_mm2")
        viable_mm2 = float(viable) if viable is not None else None
        region = tumour_region(pattern.data["tumour_prob"])
        blur = out_of_focus(grid, indices, focus.finalize(), ms.min_relative_focus)
        blur_report: dict[str, Any] = {"tiles": 0, "tumour_mm2": 0.0}
        if blur is not None:
            blurred_mm2 = blur.tissue_mm2_in(region, ctx.tissue, mpp)
            dropped = blur.cores.contains(det[:, :2])
            det, region = det[~dropped], blur.region_without(region)
            if viable_mm2 is not None:
                viable_mm2 = max(viable_mm2 - blurred_mm2, 0.0)
            blur_report = {
                "tiles": blur.n_tiles,
                "tumour_mm2": round(blurred_mm2, 4),
                "detections_dropped": int(dropped.sum()),
                "focus_threshold": round(blur.threshold, 2),
                "median_focus": round(blur.median, 2),
            }
        # on a slide judged "no tumour found" there is no tumour to count figures in: dark benign
        # nuclei in the few tiles scanned would be reported as a mitotic count of nothing
        withheld = counts_withheld(dict(ctx.results))
        n_withheld = len(det) if withheld else 0
        det = det[n_withheld:]
        report, points, circles = summarise_mitoses(
            det, mpp=mpp, region=region, viable_tumour_mm2=viable_mm2, settings=ms
        )
        if withheld:
            withhold(report, COUNT_KEYS, withheld)
            points, circles = [], []  # no markers, no hotspot circle: nothing was counted
        if mpp > 1.2 * spec.input_mpp and not withheld:  # nothing counted: nothing to qualify
            report["warnings"].append(
                f"the slide's finest level is {mpp:.2f} µm/px: figures were judged on pixels "
                f"upsampled to {spec.input_mpp} µm/px (the model's resolution); counts at this "
                "resolution are not validated and tend to miss small figures"
            )
        if withheld:
            report["warnings"].append(
                f"no tumour found on this slide (scope): mitoses were not counted (the "
                f"{n_withheld} figure(s) detected in the tiles scanned were dropped)"
            )
        total = float(viable) if viable else 0.0
        if total and blur_report["tumour_mm2"] > 0.1 * total:
            report["warnings"].append(
                f"{blur_report['tumour_mm2']:.2f} mm² of the viable tumour "
                f"({100 * blur_report['tumour_mm2'] / total:.0f}%) is out of focus and was not "
                "counted (mitosis.min_relative_focus); consider rescanning"
            )
        report = {
            "model": spec.name,
            "mpp": spec.input_mpp,
            "tiles_scanned": len(indices),
            "tiles_in_tissue": len(grid),
            "dropped_in_necrosis": in_necrosis,
            "dropped_no_tumour": n_withheld,
            "out_of_focus_excluded": blur_report,
            **report,
        }
        return AnalysisOutput(
            name=self.name,
            report=report,
            points=points,
            circles=circles,
            models=[spec.provenance()],
            qc=ctx.engine_qc(stats),
            data={"detections": det, "columns": COLS},
        )


def resolution_refusal(slide_mpp: float, max_slide_mpp: float) -> str | None:
    """Return the reason no mitosis count is made on a slide this coarse, else None."""
    if slide_mpp <= max_slide_mpp * 1.02:  # 20× scans report 0.49–0.51 µm/px
        return None
    return (
        f"the slide's finest level is {slide_mpp:.2f} µm/px, coarser than the "
        f"{max_slide_mpp:g} µm/px a mitosis count needs (mitosis.max_slide_mpp): mitotic figures "
        "cannot be told from other dark nuclei at this resolution, so no mitosis numbers were "
        "computed"
    )


def ihc_warning(ctx: AnalysisContext) -> str | None:
    """Return a warning when the slide looks like DAB IHC (mitoses need H&E), else None."""
    low, _ = read_downsampled(ctx.slide, 4.0)
    ev = stain_evidence(low, ctx.settings.tam.dab_od_threshold)
    if not ev.looks_ihc(ctx.settings.tam.dab_slide_fraction_ihc):
        return None
    return (
        f"the slide looks like DAB immunohistochemistry (DAB-positive {100 * ev.dab_fraction:.1f}% "
        f"of tissue pixels, eosin {100 * ev.eosin_fraction:.1f}%); mitoses are counted on H&E, so "
        "no mitosis numbers were computed for this slide"
    )


def _head(out: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"det": out}


def _neighbour_inputs(acc: PointAccumulator) -> TileInputsFn:
    """Per-batch ``neighbours`` input of the detector: which neighbours the pass scans."""

    def inputs(index: NDArray[np.int64]) -> dict[str, torch.Tensor]:
        return {"neighbours": torch.from_numpy(acc.neighbours_scanned(index))}

    return inputs
