"""Tissue detection at low resolution: optical density, saturation, Otsu, morphology, pen ink."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from scipy import ndimage as ndi
from skimage import filters, morphology

from wsi.cost import check_stage, tissue_read_px
from wsi.errors import StageCancelled
from wsi.settings import TissueSettings
from wsi.slide import Slide

_CHUNK_PX = 2048

#: ``(done, total)`` chunks read, called after each chunk.
ChunkProgress = Callable[[int, int], None]
#: Polled before each chunk; True stops the read with :class:`wsi.errors.StageCancelled`.
CancelCheck = Callable[[], bool]


@dataclass(frozen=True, eq=False)
class TissueMask:
    """A binary tissue mask over the whole slide.

    Attributes:
        mask: (rows, cols) read-only bool array; ``mask[r, c]`` covers level-0 pixels
            ``[c * l0_per_px, (c + 1) * l0_per_px)`` in x and likewise in y.
        l0_per_px: level-0 pixels per mask pixel.
        mpp: mask pixel size in µm/px.
        area_mm2: tissue area in mm².
        pen_fraction: fraction of non-glass pixels rejected as pen ink.
        thresholds: the optical-density and saturation thresholds used.
    """

    mask: NDArray[np.bool_]
    l0_per_px: float
    mpp: float
    area_mm2: float
    pen_fraction: float
    thresholds: dict[str, float]

    def fraction_in_boxes(self, l0_xy: NDArray[np.int64], l0_size: float) -> NDArray[np.float64]:
        """Tissue fraction inside square boxes, vectorised with a summed-area table.

        Args:
            l0_xy: (N, 2) level-0 (x, y) of each box's top-left corner.
            l0_size: box edge in level-0 pixels.

        Returns:
            (N,) fractions in [0, 1]; parts of a box outside the slide count as no tissue.
        """
        rows, cols = self.mask.shape
        sat = np.zeros((rows + 1, cols + 1), dtype=np.int64)
        sat[1:, 1:] = np.cumsum(np.cumsum(self.mask, axis=0, dtype=np.int64), axis=1)
        x0 = np.clip(np.floor(l0_xy[:, 0] / self.l0_per_px), 0, cols).astype(np.int64)
        y0 = np.clip(np.floor(l0_xy[:, 1] / self.l0_per_px), 0, rows).astype(np.int64)
        x1 = np.clip(np.ceil((l0_xy[:, 0] + l0_size) / self.l0_per_px), 0, cols).astype(np.int64)
        y1 = np.clip(np.ceil((l0_xy[:, 1] + l0_size) / self.l0_per_px), 0, rows).astype(np.int64)
        inside = sat[y1, x1] - sat[y0, x1] - sat[y1, x0] + sat[y0, x0]
        box_px = max((l0_size / self.l0_per_px) ** 2, 1e-9)
        return np.asarray(np.clip(inside / box_px, 0.0, 1.0), dtype=np.float64)

    def contains(self, l0_xy: NDArray[np.floating]) -> NDArray[np.bool_]:
        """Whether each level-0 point (N, 2) lies on tissue."""
        r = np.clip((l0_xy[:, 1] / self.l0_per_px).astype(np.int64), 0, self.mask.shape[0] - 1)
        c = np.clip((l0_xy[:, 0] / self.l0_per_px).astype(np.int64), 0, self.mask.shape[1] - 1)
        return np.asarray(self.mask[r, c], dtype=bool)


def read_downsampled(
    slide: Slide,
    target_mpp: float,
    *,
    progress: ChunkProgress | None = None,
    cancel: CancelCheck | None = None,
    source_mpp: float | None = None,
) -> tuple[NDArray[np.uint8], float]:
    """Read the whole slide at about ``target_mpp``, streaming chunks of the best level.

    The level read is checked against ``slide.settings.max_stage_read_px`` first; chunks of at
    most 2048 × 2048 level pixels are read one at a time, ``cancel`` polled before each. The
    level read is the best for ``source_mpp`` µm/px (default: ``target_mpp``).

    Returns:
        (image, l0_per_px): RGB image and level-0 pixels per output pixel.

    Raises:
        ReadBudgetError: the level is over the budget (nothing is read).
        StageCancelled: ``cancel()`` returned True.
    """
    level, read_px = tissue_read_px(slide, source_mpp or target_mpp)
    check_stage(slide, "tissue", read_px, level)
    ds = slide.level_downsamples[level]
    width, height = slide.dimensions
    l0_per_px = max(target_mpp / slide.mpp, 1.0)
    out_w = max(1, math.ceil(width / l0_per_px))
    out_h = max(1, math.ceil(height / l0_per_px))
    out = np.full((out_h, out_w, 3), 255, dtype=np.uint8)
    lvl_w, lvl_h = slide.level_dimensions[level]
    total = math.ceil(lvl_w / _CHUNK_PX) * math.ceil(lvl_h / _CHUNK_PX)
    done = 0
    for lvl_y in range(0, lvl_h, _CHUNK_PX):
        for lvl_x in range(0, lvl_w, _CHUNK_PX):
            if cancel is not None and cancel():
                raise StageCancelled(
                    f"tissue mask cancelled after {done} of {total} chunks", path=slide.path
                )
            done += 1
            if progress is not None:
                progress(done, total)
            cw, ch = min(_CHUNK_PX, lvl_w - lvl_x), min(_CHUNK_PX, lvl_h - lvl_y)
            l0_x, l0_y = round(lvl_x * ds), round(lvl_y * ds)
            chunk = slide.read_region((l0_x, l0_y), level, (cw, ch))
            ox0, oy0 = round(l0_x / l0_per_px), round(l0_y / l0_per_px)
            ox1 = min(out_w, round((l0_x + cw * ds) / l0_per_px))
            oy1 = min(out_h, round((l0_y + ch * ds) / l0_per_px))
            if ox1 <= ox0 or oy1 <= oy0:
                continue
            small = Image.fromarray(chunk).resize((ox1 - ox0, oy1 - oy0), Image.Resampling.BOX)
            out[oy0:oy1, ox0:ox1] = np.asarray(small)
    return out, l0_per_px


def pen_ink(rgb: NDArray[np.uint8]) -> NDArray[np.bool_]:
    """Pixels of blue, green or black marker ink (never H&E or DAB stain)."""
    r, g, b = (rgb[..., i].astype(np.int16) for i in range(3))
    blue = (b > r + 40) & (g > r) & (b > 90)
    green = (g > r + 15) & (g > b - 5)
    black = (np.maximum(np.maximum(r, g), b) < 60) & (np.ptp(rgb, axis=-1) < 30)
    return np.asarray(blue | green | black)


def detect_tissue(
    rgb: NDArray[np.uint8], mpp: float, settings: TissueSettings
) -> tuple[NDArray[np.bool_], float, dict[str, float]]:
    """Segment tissue in a low-resolution RGB image.

    Args:
        rgb: (H, W, 3) image.
        mpp: its pixel size in µm/px.
        settings: thresholds and morphology sizes.

    Returns:
        (mask, pen_fraction, thresholds).
    """
    arr = rgb.astype(np.float32)
    od = -np.log10(np.clip(arr, 1.0, 255.0) / 255.0).mean(axis=-1)
    mx, mn = arr.max(axis=-1), arr.min(axis=-1)
    sat = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1.0), 0.0)
    t_od = float(settings.od_threshold_floor)
    t_sat = float(settings.saturation_floor)
    informative = od > t_od / 2
    if informative.sum() > 64 and np.ptp(od[informative]) > 1e-3:
        # Otsu splits glass from tissue on H&E; on DAB IHC it can split brown from pale
        # counterstained tissue instead (40-60% of the tissue lost on CD68 slides), so neither
        # threshold may sit further above the glass (the palest 5% of the image) than a margin.
        glass_od = float(np.percentile(od, 5))
        glass_sat = float(np.percentile(sat[od <= glass_od], 95))
        cap_od = glass_od + settings.glass_margin_od
        cap_sat = glass_sat + settings.glass_margin_saturation
        t_od = max(t_od, min(float(filters.threshold_otsu(od[informative])) * 0.5, cap_od))
        t_sat = max(t_sat, min(float(filters.threshold_otsu(sat[informative])) * 0.5, cap_sat))
    tissue = (od > t_od) & ((sat > t_sat) | (od > 4 * t_od))
    pen = pen_ink(rgb) if settings.reject_pen else np.zeros_like(tissue)
    nonglass = int(tissue.sum()) or 1
    pen_fraction = float((tissue & pen).sum()) / nonglass
    tissue &= ~ndi.binary_dilation(pen, iterations=2)
    tissue = ndi.binary_closing(tissue, structure=morphology.disk(1))
    px_um2 = mpp * mpp
    min_obj = max(1, round(settings.min_object_um2 / px_um2))
    max_hole = max(1, round(settings.max_hole_um2 / px_um2))
    tissue = morphology.remove_small_objects(tissue, max_size=min_obj)
    tissue = morphology.remove_small_holes(tissue, max_size=max_hole)
    return np.asarray(tissue, dtype=bool), pen_fraction, {"od": t_od, "saturation": t_sat}


def compute_tissue_mask(
    slide: Slide,
    settings: TissueSettings | None = None,
    *,
    progress: ChunkProgress | None = None,
    cancel: CancelCheck | None = None,
) -> TissueMask:
    """Compute the tissue mask of ``slide`` at about ``settings.mask_mpp`` µm/px.

    Raises:
        ReadBudgetError: the level it needs is over ``slide.settings.max_stage_read_px``.
        StageCancelled: ``cancel()`` returned True between two chunks.
    """
    settings = settings or TissueSettings()
    rgb, l0_per_px = read_downsampled(
        slide,
        settings.mask_mpp,
        progress=progress,
        cancel=cancel,
        source_mpp=settings.mask_mpp / settings.source_oversample,
    )
    mask_mpp = slide.mpp * l0_per_px
    mask, pen_fraction, thresholds = detect_tissue(rgb, mask_mpp, settings)
    mask.flags.writeable = False
    area_mm2 = float(mask.sum()) * (slide.mpp_x * l0_per_px) * (slide.mpp_y * l0_per_px) / 1e6
    return TissueMask(
        mask=mask,
        l0_per_px=float(l0_per_px),
        mpp=float(mask_mpp),
        area_mm2=area_mm2,
        pen_fraction=pen_fraction,
        thresholds=thresholds,
    )
