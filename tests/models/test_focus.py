"""Out-of-focus tiles of the mitosis pass: relative threshold, masks and areas."""

from __future__ import annotations

import numpy as np
import pytest

from models.analyses.focus import MIN_TILES, out_of_focus
from models.analyses.hotspot import RegionMask
from wsi.tiling import TileGrid, build_tile_grid
from wsi.tissue import TissueMask

MPP = 0.25


def _grid() -> TileGrid:
    # 8 × 8 lattice of 512 px tiles with 64 px overlap at level 0 (stride 448 px = 112 µm)
    return build_tile_grid(
        l0_dimensions=(8 * 448 + 64, 8 * 448 + 64),
        mpp=MPP,
        level_downsamples=(1.0,),
        target_mpp=MPP,
        tile_px=512,
        overlap_px=64,
    )


def test_tiles_well_below_the_slide_median_are_out_of_focus() -> None:
    grid = _grid()
    assert len(grid) == 64
    focus = np.full(len(grid), 20.0, dtype=np.float32)
    blurred = np.flatnonzero((grid.grid_ij[:, 0] < 2) & (grid.grid_ij[:, 1] < 3))  # 6 tiles
    focus[blurred] = 4.0
    focus[36] = 8.0  # tile (4, 4) at 0.4 × median: soft, but not out of focus at 0.35
    scanned = np.arange(len(grid), dtype=np.int64)
    res = out_of_focus(grid, scanned, focus, 0.35)
    assert res is not None
    assert res.n_tiles == 6 and res.median == pytest.approx(20.0)
    assert res.threshold == pytest.approx(7.0)
    # a point in the core of a blurred tile is inside, one in a sharp tile is not
    inside = grid.l0_xy[blurred[0]] + 256
    sharp = grid.l0_xy[63] + 256
    assert res.cores.contains(np.array([inside, sharp], dtype=np.float64)).tolist() == [True, False]
    # tiles not scanned do not count, even with low focus
    part = scanned[scanned != blurred[0]]
    res2 = out_of_focus(grid, part, focus, 0.35)
    assert res2 is not None and res2.n_tiles == 5


def test_off_too_few_tiles_or_all_sharp_gives_none() -> None:
    grid = _grid()
    focus = np.full(len(grid), 20.0, dtype=np.float32)
    scanned = np.arange(len(grid), dtype=np.int64)
    assert out_of_focus(grid, scanned, focus, 0.35) is None  # nothing blurred
    focus[:3] = 1.0
    assert out_of_focus(grid, scanned, focus, 0.0) is None  # switched off
    assert out_of_focus(grid, scanned[: MIN_TILES - 1], focus, 0.35) is None  # too few to judge
    focus[5] = np.nan  # unreadable tiles are ignored
    res = out_of_focus(grid, scanned, focus, 0.35)
    assert res is not None and res.n_tiles == 3


def test_region_without_blur_and_blurred_tissue_area() -> None:
    grid = _grid()
    focus = np.full(len(grid), 20.0, dtype=np.float32)
    focus[0] = 2.0  # the top-left tile
    res = out_of_focus(grid, np.arange(len(grid), dtype=np.int64), focus, 0.35)
    assert res is not None
    # the whole slide is tumour: one 224 µm pattern pixel per 896 level-0 px
    region = RegionMask(np.ones((4, 4), dtype=bool), 896.0)
    left = res.region_without(region)
    core = grid.l0_xy[0] + 256
    assert not left.contains(core[None].astype(np.float64))[0]
    assert left.contains(np.array([[3000.0, 3000.0]]))[0]
    # tissue everywhere at 8 µm/px: the blurred core is 112 µm × 112 µm of tissue
    l0_px = 8.0 / MPP
    n = int(np.ceil((8 * 448 + 64) / l0_px))
    tissue = TissueMask(np.ones((n, n), dtype=bool), l0_px, 8.0, 1.0, 0.0, {})
    assert res.tissue_mm2_in(region, tissue, MPP) == pytest.approx(0.112**2, rel=0.15)
