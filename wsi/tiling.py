"""Tile grids as values, and a per-process tile reader.

A :class:`TileGrid` is built by a pure, vectorised function from the slide geometry, the target
pixel size, the tile size, the overlap and an optional tissue mask. Tile positions are level-0
pixels; tile sizes, strides and overlaps named ``*_px`` are target pixels.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from wsi.cost import check_stage, grid_read_px
from wsi.errors import InvalidTilingError, TileReadError
from wsi.settings import SlideSettings

if TYPE_CHECKING:
    from wsi.slide import Slide
    from wsi.tissue import TissueMask


class TileSample(TypedDict):
    """One tile as it crosses a DataLoader boundary."""

    image: NDArray[np.uint8]  # (tile_px, tile_px, 3) RGB at the grid's target mpp
    index: int  # position in the grid
    l0_x: int
    l0_y: int
    ok: bool  # False when the pixel data was unreadable (image is then white)


@dataclass(frozen=True, eq=False)
class TileGrid:
    """A deterministic, read-only grid of tiles over a slide.

    Attributes:
        target_mpp: pixel size of the tiles handed to a model, µm/px.
        tile_px: tile edge in target pixels.
        overlap_px: overlap between neighbours in target pixels.
        level: pyramid level read.
        level_downsample: level-0 pixels per pixel of ``level``.
        residual_scale: factor from level pixels to target pixels (1.0: none).
        l0_tile: tile edge in level-0 pixels.
        l0_stride: distance between tile origins in level-0 pixels.
        l0_dimensions: level-0 (width, height) of the slide.
        grid_shape: (rows, cols) of the full lattice, before tissue filtering.
        l0_xy: (N, 2) int64 level-0 (x, y) of each kept tile's top-left corner, row-major order.
        grid_ij: (N, 2) int32 (row, col) of each kept tile in the lattice.
        tissue_fraction: (N,) float32 fraction of each tile covered by tissue (1 without a mask).
        min_tissue: the filter threshold applied.
    """

    target_mpp: float
    tile_px: int
    overlap_px: int
    level: int
    level_downsample: float
    residual_scale: float
    l0_tile: float
    l0_stride: float
    l0_dimensions: tuple[int, int]
    grid_shape: tuple[int, int]
    l0_xy: NDArray[np.int64]
    grid_ij: NDArray[np.int32]
    tissue_fraction: NDArray[np.float32]
    min_tissue: float

    def __len__(self) -> int:
        return int(self.l0_xy.shape[0])

    @property
    def stride_px(self) -> int:
        """Distance between tile origins in target pixels."""
        return self.tile_px - self.overlap_px

    @property
    def lvl_read_px(self) -> int:
        """Edge of the square read from ``level`` for one tile, in level pixels."""
        return max(1, round(self.l0_tile / self.level_downsample))

    @property
    def tile_area_mm2(self) -> float:
        """Area one tile covers, in mm²."""
        return (self.tile_px * self.target_mpp / 1000.0) ** 2

    def as_raster(self, values: NDArray[np.floating], fill: float = np.nan) -> NDArray[np.float32]:
        """Scatter per-tile values (N,) or (N, C) into the (rows, cols[, C]) lattice."""
        rows, cols = self.grid_shape
        if values.shape[0] != len(self):
            raise ValueError(f"expected {len(self)} values, got {values.shape[0]}")
        out = np.full((rows, cols, *values.shape[1:]), fill, dtype=np.float32)
        out[self.grid_ij[:, 0], self.grid_ij[:, 1]] = values
        return out

    @classmethod
    def for_slide(
        cls,
        slide: Slide,
        *,
        target_mpp: float,
        tile_px: int,
        overlap_px: int = 0,
        mask: TissueMask | None = None,
        min_tissue: float = 0.0,
    ) -> TileGrid:
        """Build the grid of ``slide`` at ``target_mpp`` (see :func:`build_tile_grid`).

        Raises:
            ReadBudgetError: reading its tiles would decode more than
                ``slide.settings.max_stage_read_px``.
        """
        grid = build_tile_grid(
            l0_dimensions=slide.dimensions,
            mpp=slide.mpp,
            level_downsamples=slide.level_downsamples,
            target_mpp=target_mpp,
            tile_px=tile_px,
            overlap_px=overlap_px,
            mask=mask,
            min_tissue=min_tissue,
        )
        check_stage(slide, "tiles", grid_read_px(grid), grid.level)
        return grid


def _choose_level(mpp: float, level_downsamples: tuple[float, ...], target_mpp: float) -> int:
    best = 0
    for level, ds in enumerate(level_downsamples):
        if mpp * ds <= target_mpp * 1.01:
            best = level
    return best


def _readonly(arr: NDArray[np.generic]) -> NDArray[np.generic]:
    arr.flags.writeable = False
    return arr


def build_tile_grid(
    *,
    l0_dimensions: tuple[int, int],
    mpp: float,
    level_downsamples: tuple[float, ...],
    target_mpp: float,
    tile_px: int,
    overlap_px: int = 0,
    mask: TissueMask | None = None,
    min_tissue: float = 0.0,
) -> TileGrid:
    """Compute a tile grid covering the whole slide, optionally keeping tissue tiles only.

    The lattice covers the slide completely: the last row and column may extend past the edge
    (those pixels read as white). Tiles are kept when their tissue fraction is ≥ ``min_tissue``
    (and > 0 when a mask is given).

    Args:
        l0_dimensions: level-0 (width, height) in pixels.
        mpp: level-0 pixel size, µm/px.
        level_downsamples: the slide's level downsamples (level 0 first).
        target_mpp: pixel size the tiles are resampled to, µm/px.
        tile_px: tile edge in target pixels.
        overlap_px: overlap between neighbouring tiles in target pixels.
        mask: tissue mask; without one every tile is kept.
        min_tissue: minimum tissue fraction in [0, 1].

    Raises:
        InvalidTilingError: a parameter that cannot produce a grid; the message shows it.
    """
    width, height = l0_dimensions
    if width <= 0 or height <= 0:
        raise InvalidTilingError(f"slide dimensions must be positive, got {l0_dimensions}")
    if not (math.isfinite(mpp) and mpp > 0):
        raise InvalidTilingError(f"mpp must be a positive µm/px value, got {mpp}")
    if not (math.isfinite(target_mpp) and target_mpp > 0):
        raise InvalidTilingError(f"target_mpp must be a positive µm/px value, got {target_mpp}")
    if tile_px <= 0:
        raise InvalidTilingError(f"tile_px must be positive, got {tile_px}")
    if not 0 <= overlap_px < tile_px:
        raise InvalidTilingError(f"overlap_px must be in [0, tile_px={tile_px}), got {overlap_px}")
    if not 0.0 <= min_tissue <= 1.0:
        raise InvalidTilingError(f"min_tissue must be in [0, 1], got {min_tissue}")
    if not level_downsamples or level_downsamples[0] <= 0:
        raise InvalidTilingError(
            f"level_downsamples must start with level 0, got {level_downsamples}"
        )

    l0_per_target = target_mpp / mpp
    l0_tile = tile_px * l0_per_target
    l0_stride = (tile_px - overlap_px) * l0_per_target
    l0_overlap = overlap_px * l0_per_target
    cols = max(1, math.ceil((width - l0_overlap) / l0_stride))
    rows = max(1, math.ceil((height - l0_overlap) / l0_stride))

    ii, jj = np.meshgrid(
        np.arange(rows, dtype=np.int32), np.arange(cols, dtype=np.int32), indexing="ij"
    )
    grid_ij = np.stack([ii.ravel(), jj.ravel()], axis=1)
    l0_xy = np.stack(
        [np.rint(grid_ij[:, 1] * l0_stride), np.rint(grid_ij[:, 0] * l0_stride)], axis=1
    ).astype(np.int64)

    if mask is not None:
        fraction = mask.fraction_in_boxes(l0_xy, l0_tile).astype(np.float32)
        keep = (fraction >= min_tissue) & (fraction > 0)
        grid_ij, l0_xy, fraction = grid_ij[keep], l0_xy[keep], fraction[keep]
    else:
        fraction = np.ones(len(l0_xy), dtype=np.float32)

    level = _choose_level(mpp, level_downsamples, target_mpp)
    ds = float(level_downsamples[level])
    residual = (mpp * ds) / target_mpp
    if abs(residual - 1.0) < 0.01:
        residual = 1.0
    return TileGrid(
        target_mpp=float(target_mpp),
        tile_px=int(tile_px),
        overlap_px=int(overlap_px),
        level=level,
        level_downsample=ds,
        residual_scale=float(residual),
        l0_tile=float(l0_tile),
        l0_stride=float(l0_stride),
        l0_dimensions=(int(width), int(height)),
        grid_shape=(rows, cols),
        l0_xy=_readonly(np.ascontiguousarray(l0_xy)),  # type: ignore[arg-type]
        grid_ij=_readonly(np.ascontiguousarray(grid_ij)),  # type: ignore[arg-type]
        tissue_fraction=_readonly(np.ascontiguousarray(fraction)),  # type: ignore[arg-type]
        min_tissue=float(min_tissue),
    )


class TileReader:
    """Reads the tiles of a grid, resampled to the grid's target mpp.

    The OpenSlide handle is opened lazily and re-opened after a fork, so a reader can be handed to
    DataLoader worker processes: no handle ever crosses a process boundary.
    """

    def __init__(
        self,
        path: str | Path,
        grid: TileGrid,
        mpp_override: float | None = None,
        *,
        settings: SlideSettings | None = None,
    ) -> None:
        self.path = Path(path)
        self.grid = grid
        self.mpp_override = mpp_override
        self.settings = settings  # the slide's own (colour fix, limits); None = defaults
        self._slide: Slide | None = None
        self._pid: int | None = None
        self.unreadable = 0

    def __len__(self) -> int:
        return len(self.grid)

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        state["_slide"] = None
        state["_pid"] = None
        return state

    def _handle(self) -> Slide:
        from wsi.slide import open_slide  # local import keeps tiling importable without a slide

        if self._slide is None or self._pid != os.getpid():
            settings = self.settings or SlideSettings()
            self._slide = open_slide(self.path, self.mpp_override, settings=settings)
            self._pid = os.getpid()
        return self._slide

    def read(self, index: int) -> TileSample:
        """Read tile ``index``; corrupt pixel data gives a white tile with ``ok=False``."""
        grid = self.grid
        l0_x, l0_y = (int(v) for v in grid.l0_xy[index])
        size = grid.lvl_read_px
        ok = True
        try:
            region = self._handle().read_region((l0_x, l0_y), grid.level, (size, size))
        except TileReadError:
            self.unreadable += 1
            ok = False
            region = np.full((grid.tile_px, grid.tile_px, 3), 255, dtype=np.uint8)
        if region.shape[0] != grid.tile_px or region.shape[1] != grid.tile_px:
            region = resample(region, grid.tile_px)
        return TileSample(image=region, index=int(index), l0_x=l0_x, l0_y=l0_y, ok=ok)

    def __getitem__(self, index: int) -> TileSample:
        return self.read(index)

    def close(self) -> None:
        """Close the handle held by this process."""
        if self._slide is not None:
            self._slide.close()
            self._slide = None


def resample(image: NDArray[np.uint8], size_px: int) -> NDArray[np.uint8]:
    """Resize a square RGB image to ``size_px`` with an antialiased bilinear filter."""
    pil = Image.fromarray(image)
    return np.asarray(pil.resize((size_px, size_px), Image.Resampling.BILINEAR), dtype=np.uint8)
