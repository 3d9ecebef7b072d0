"""Out-of-focus tiles of a high-resolution pass: found relative to the slide's own sharpness.

A pathologist does not count mitoses where the slide is out of focus. The mitosis pass measures
each scanned tile's focus (variance of the grey Laplacian, ``Engine.run(tile_stats=True)``) and
calls a tile out of focus when it is below a share of the median of the scanned tiles. The
measure is relative because its scale depends on the scanner and the tissue: sharp tumour tiles
score 14–26 on the generated slides and 760–1 360 on the real CMU-1 scan, while the generator's
out-of-focus patches score 3.5–7 (about a quarter of their slide's median).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from models.analyses.hotspot import RegionMask, region_tissue_mm2
from wsi.tiling import TileGrid
from wsi.tissue import TissueMask

#: Fewest judged tiles for a median worth comparing against.
MIN_TILES = 8
#: Only tiles at least this full of tissue are judged: glass has no texture, so a tile at the
#: tissue edge scores low however sharp its tissue is.
MIN_TISSUE_FRACTION = 0.9


@dataclass(frozen=True)
class OutOfFocus:
    """Scanned tiles called out of focus, as a mask of their (non-overlapping) cores.

    Attributes:
        cores: True on the lattice cell of each out-of-focus tile (level-0 geometry).
        n_tiles: tiles called out of focus.
        threshold: focus below which a tile is out of focus (grey Laplacian variance, 0–255).
        median: median focus of the scanned tiles.
    """

    cores: RegionMask
    n_tiles: int
    threshold: float
    median: float

    def region_without(self, region: RegionMask) -> RegionMask:
        """``region`` minus the out-of-focus cores, on the (finer) lattice of the cores."""
        rows, cols = self.cores.mask_rc.shape
        step, (x0, y0) = self.cores.l0_per_px, self.cores.l0_origin
        cx = x0 + (np.arange(cols) + 0.5) * step
        cy = y0 + (np.arange(rows) + 0.5) * step
        xx, yy = np.meshgrid(cx, cy)
        inside = region.contains(np.column_stack([xx.ravel(), yy.ravel()])).reshape(rows, cols)
        return RegionMask(inside & ~self.cores.mask_rc, step, (x0, y0))

    def tissue_mm2_in(self, region: RegionMask, tissue: TissueMask, mpp: float) -> float:
        """Tissue area (mm²) that is both in ``region`` and out of focus."""
        return region_tissue_mm2(region, tissue, mpp, self.cores)


def out_of_focus(
    grid: TileGrid, scanned: NDArray[np.int64], focus: NDArray[np.float32], relative: float
) -> OutOfFocus | None:
    """Scanned tiles whose focus is below ``relative`` × the median focus of the scanned tiles.

    Only tiles at least ``MIN_TISSUE_FRACTION`` full of tissue are judged (and make the median).

    Args:
        grid: the pass's tile grid.
        scanned: grid indices the pass processed.
        focus: (len(grid),) focus per tile (NaN where not scanned or unreadable).
        relative: share of the median below which a tile is out of focus (0 = off).

    Returns:
        None when off, when fewer than ``MIN_TILES`` tiles could be judged, or when no tile is out
        of focus.
    """
    f = np.asarray(focus, dtype=np.float64)[scanned]
    ok = np.isfinite(f) & (grid.tissue_fraction[scanned] >= MIN_TISSUE_FRACTION)
    if relative <= 0 or int(ok.sum()) < MIN_TILES:
        return None
    median = float(np.median(f[ok]))
    threshold = relative * median
    blurred = scanned[ok & (f < threshold)]
    if len(blurred) == 0:
        return None
    rows, cols = grid.grid_shape
    mask = np.zeros((rows, cols), dtype=bool)
    ij = grid.grid_ij[blurred]
    mask[ij[:, 0], ij[:, 1]] = True
    half = (grid.l0_tile - grid.l0_stride) / 2
    cores = RegionMask(mask, float(grid.l0_stride), (half, half))
    return OutOfFocus(cores, len(blurred), threshold, median)
