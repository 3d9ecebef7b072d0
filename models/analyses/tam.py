"""Tumour-associated macrophages: density and fraction on H&E, DAB-positive cells on CD68/CD163.

Route: ``tam.route`` = ``he`` (macrophage detector), ``ihc`` (colour deconvolution + DAB-positive
cells) or ``auto`` (chosen from the slide's own second stain besides haematoxylin, DAB or eosin,
estimated in a low-resolution read of the slide; see ``models.cells.stain.stain_evidence``).
A route that contradicts the stain (an H&E slide configured as IHC, or the reverse) is not run:
the report carries a warning instead of numbers that would be nonsense.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

import models.cells.zoo  # noqa: F401  (registers the cell models)
from models.analyses import AnalysisContext, AnalysisOutput, register_analysis
from models.analyses.hotspot import RegionMask, region_tissue_mm2
from models.analyses.mitosis import necrosis_mask, tumour_region
from models.analyses.pattern import tumour_probability_in_boxes
from models.analyses.scope import counts_withheld, withhold
from models.analyses.settings_cells import TamSettings
from models.cells.candidates import nms_points
from models.cells.dab import DabAccumulator, DabDeconvolution
from models.cells.heat_net import IhcMacrophageDetector, MacrophageDetector
from models.cells.points import PointAccumulator
from models.cells.stain import (
    HDAB,
    StainEvidence,
    StainMatrix,
    estimate_two_stains,
    od_from_rgb,
)
from models.cells.stain import stain_evidence as _evidence
from models.registry import ModelSpec
from wsi.results import PointSet, RasterMap
from wsi.tiling import TileGrid
from wsi.tissue import read_downsampled

_EVIDENCE_MPP = 4.0
#: Largest cosine between the estimated haematoxylin and DAB vectors accepted (reference: 0.80).
_MAX_H_DAB_COSINE = 0.85
#: H&E report keys withheld (null) when the scope verdict withholds the counts (no tumour found).
COUNT_KEYS = ("macrophages", "nucleated_cells", "density_per_mm2", "tam_fraction")
_AREA_BASIS = (
    "tissue inside the viable tumour region (pattern tiles with viable-tumour probability >= 0.5, "
    "minus the necrosis mask), the same region the cells are counted in"
)


class ViableRegion:
    """The tumour region minus the necrosis mask: where TAMs are counted and their area taken.

    Pattern tiles are 224 µm; those at the edge of a tumour bed also hold necrosis (on the
    validation slides 12–21% of the region's tissue), which no macrophage count of viable tumour
    should include in its area. The necrosis mask (4 µm/px) takes it out.
    """

    def __init__(self, region: RegionMask, necrosis: RegionMask | None) -> None:
        self.region = region
        self.necrosis = necrosis

    def contains(self, l0_xy: NDArray[np.float64]) -> NDArray[np.bool_]:
        """Whether each level-0 (x, y) is in the tumour region and not on necrosis."""
        inside = self.region.contains(l0_xy)
        if self.necrosis is not None:
            inside &= ~self.necrosis.contains(l0_xy)
        return inside


def viable_region(ctx: AnalysisContext) -> ViableRegion:
    """The TAM counting region of this slide (the necrosis mask is used when necrosis ran)."""
    region = tumour_region(ctx.results["pattern"].data["tumour_prob"])
    return ViableRegion(region, necrosis_mask(ctx.results.get("necrosis")))


def choose_route(s: TamSettings, ev: StainEvidence) -> tuple[str | None, str | None]:
    """Return (route to run or None, warning or None) from the settings and the stain evidence."""
    ihc_like = ev.looks_ihc(s.dab_slide_fraction_ihc)
    facts = f"DAB-positive {100 * ev.dab_fraction:.2f}% and eosin {100 * ev.eosin_fraction:.2f}% "
    facts += "of tissue pixels"
    if s.route == "auto":
        return ("ihc" if ihc_like else "he"), None
    if s.route == "ihc" and not ihc_like:
        return None, (
            f"TAM route is set to IHC ({s.stain.upper()}) but the slide shows no DAB staining "
            f"({facts}); it looks like H&E. TAM numbers were not computed: set tam.route to "
            "'he' or 'auto', or analyse the IHC slide."
        )
    if s.route == "he" and ihc_like:
        return None, (
            f"TAM route is set to H&E but the slide looks like DAB immunohistochemistry ({facts}). "
            "TAM numbers were not computed: set tam.route to 'ihc' or 'auto'."
        )
    return s.route, None


def density_map(
    l0_xy: NDArray[np.float64], dims: tuple[int, int], mpp: float, cell_um: float, name: str
) -> RasterMap:
    """Return points per mm² on a grid of ``cell_um`` cells covering the slide."""
    l0_cell = cell_um / mpp
    cols, rows = (int(np.ceil(d / l0_cell)) for d in dims)
    counts = np.zeros((rows, cols), dtype=np.float32)
    if len(l0_xy):
        c = np.clip((l0_xy[:, 0] // l0_cell).astype(int), 0, cols - 1)
        r = np.clip((l0_xy[:, 1] // l0_cell).astype(int), 0, rows - 1)
        np.add.at(counts, (r, c), 1.0)
    dens = counts / (cell_um / 1000.0) ** 2
    vmax = float(np.percentile(dens[dens > 0], 99)) if (dens > 0).any() else 1.0
    return RasterMap(name, dens, l0_cell, "density", "cells/mm²", vmax)


def _grid(ctx: AnalysisContext, mpp: float, s: TamSettings, overlap: int) -> TileGrid:
    return TileGrid.for_slide(
        ctx.slide,
        target_mpp=mpp,
        tile_px=s.tile_px,
        overlap_px=overlap,
        mask=ctx.tissue,
        min_tissue=0.01,
    )


def _run_he(
    ctx: AnalysisContext, s: TamSettings
) -> tuple[dict[str, Any], list[NDArray[Any]], dict[str, Any], Any]:
    spec, model = ctx.model(s.model)
    if isinstance(model, MacrophageDetector):
        model.thresholds = (s.peak_threshold, s.nucleus_peak_threshold)
        model.min_distance_px = max(1, round(s.peak_min_distance_um / spec.input_mpp))
    grid = _grid(ctx, spec.input_mpp, s, spec.overlap_px)
    prob = tumour_probability_in_boxes(ctx.results["pattern"], grid.l0_xy, grid.l0_tile)
    idx = np.flatnonzero(prob >= s.min_tumour_prob).astype(np.int64)
    accs = [_point_acc(grid, spec.overlap_px, c, idx) for c in (0, 1)]
    stats = ctx.run_engine(model, spec, grid, list(accs), tag="tam", indices=idx, head=_peaks)
    mac, cells = (a.finalize() for a in accs)
    return {"model": spec.name, "mpp": spec.input_mpp}, [mac, cells], spec.provenance(), stats


def _run_ihc(
    ctx: AnalysisContext, s: TamSettings, low: NDArray[np.uint8]
) -> tuple[dict[str, Any], list[NDArray[Any]], dict[str, Any], Any]:
    od = od_from_rgb(low).reshape(-1, 3)
    # At 4 µm/px DAB-stained cytoplasm is mixed with nuclei: an estimate that makes DAB more
    # haematoxylin-like than the reference reads nuclei as DAB (counts +180% on a validation
    # slide), so such an estimate falls back to the reference vectors.
    matrix = (
        estimate_two_stains(od, HDAB, max_cosine=_MAX_H_DAB_COSINE)
        if s.estimate_stain_vectors
        else HDAB
    )
    if s.ihc_cells == "net":
        acc, grid, extra, prov, stats = _ihc_net(ctx, s, matrix)
    else:
        acc, grid, extra, prov, stats = _ihc_dab_peaks(ctx, s, matrix)
    pos_px, tissue_px = acc.pixel_totals()
    mpp = grid.target_mpp
    info = {
        "stain_vectors": {
            "haematoxylin": np.round(matrix.vectors[0], 3).tolist(),
            "dab": np.round(matrix.vectors[1], 3).tolist(),
            "estimated": matrix is not HDAB,
        },
        "ihc_cells": s.ihc_cells,
        "dab_positive_area_fraction": round(pos_px / tissue_px, 4) if tissue_px else None,
        "tissue_analysed_mm2": round(tissue_px * (mpp / 1000) ** 2, 4),
        "mpp": mpp,
    }
    return info, extra, prov, stats


def _ihc_net(
    ctx: AnalysisContext, s: TamSettings, matrix: StainMatrix
) -> tuple[DabAccumulator, TileGrid, list[NDArray[Any]], dict[str, Any], Any]:
    """DAB-positive cells from ``atc-tam-ihc-v1`` (unmixed with ``matrix``) + DAB-positive area."""
    spec, model = ctx.model(s.ihc_model)
    if not isinstance(model, IhcMacrophageDetector):
        raise TypeError(f"tam.ihc_model {s.ihc_model!r} is not an IHC macrophage detector")
    model.set_stains(matrix)
    model.with_dab = True
    model.thresholds = (s.ihc_peak_threshold, s.nucleus_peak_threshold)
    model.min_distance_px = max(1, round(s.peak_min_distance_um / spec.input_mpp))
    grid = _grid(ctx, spec.input_mpp, s, spec.overlap_px)
    points = [_point_acc(grid, spec.overlap_px, c) for c in (0, 1)]
    dab = _dab_acc(grid, s, spec.overlap_px, find_cells=False)
    stats = ctx.run_engine(
        model,
        spec,
        grid,
        [*points, dab],
        tag="tam-ihc",
        head=lambda o: {"peaks": o[0], "dab": o[1]},
    )
    return dab, grid, [points[0].finalize(), points[1].finalize()], spec.provenance(), stats


def _ihc_dab_peaks(
    ctx: AnalysisContext, s: TamSettings, matrix: StainMatrix
) -> tuple[DabAccumulator, TileGrid, list[NDArray[Any]], dict[str, Any], Any]:
    """Classical cells: distance-transform peaks of DAB-positive objects (no learned model)."""
    mean, std, overlap = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), 16
    digest = hashlib.sha256(np.round(matrix.vectors, 4).tobytes()).hexdigest()
    spec = ModelSpec(
        name="dab-deconvolution",
        arch=lambda: DabDeconvolution(matrix, 1, mean, std),
        arch_name="colour deconvolution (H, DAB)",
        task="segment",
        input_mpp=s.ihc_mpp,
        tile_px=s.tile_px,
        classes=("dab", "od_sum"),
        mean=mean,
        std=std,
        weights_file="",
        sha256=digest,
        version="1.0.0",
    )
    grid = _grid(ctx, s.ihc_mpp, s, overlap)
    acc = _dab_acc(grid, s, overlap, find_cells=True)
    stats = ctx.run_engine(spec.arch(), spec, grid, [acc], tag="tam-ihc", head=lambda o: {"dab": o})
    return acc, grid, [acc.finalize()], spec.provenance(), stats


def _dab_acc(grid: TileGrid, s: TamSettings, overlap: int, *, find_cells: bool) -> DabAccumulator:
    return DabAccumulator(
        mpp=grid.target_mpp,
        threshold=s.dab_od_threshold,
        min_cell_um2=s.dab_min_cell_um2,
        l0_per_px=grid.l0_tile / grid.tile_px,
        tile_px=grid.tile_px,
        margin_px=overlap / 2,
        find_cells=find_cells,
    )


def _point_acc(
    grid: TileGrid, overlap: int, channel: int, scanned: NDArray[np.int64] | None = None
) -> PointAccumulator:
    return PointAccumulator(
        "peaks",
        _channel(channel),
        1,
        l0_per_px=grid.l0_tile / grid.tile_px,
        tile_px=grid.tile_px,
        margin_px=overlap / 2,
        grid=grid,
        scanned=scanned,
    )


def _channel(c: int) -> Any:
    def decode(raw: NDArray[np.float32]) -> NDArray[np.float32]:
        p = raw[c]
        return np.asarray(p[p[:, 2] >= 0][:, :3], dtype=np.float32)

    return decode


def _peaks(out: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"peaks": out}


def _dedup(pts: NDArray[np.float64], radius_l0: float) -> NDArray[np.float64]:
    pts = np.asarray(pts, dtype=np.float64)
    if pts.shape[1] < 3:
        pts = np.column_stack([pts, np.ones(len(pts))])
    return pts[nms_points(pts[:, :2], pts[:, 2].astype(np.float32), radius_l0)]


def _per_mm2(n: int, area: float | None) -> float | None:
    return round(n / area, 2) if area else None


@register_analysis
class TamAnalysis:
    """Macrophage density (and fraction on H&E) over tumour, with a density map."""

    name = "tam"
    requires: tuple[str, ...] = ("pattern",)
    after: tuple[str, ...] = ("necrosis", "mitosis", "scope")

    def run(self, ctx: AnalysisContext) -> AnalysisOutput:
        """Pick the route from settings and stain, detect cells, report densities."""
        s = ctx.settings.tam
        low, _ = read_downsampled(ctx.slide, _EVIDENCE_MPP)
        ev = _evidence(low, s.dab_od_threshold)
        route, warning = choose_route(s, ev)
        report: dict[str, Any] = {
            "route_setting": s.route,
            "route": route,
            "stain": (s.stain if route == "ihc" else "he") if route else None,
            "stain_evidence": {
                "dab_fraction": round(ev.dab_fraction, 4),
                "eosin_fraction": round(ev.eosin_fraction, 4),
                "second_stain": ev.counterpart,
                "second_stain_vector": [round(v, 3) for v in ev.counterpart_vector]
                if ev.counterpart_vector
                else None,
                "blue_green_ratio": round(ev.blue_green_ratio, 3)
                if ev.blue_green_ratio is not None
                else None,
                "mpp": _EVIDENCE_MPP,
            },
            "warnings": [warning] if warning else [],
        }
        if route is None:
            return AnalysisOutput(self.name, report=report)
        pattern = ctx.results["pattern"]
        region = viable_region(ctx)
        viable = pattern.data.get("viable_tumour_mm2")
        viable = float(viable) if viable else None
        mpp = ctx.slide.mpp
        region_mm2 = region_tissue_mm2(region, ctx.tissue, mpp) or None
        radius = s.peak_min_distance_um / mpp
        withheld = counts_withheld(dict(ctx.results), ihc=route == "ihc")
        if route == "he":
            info, (mac, cells), prov, stats = _run_he(ctx, s)
            mac = _dedup(mac, radius)
            cells = _dedup(cells, radius)
            mac = mac[region.contains(mac[:, :2])]
            n_cells = int(region.contains(cells[:, :2]).sum())
            if withheld:
                # no tumour found on this H&E slide: no tumour-associated macrophages to count
                report["warnings"].append(
                    f"no tumour found on this slide (scope): macrophages were not counted (the "
                    f"{len(mac)} detected in the tumour-probability region were dropped)"
                )
                mac = mac[:0]
            report |= info | {
                "macrophages": len(mac),
                "nucleated_cells": n_cells,
                "density_per_mm2": _per_mm2(len(mac), region_mm2),
                "tam_fraction": round(len(mac) / max(n_cells, len(mac)), 4) if len(mac) else 0.0,
                "area_basis": _AREA_BASIS,
            }
        else:
            info, found, prov, stats = _run_ihc(ctx, s, low)
            mac = _dedup(found[0], radius)
            in_t = mac[region.contains(mac[:, :2])]
            tissue = info["tissue_analysed_mm2"]
            fraction = None
            if len(found) > 1:  # the network also finds every nucleated (counterstained) cell
                cells = _dedup(found[1], radius)
                n_cells = max(int(region.contains(cells[:, :2]).sum()), len(in_t))
                fraction = round(len(in_t) / n_cells, 4) if n_cells else None
            report |= info | {
                "positive_cells": len(mac),
                "positive_cells_in_tumour": len(in_t),
                "positive_cells_per_mm2_tissue": _per_mm2(len(mac), tissue),
                "positive_cells_per_mm2_tumour": _per_mm2(len(in_t), region_mm2),
                "density_per_mm2": _per_mm2(len(in_t), region_mm2)
                if region_mm2
                else _per_mm2(len(mac), tissue),
                "tam_fraction": fraction,
                "area_basis": _AREA_BASIS if region_mm2 else "tissue analysed",
                "note": "tumour regions come from the pattern model, trained on H&E; on IHC "
                "slides check them, or use positive_cells_per_mm2_tissue",
            }
        report["viable_tumour_mm2"] = viable
        report["tumour_region_tissue_mm2"] = round(region_mm2, 4) if region_mm2 else None
        report["necrosis_excluded"] = region.necrosis is not None
        report["density_grid_um"] = s.density_grid_um
        maps: list[RasterMap] = []
        points: list[PointSet] = []
        if withheld:  # no markers, and no all-zero density map (it would read as "none found")
            withhold(report, COUNT_KEYS, withheld)
        else:
            dims = ctx.slide.dimensions
            maps = [density_map(mac[:, :2], dims, mpp, s.density_grid_um, "tam_density")]
            points = [PointSet("Macrophage", mac[:, :2].copy(), mac[:, 2].astype(np.float32))]
        return AnalysisOutput(
            self.name,
            report=report,
            maps=maps,
            points=points,
            models=[prov],
            qc=ctx.engine_qc(stats),
            data={
                "density_per_mm2": report["density_per_mm2"],
                "tam_fraction": report["tam_fraction"],
            },
        )
