"""Pyramidal overlay TIFFs that OpenSlide and QuPath open aligned with the slide.

Each :class:`~wsi.results.RasterMap` (grid resolution, a few hundred pixels a side) becomes a
tiled, pyramidal, deflate-compressed TIFF whose level 0 has the slide's level-0 size and pixel size,
so a viewer that opens both files overlays them pixel for pixel. Two forms:

* ``u8``: one channel, ``code = round(value / vmax * 255)`` (class index for label maps); the
  value of a code is ``code * vmax / 255``. For analysis (QuPath pixel classifiers, scripts).
* ``rgba``: the same codes through :func:`wsi.export.colors.colormap_for`, transparent where the
  code is 0. For viewing.

Tiles are produced one at a time by nearest-neighbour sampling of the grid (the map's value at the
centre of each output pixel), so memory stays bounded by one tile whatever the slide size; tiles
that fall on a single grid value are compressed once and reused.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import tifffile
from numpy.typing import NDArray

from wsi.export._errors import ExportError
from wsi.export.colors import colormap_for
from wsi.io import atomic_temp_path, commit_temp
from wsi.results import RasterMap

OverlayForm = Literal["rgba", "u8"]
OVERLAY_FORMS: tuple[OverlayForm, ...] = ("rgba", "u8")
_RECENT_TILES = 256


@dataclass(frozen=True)
class OverlayFile:
    """One written overlay TIFF and what a reader needs to interpret it.

    Attributes:
        name: the map's name.
        form: ``"rgba"`` or ``"u8"``.
        path: the TIFF.
        kind: the map's kind.
        unit: unit of the values.
        vmax: value at code 255.
    """

    name: str
    form: OverlayForm
    path: Path
    kind: str
    unit: str
    vmax: float

    def describe(self, relative_to: Path | None = None) -> dict[str, Any]:
        """Return a JSON-ready description (path relative to ``relative_to`` when given)."""
        path = self.path.relative_to(relative_to) if relative_to is not None else self.path
        return {
            "name": self.name,
            "form": self.form,
            "path": path.as_posix(),
            "kind": self.kind,
            "unit": self.unit,
            "vmax": self.vmax,
            "value_per_code": self.vmax / 255.0 if self.kind != "label" else 1.0,
        }


def overlay_filename(name: str, form: OverlayForm) -> str:
    """Return the file name of a map's overlay, e.g. ``"pattern_spindle.u8.tiff"``."""
    return f"{name}.{form}.tiff"


def validate_map(raster: RasterMap) -> None:
    """Check a map before writing; raise :class:`ExportError` naming the bad value."""
    if raster.values.ndim != 2 or min(raster.values.shape) < 1:
        raise ExportError(
            f"map {raster.name!r} must be a non-empty 2-D array, got shape {raster.values.shape}"
        )
    if not (math.isfinite(raster.l0_per_px) and raster.l0_per_px > 0):
        raise ExportError(f"map {raster.name!r}: l0_per_px must be > 0, got {raster.l0_per_px}")
    if raster.kind != "label" and not (math.isfinite(raster.vmax) and raster.vmax > 0):
        raise ExportError(f"map {raster.name!r}: vmax must be > 0, got {raster.vmax}")
    if not raster.name or any(c in raster.name for c in "/\\. ") or raster.name.startswith("-"):
        raise ExportError(
            f"map name {raster.name!r} is not file-safe; use letters, digits, '_' and '-'"
        )


def encode_codes(raster: RasterMap) -> NDArray[np.uint8]:
    """Return the map as uint8 codes (NaN → 0), at grid resolution."""
    values = np.asarray(raster.values, dtype=np.float64)
    values = np.where(np.isfinite(values), values, 0.0)
    if raster.kind == "label":
        return np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return np.clip(np.rint(values / raster.vmax * 255.0), 0, 255).astype(np.uint8)


def level_shapes(l0_dimensions: tuple[int, int], tile_px: int) -> list[tuple[int, int]]:
    """Return (width, height) of each pyramid level, halving until one tile holds the image."""
    width, height = l0_dimensions
    shapes = [(width, height)]
    k = 0
    while max(shapes[-1]) > tile_px:
        k += 1
        shapes.append((math.ceil(width / 2**k), math.ceil(height / 2**k)))
    return shapes


