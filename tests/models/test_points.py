"""Tile-margin ownership of point detections: nothing is lost next to tiles that are not scanned."""

from __future__ import annotations

import numpy as np

from models.cells.points import PointAccumulator
from wsi.tiling import build_tile_grid


def _grid():  # type: ignore[no-untyped-def]
    return build_tile_grid(
        l0_dimensions=(1400, 1400),
        mpp=0.25,
        level_downsamples=(1.0,),
        target_mpp=0.25,
        tile_px=512,
        overlap_px=64,
    )


def _tile_at(grid, i: int, j: int) -> int:  # type: ignore[no-untyped-def]
    return int(np.flatnonzero((grid.grid_ij[:, 0] == i) & (grid.grid_ij[:, 1] == j))[0])


def _acc(**kw):  # type: ignore[no-untyped-def]
    return PointAccumulator("p", lambda r: r, 1, l0_per_px=1.0, tile_px=512, margin_px=32, **kw)


# (row, col, score) in tile 0's pixels: core, right margin, bottom margin, top (slide edge) margin
DETS = np.array([[200.0, 200.0, 1.0], [200.0, 500.0, 2.0], [500.0, 200.0, 3.0], [10.0, 200.0, 4.0]])


def test_margin_detections_go_to_a_scanned_neighbour_only() -> None:
    grid = _grid()
    assert grid.grid_shape[0] >= 2 and grid.grid_shape[1] >= 2
    t0 = _tile_at(grid, 0, 0)
    right = _tile_at(grid, 0, 1)
    scanned = np.array([k for k in range(len(grid)) if k != right])
    acc = _acc(grid=grid, scanned=scanned)
    acc.store_tile(t0, grid.l0_xy[t0], DETS)
    # core kept; right neighbour not scanned: kept; bottom neighbour scanned: left to it;
    # above the lattice there is no tile: kept
    assert acc.finalize()[:, 2].tolist() == [1.0, 2.0, 4.0]


def test_all_scanned_keeps_only_what_no_neighbour_owns() -> None:
    grid = _grid()
    t0 = _tile_at(grid, 0, 0)
    acc = _acc(grid=grid)
    acc.store_tile(t0, grid.l0_xy[t0], DETS)
    assert acc.finalize()[:, 2].tolist() == [1.0, 4.0]
    bare = _acc()  # without the grid every margin is dropped
    bare.store_tile(t0, grid.l0_xy[t0], DETS)
    assert bare.finalize()[:, 2].tolist() == [1.0]


def test_owner_sees_the_detection_in_its_core() -> None:
    """A point in tile (0,0)'s bottom margin lies in the core of tile (1,0)."""
    grid = _grid()
    t0, t1 = _tile_at(grid, 0, 0), _tile_at(grid, 1, 0)
    l0 = grid.l0_xy[t0] + np.array([200.0 + 0.5, 500.0 + 0.5])  # (x, y) of row 500, col 200
    row_in_t1 = l0[1] - grid.l0_xy[t1][1] - 0.5
    assert 32 <= row_in_t1 < 512 - 32


def test_neighbours_scanned_is_what_store_tile_leaves_to_them() -> None:
    grid = _grid()
    t0 = _tile_at(grid, 0, 0)
    right = _tile_at(grid, 0, 1)
    scanned = np.array([k for k in range(len(grid)) if k != right])
    nb = _acc(grid=grid, scanned=scanned).neighbours_scanned(np.array([t0]))[0]
    # above and left of tile (0, 0) is no tile; right is not scanned; below and below-right are
    assert nb.tolist() == [[False, False, False], [False, False, False], [False, True, True]]
    # every detection in a margin flagged here is one store_tile drops, and only those
    rng = np.random.default_rng(0)
    dets = np.column_stack([rng.integers(0, 512, (400, 2)), np.arange(400.0)]).astype(float)
    acc = _acc(grid=grid, scanned=scanned)
    acc.store_tile(t0, grid.l0_xy[t0], dets)
    side = lambda v: np.where(v < 32, 0, np.where(v >= 512 - 32, 2, 1))  # noqa: E731
    flagged = nb[side(dets[:, 0]), side(dets[:, 1])]
    assert sorted(acc.finalize()[:, 2].tolist()) == dets[~flagged, 2].tolist()
    assert _acc().neighbours_scanned(np.array([t0]))[0].sum() == 8  # no grid: all margins
