"""The necrosis analysis: overlapping segmentation tiles stitched without seams, area, polygons.

Each tile's probability map is kept at ``map_downsample`` × the model's pixel size; stitching takes
every map pixel from the one tile whose central region owns it (lattice-edge tiles own their outer
margin too), so no pixel comes from a tile border. Polygons come from scikit-image contours of the
thresholded map, made valid with shapely, in level-0 coordinates.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import shapely
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from shapely.geometry import Polygon
from skimage.measure import find_contours

from models.accumulate import TileArrayAccumulator
from models.analyses import AnalysisContext, AnalysisOutput, register_analysis
from models.analyses.scope import IN_SCOPE, scope_of, withheld_note
from models.engine import HeadFn
from wsi.results import PolygonSet, RasterMap
from wsi.synthetic.classes import TUMOUR_PATTERNS
from wsi.tiling import TileGrid


def necrosis_head(channel: int, downsample: int) -> HeadFn:
    """Head keeping P(necrosis), average-pooled by ``downsample``: (B, H/ds, W/ds)."""

    def head(logits: torch.Tensor) -> dict[str, torch.Tensor]:
        p = torch.softmax(logits.float(), dim=1)[:, channel : channel + 1]
        if downsample > 1:
            p = F.avg_pool2d(p, downsample)
        return {"necrosis": p[:, 0]}

    return head


def stitch(grid: TileGrid, tiles: NDArray[np.uint8], downsample: int) -> NDArray[np.uint8]:
    """Assemble per-tile maps (N, s, s) into one map; each pixel from the tile owning it.

    Returns:
        (rows·stride + overlap, cols·stride + overlap) / downsample map; 0 where no tile ran.
    """
    s = grid.tile_px // downsample
    stride = grid.stride_px // downsample
    m = (grid.overlap_px // 2) // downsample
    rows, cols = grid.grid_shape
    out = np.zeros((rows * stride + (s - stride), cols * stride + (s - stride)), dtype=np.uint8)
    for k, (i, j) in enumerate(grid.grid_ij.tolist()):
        r0 = 0 if i == 0 else m
        r1 = s if i == rows - 1 else m + stride
        c0 = 0 if j == 0 else m
        c1 = s if j == cols - 1 else m + stride
        out[i * stride + r0 : i * stride + r1, j * stride + c0 : j * stride + c1] = tiles[
            k, r0:r1, c0:c1
        ]
    return out


def mask_to_polygons(
    mask: NDArray[np.bool_], l0_per_px: float, min_area_l0: float, simplify_l0: float
) -> list[shapely.Polygon]:
    """Valid shapely polygons (level-0 px) of the True regions of ``mask``, holes included."""
    if not mask.any():
        return []
    padded = np.pad(mask.astype(np.float32), 1)
    rings = [c for c in find_contours(padded, 0.5) if len(c) >= 4]
    polys = sorted(
        (Polygon((c[:, ::-1] - 1 + 0.5) * l0_per_px) for c in rings),
        key=lambda p: -abs(p.area),
    )
    geom: shapely.Geometry = shapely.Polygon()
    for p in polys:  # nested contours alternate outer / hole: xor rebuilds the topology
        geom = geom.symmetric_difference(shapely.make_valid(p))
    if simplify_l0 > 0:
        geom = geom.simplify(simplify_l0, preserve_topology=True)
    geom = shapely.make_valid(geom)
    parts = list(getattr(geom, "geoms", [geom]))
    return [p for p in parts if isinstance(p, Polygon) and p.area >= max(min_area_l0, 1e-9)]


def tumour_bed_gate(
    grid: TileGrid,
    probs: NDArray[np.float32],
    classes: tuple[str, ...],
    shape: tuple[int, int],
    l0_per_px: float,
) -> NDArray[np.bool_]:
    """Where necrosis may be counted, on a raster of ``shape`` at ``l0_per_px`` level-0 px/pixel.

    One definition of the tumour bed for both models: pattern tiles where tumour (a tumour
    pattern or necrosis) is more probable than not, plus the 8 neighbours of tiles whose top class
    is necrosis (so the segmenter draws the edge of a necrotic region that a tile calls glass or
    non-tumour). Necrosis the segmenter finds elsewhere, in tiles the classifier calls non-tumour
    or background (benign tissue, keratin, blood, mucin, fibrin), is not tumour necrosis.
    """
    valid = np.isfinite(probs).all(axis=1)
    safe = np.nan_to_num(probs, nan=0.0)
    nec = classes.index("necrosis")
    bed_idx = [classes.index(c) for c in (*TUMOUR_PATTERNS, "necrosis") if c in classes]
    bed = valid & (safe[:, bed_idx].sum(axis=1) >= 0.5)
    is_nec = valid & (safe.argmax(axis=1) == nec)
    nec_r = grid.as_raster(is_nec.astype(np.float32), fill=0.0) > 0.5
    pad = np.pad(nec_r, 1)
    near = np.zeros_like(nec_r)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            near |= pad[dy : dy + nec_r.shape[0], dx : dx + nec_r.shape[1]]
    ok_r = near | (grid.as_raster(bed.astype(np.float32), fill=0.0) > 0.5)
    out = np.zeros(shape, dtype=bool)
    for k, (i, j) in enumerate(grid.grid_ij.tolist()):
        if not ok_r[i, j]:
            continue
        x, y = grid.l0_xy[k]
        c0, r0 = int(x // l0_per_px), int(y // l0_per_px)
        c1 = int(np.ceil((x + grid.l0_tile) / l0_per_px))
        r1 = int(np.ceil((y + grid.l0_tile) / l0_per_px))
        out[max(r0, 0) : r1, max(c0, 0) : c1] = True
    return out


def _rings(poly: shapely.Polygon) -> list[NDArray[np.float64]]:
    rings = [np.asarray(poly.exterior.coords, dtype=np.float64)]
    rings += [np.asarray(r.coords, dtype=np.float64) for r in poly.interiors]
    return rings


def _coarse(prob: NDArray[np.float32], factor: int) -> NDArray[np.float32]:
    """Block-mean downsampling for the overlay raster."""
    h, w = (prob.shape[0] // factor) * factor, (prob.shape[1] // factor) * factor
    if h == 0 or w == 0:
        return prob
    blocks = prob[:h, :w].reshape(h // factor, factor, w // factor, factor)
    return np.asarray(blocks.mean(axis=(1, 3)), dtype=np.float32)


@register_analysis
class NecrosisAnalysis:
    """Segment necrosis over tissue; area, share of the tumour bed, polygons."""

    name = "necrosis"
    requires: tuple[str, ...] = ("pattern", "scope")
    after: tuple[str, ...] = ()

    def run(self, ctx: AnalysisContext) -> AnalysisOutput:
        """Segment, stitch, measure and outline necrosis."""
        ns = ctx.settings.necrosis
        spec, model = ctx.model(ns.model)
        ds = ns.map_downsample
        if spec.tile_px % ds or spec.overlap_px % (2 * ds):
            raise ValueError(f"necrosis.map_downsample={ds} must divide the tile and half-overlap")
        grid = TileGrid.for_slide(
            ctx.slide,
            target_mpp=spec.input_mpp,
            tile_px=spec.tile_px,
            overlap_px=spec.overlap_px,
            mask=ctx.tissue,
            min_tissue=ns.min_tissue,
        )
        s = spec.tile_px // ds
        acc = TileArrayAccumulator(len(grid), "necrosis", (s, s), np.uint8, fill=0, scale=255.0)
        head = necrosis_head(spec.classes.index("necrosis"), ds)
        stats = ctx.run_engine(model, spec, grid, [acc], tag=self.name, head=head)
        prob = stitch(grid, acc.finalize(), ds).astype(np.float32) / 255.0
        l0_per_px = grid.l0_stride / grid.stride_px * ds
        return self._output(ctx, spec.provenance(), grid, prob, l0_per_px, stats)

    def _output(
        self,
        ctx: AnalysisContext,
        provenance: dict[str, Any],
        grid: TileGrid,
        prob: NDArray[np.float32],
        l0_per_px: float,
        stats: Any,
    ) -> AnalysisOutput:
        ns = ctx.settings.necrosis
        segmented = prob >= ns.threshold
        mask = segmented
        pattern = ctx.results.get("pattern")
        if ns.gate_by_pattern and pattern is not None:
            gate = tumour_bed_gate(
                pattern.data["grid"],
                pattern.data["probs"],
                tuple(pattern.report["tissue_classes"]),
                prob.shape,
                l0_per_px,
            )
            mask = segmented & gate
        um_per_px = l0_per_px * ctx.slide.mpp
        area_mm2 = float(mask.sum()) * (um_per_px / 1000.0) ** 2
        l0_um2 = ctx.slide.mpp**2
        polys = mask_to_polygons(
            mask, l0_per_px, ns.min_polygon_um2 / l0_um2, ns.simplify_um / ctx.slide.mpp
        )
        viable = None
        if "pattern" in ctx.results:
            viable = float(ctx.results["pattern"].data["viable_tumour_mm2"])
        bed = (viable + area_mm2) if viable is not None else None
        scope = scope_of(dict(ctx.results))
        withheld = scope is not None and scope["verdict"] != IN_SCOPE
        if withheld:
            bed = None  # no tumour bed to take a percentage of
        report = {
            "model": provenance["name"],
            "mpp": grid.target_mpp,
            "map_mpp": round(um_per_px, 4),
            "threshold": ns.threshold,
            "area_mm2": round(area_mm2, 4),
            "segmented_mm2": round(float(segmented.sum()) * (um_per_px / 1000.0) ** 2, 4),
            "gated_by_pattern": bool(ns.gate_by_pattern and pattern is not None),
            "viable_tumour_mm2": round(viable, 4) if viable is not None else None,
            "tumour_bed_mm2": round(bed, 4) if bed is not None else None,
            "percent_of_tumour_bed": round(100 * area_mm2 / bed, 2) if bed else None,
            "regions": len(polys),
            "largest_region_mm2": round(
                max((p.area for p in polys), default=0.0) * l0_um2 / 1e6, 4
            ),
        }
        if withheld and scope is not None:
            report["withheld"] = withheld_note(scope)
        factor = max(1, round(16.0 / um_per_px))  # overlay raster at about 16 µm/px
        return AnalysisOutput(
            name=self.name,
            report=report,
            maps=[RasterMap("necrosis", _coarse(prob, factor), l0_per_px * factor, "probability")],
            polygons=[PolygonSet("Necrosis", [_rings(p) for p in polys])],
            models=[provenance],
            qc=ctx.engine_qc(stats),
            data={"mask": mask, "l0_per_px": l0_per_px, "area_mm2": area_mm2},
        )