def _grid_index(
    lvl_start: int, count: int, downsample: float, origin: float, l0_per_px: float, n: int
) -> NDArray[np.intp]:
    """Map level pixels to grid indices by their centres; -1 where outside the grid."""
    l0 = (np.arange(lvl_start, lvl_start + count, dtype=np.float64) + 0.5) * downsample
    idx = np.floor((l0 - origin) / l0_per_px).astype(np.intp)
    idx[(idx < 0) | (idx >= n)] = -1
    return idx


def _runs(idx: NDArray[np.intp]) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Run-length encode an index vector: (value of each run, length of each run)."""
    starts = np.concatenate(([0], np.flatnonzero(np.diff(idx)) + 1))
    lengths = np.diff(np.concatenate((starts, [len(idx)])))
    return idx[starts], lengths


class _TileSource:
    """Produces compressed tiles of one pyramid level of one map.

    A tile covers only a few grid cells, so it is built as a tiny block of cell values repeated
    by run lengths (no per-pixel gathering); tiles holding one value are compressed once.
    """

    def __init__(
        self,
        codes: NDArray[np.uint8],
        raster: RasterMap,
        lut: NDArray[np.uint8] | None,
        level: int,
        shape: tuple[int, int],
        tile_px: int,
    ) -> None:
        # One zero row and column at the end: index -1 (outside the grid) reads them.
        self.padded = np.pad(codes, ((0, 1), (0, 1)))
        self.lut = lut
        n_rows, n_cols = raster.values.shape
        ox, oy = raster.l0_origin
        ds = float(2**level)
        width = -(-shape[0] // tile_px) * tile_px
        height = -(-shape[1] // tile_px) * tile_px
        # Grid index of every column and row of the level (level-sized vectors, not areas).
        self.cols = _grid_index(0, width, ds, ox, raster.l0_per_px, n_cols)
        self.rows = _grid_index(0, height, ds, oy, raster.l0_per_px, n_rows)
        self._constant: dict[int, bytes] = {}
        # Recently built tiles: masks and label maps repeat the same edges many times.
        self._recent: dict[tuple[bytes, tuple[int, ...], bytes, bytes], bytes] = {}

    def encoded(self, lvl_x: int, lvl_y: int, tile_px: int, zlevel: int) -> bytes:
        """Return the deflate-compressed tile whose top-left level pixel is (lvl_x, lvl_y)."""
        row_vals, row_lens = _runs(self.rows[lvl_y : lvl_y + tile_px])
        col_vals, col_lens = _runs(self.cols[lvl_x : lvl_x + tile_px])
        block = self.padded[np.ix_(row_vals, col_vals)]
        lo = int(block.min())
        if lo == int(block.max()):
            cached = self._constant.get(lo)
            if cached is None:
                cached = self._compress(np.full((1, 1), lo, np.uint8), [tile_px], [tile_px], zlevel)
                self._constant[lo] = cached
            return cached
        key = (block.tobytes(), block.shape, row_lens.tobytes(), col_lens.tobytes())
        found = self._recent.get(key)
        if found is None:
            if len(self._recent) >= _RECENT_TILES:
                self._recent.clear()
            found = self._recent[key] = self._compress(block, row_lens, col_lens, zlevel)
        return found

    def _compress(
        self, block: NDArray[np.uint8], row_lens: Any, col_lens: Any, zlevel: int
    ) -> bytes:
        data = block if self.lut is None else self.lut[block]
        tile = np.repeat(np.repeat(data, row_lens, axis=0), col_lens, axis=1)
        return zlib.compress(np.ascontiguousarray(tile).tobytes(), zlevel)


def _level_tiles(
    source: _TileSource, shape: tuple[int, int], tile_px: int, zlevel: int
) -> Iterator[bytes]:
    width, height = shape
    for lvl_y in range(0, height, tile_px):
        for lvl_x in range(0, width, tile_px):
            yield source.encoded(lvl_x, lvl_y, tile_px, zlevel)


def _write_pyramid(
    tw: tifffile.TiffWriter,
    raster: RasterMap,
    form: OverlayForm,
    l0_dimensions: tuple[int, int],
    mpp: float,
    tile_px: int,
    zlevel: int,
    description: str,
) -> None:
    """Write every level (level 0 first, then halvings) as tiled pages of one TIFF."""
    codes = encode_codes(raster)
    lut = colormap_for(raster.name, raster.kind, vmax=raster.vmax, unit=raster.unit).lut
    px_per_cm = 1e4 / mpp
    channels = (4,) if form == "rgba" else ()
    for level, shape in enumerate(level_shapes(l0_dimensions, tile_px)):
        source = _TileSource(codes, raster, lut if form == "rgba" else None, level, shape, tile_px)
        tw.write(
            _level_tiles(source, shape, tile_px, zlevel),
            shape=(shape[1], shape[0], *channels),
            dtype=np.uint8,
            tile=(tile_px, tile_px),
            photometric="rgb" if form == "rgba" else "minisblack",
            extrasamples=("unassalpha",) if form == "rgba" else None,
            compression="zlib",
            resolution=(px_per_cm / 2**level, px_per_cm / 2**level),
            resolutionunit="CENTIMETER",
            subfiletype=0 if level == 0 else 1,
            description=description if level == 0 else None,
            metadata=None,
            software="atc-wsi",
        )


def write_overlay_tiff(
    raster: RasterMap,
    path: Path,
    *,
    l0_dimensions: tuple[int, int],
    mpp: float,
    form: OverlayForm,
    tile_px: int = 256,
    zlevel: int = 1,
) -> OverlayFile:
    """Write one map as a pyramidal tiled TIFF covering the slide, atomically.

    Args:
        raster: the grid-resolution map.
        path: destination file.
        l0_dimensions: the slide's level-0 (width, height) in pixels.
        mpp: the slide's level-0 pixel size in µm/px (stored as X/YResolution in px/cm).
        form: ``"u8"`` (codes) or ``"rgba"`` (colour-mapped).
        tile_px: TIFF tile edge (a multiple of 16).
        zlevel: deflate level 1–9.

    Returns:
        The written file's description.
    """
    validate_map(raster)
    if form not in OVERLAY_FORMS:
        raise ExportError(f"overlay form must be one of {OVERLAY_FORMS}, got {form!r}")
    if tile_px < 16 or tile_px % 16:
        raise ExportError(f"tile_px must be a positive multiple of 16, got {tile_px}")
    if min(l0_dimensions) < 1 or not (math.isfinite(mpp) and mpp > 0):
        raise ExportError(f"bad slide geometry: dimensions {l0_dimensions}, mpp {mpp}")
    out = OverlayFile(raster.name, form, path, raster.kind, raster.unit, float(raster.vmax))
    header = {
        "atc_wsi_overlay": 1,
        **out.describe(),
        "path": path.name,
        "mpp": mpp,
        "l0_dimensions": list(l0_dimensions),
    }
    tmp = atomic_temp_path(path)
    try:
        with tifffile.TiffWriter(tmp, bigtiff=True) as tw:
            _write_pyramid(
                tw, raster, form, l0_dimensions, mpp, tile_px, zlevel, json.dumps(header)
            )
        commit_temp(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def write_overlays(
    maps: list[RasterMap],
    out_dir: Path,
    *,
    l0_dimensions: tuple[int, int],
    mpp: float,
    forms: tuple[OverlayForm, ...] = OVERLAY_FORMS,
    tile_px: int = 256,
    zlevel: int = 1,
) -> list[OverlayFile]:
    """Write every map in every form into ``out_dir`` (``NAME.FORM.tiff``)."""
    names = [m.name for m in maps]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ExportError(f"map names must be unique; repeated: {', '.join(dupes)}")
    written = []
    for raster in maps:
        for form in forms:
            path = out_dir / overlay_filename(raster.name, form)
            written.append(
                write_overlay_tiff(
                    raster,
                    path,
                    l0_dimensions=l0_dimensions,
                    mpp=mpp,
                    form=form,
                    tile_px=tile_px,
                    zlevel=zlevel,
                )
            )
    return written


def render_codes(
    raster: RasterMap, l0_dimensions: tuple[int, int], out_size: tuple[int, int]
) -> NDArray[np.uint8]:
    """Sample a map's codes over the whole slide at a small size (e.g. a thumbnail's).

    Uses the same nearest-neighbour rule as the overlay TIFFs, so a thumbnail overlay matches them.

    Args:
        raster: the grid-resolution map.
        l0_dimensions: the slide's level-0 (width, height).
        out_size: (width, height) of the result; keep it thumbnail-sized.

    Returns:
        (height, width) uint8 codes, 0 outside the map.
    """
    validate_map(raster)
    out_w, out_h = out_size
    padded = np.pad(encode_codes(raster), ((0, 1), (0, 1)))
    n_rows, n_cols = raster.values.shape
    ox, oy = raster.l0_origin
    cols = _grid_index(0, out_w, l0_dimensions[0] / out_w, ox, raster.l0_per_px, n_cols)
    rows = _grid_index(0, out_h, l0_dimensions[1] / out_h, oy, raster.l0_per_px, n_rows)
    return padded[rows[:, None], cols[None, :]]
