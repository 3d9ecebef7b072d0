"""Tile grids: analytic counts, validation, tissue filtering, reading across processes."""

from __future__ import annotations

import math
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np
import pytest

from wsi import (
    InvalidTilingError,
    TileGrid,
    TileReader,
    build_tile_grid,
    compute_tissue_mask,
    open_slide,
)


def _grid(**kw: object) -> TileGrid:
    args: dict[str, object] = dict(
        l0_dimensions=(10_000, 7_000),
        mpp=0.25,
        level_downsamples=(1.0, 4.0, 16.0),
        target_mpp=1.0,
        tile_px=256,
        overlap_px=0,
    )
    args.update(kw)
    return build_tile_grid(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("dims", "target", "tile", "overlap"),
    [
        ((10_000, 7_000), 1.0, 256, 0),
        ((10_000, 7_000), 0.5, 224, 32),
        ((999, 1), 0.25, 100, 10),
        ((40_000, 30_000), 2.0, 512, 64),
    ],
)
def test_tile_count_matches_analytic(
    dims: tuple[int, int], target: float, tile: int, overlap: int
) -> None:
    grid = _grid(l0_dimensions=dims, target_mpp=target, tile_px=tile, overlap_px=overlap)
    f = target / 0.25
    stride, ov = (tile - overlap) * f, overlap * f
    cols = max(1, math.ceil((dims[0] - ov) / stride))
    rows = max(1, math.ceil((dims[1] - ov) / stride))
    assert grid.grid_shape == (rows, cols)
    assert len(grid) == rows * cols
    # full coverage, and the last tile starts inside the slide
    assert grid.l0_xy[:, 0].max() + grid.l0_tile >= dims[0]
    assert grid.l0_xy[:, 0].max() < dims[0] and grid.l0_xy[:, 1].max() < dims[1]


def test_grid_is_frozen_and_ordered() -> None:
    grid = _grid()
    with pytest.raises(ValueError):
        grid.l0_xy[0, 0] = 5
    with pytest.raises(AttributeError):
        grid.tile_px = 3  # type: ignore[misc]
    order = grid.grid_ij[:, 0] * grid.grid_shape[1] + grid.grid_ij[:, 1]
    assert np.all(np.diff(order) > 0)
    assert grid.level == 1 and grid.residual_scale == 1.0 and grid.lvl_read_px == 256


def test_level_choice_and_residual() -> None:
    grid = _grid(target_mpp=0.8)
    assert grid.level == 0 and grid.residual_scale == pytest.approx(0.3125)
    assert grid.lvl_read_px == round(256 * 0.8 / 0.25)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"tile_px": 0}, "tile_px"),
        ({"overlap_px": 256}, "overlap_px"),
        ({"target_mpp": -1.0}, "target_mpp"),
        ({"mpp": 0.0}, "mpp"),
        ({"min_tissue": 1.5}, "min_tissue"),
        ({"l0_dimensions": (0, 5)}, "dimensions"),
    ],
)
def test_invalid_parameters_show_the_value(kw: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidTilingError, match=match):
        _grid(**kw)


def test_hundred_thousand_tiles_build_fast() -> None:
    t0 = time.perf_counter()
    grid = _grid(l0_dimensions=(80_000, 80_000), target_mpp=0.25, tile_px=256)
    elapsed = time.perf_counter() - t0
    assert len(grid) == math.ceil(80_000 / 256) ** 2 > 97_000
    assert elapsed < 1.0  # sanity bound, not a benchmark (see scripts/ for speed figures)


def test_tissue_filter_and_raster(ellipse_slide: Path) -> None:
    with open_slide(ellipse_slide) as slide:
        mask = compute_tissue_mask(slide)
        full = TileGrid.for_slide(slide, target_mpp=1.0, tile_px=128)
        kept = TileGrid.for_slide(slide, target_mpp=1.0, tile_px=128, mask=mask, min_tissue=0.5)
    assert 0 < len(kept) < len(full)
    assert np.all(kept.tissue_fraction >= 0.5)
    raster = kept.as_raster(kept.tissue_fraction)
    assert raster.shape == kept.grid_shape
    assert np.isnan(raster[0, 0])  # the corner is glass
    centre = kept.grid_shape[0] // 2, kept.grid_shape[1] // 2
    assert raster[centre] == pytest.approx(1.0)


def _read_in_child(reader: TileReader, index: int) -> tuple[int, float]:
    sample = reader.read(index)
    return sample["index"], float(sample["image"].mean())


def test_reader_works_across_processes(ellipse_slide: Path) -> None:
    with open_slide(ellipse_slide) as slide:
        grid = TileGrid.for_slide(slide, target_mpp=0.8, tile_px=64)
    reader = TileReader(ellipse_slide, grid)
    here = [_read_in_child(reader, i) for i in (0, len(grid) // 2)]  # opens a handle here
    ctx = mp.get_context("fork")
    with ctx.Pool(2) as pool:
        there = pool.starmap(_read_in_child, [(reader, 0), (reader, len(grid) // 2)])
    assert here == there
    sample = reader.read(len(grid) // 2)
    assert sample["image"].shape == (64, 64, 3) and sample["ok"]


def test_unreadable_tile_is_marked_not_fatal(shared_data: Path) -> None:
    path = shared_data / "slides/openslide-fixtures/unreadable.svs"
    with open_slide(path) as slide:
        grid = TileGrid.for_slide(slide, target_mpp=0.499, tile_px=16)
    reader = TileReader(path, grid)
    sample = reader.read(0)
    assert not sample["ok"] and reader.unreadable == 1
    assert np.all(sample["image"] == 255)
