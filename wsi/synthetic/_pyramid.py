"""Streaming writer of tiled pyramidal TIFFs that OpenSlide opens as generic-tiff.

Level 0 arrives as JPEG tiles already encoded by the rendering workers (in TIFF tile order);
each reduced level is a 2× box-filtered copy of the previous one, spooled through a raw temporary
file in row bands so no level is ever whole in memory.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import tifffile
from numpy.typing import NDArray

TILE = 256
U8 = NDArray[np.uint8]


def encode_tile(tile: U8, quality: int) -> bytes:
    """Return one RGB tile as JPEG bytes (YCbCr 4:2:0), as tifffile itself would write it."""
    out = imagecodecs.jpeg8_encode(
        np.ascontiguousarray(tile),
        level=quality,
        colorspace="RGB",
        outcolorspace="YCBCR",
        subsampling=(2, 2),
    )
    return bytes(out)


def window_tiles(rgb: U8, quality: int, fill: int = 255) -> list[bytes]:
    """Cut an RGB window into TILE × TILE JPEG tiles, row-major; edge tiles padded with ``fill``."""
    h, w = rgb.shape[:2]
    out = []
    for y in range(0, h, TILE):
        for x in range(0, w, TILE):
            t = rgb[y : y + TILE, x : x + TILE]
            if t.shape[:2] != (TILE, TILE):
                pad = np.full((TILE, TILE, rgb.shape[2]), fill, np.uint8)
                pad[: t.shape[0], : t.shape[1]] = t
                t = pad
            out.append(encode_tile(t, quality))
    return out


def halve(band: U8) -> U8:
    """Return a 2× box-filtered copy of a band (odd edges replicate the last row / column)."""
    h, w = band.shape[:2]
    if h % 2 or w % 2:
        band = np.pad(band, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    b = band.astype(np.uint16)
    s = b[0::2, 0::2] + b[1::2, 0::2] + b[0::2, 1::2] + b[1::2, 1::2]
    return ((s + 2) // 4).astype(np.uint8)


def level_dims(width: int, height: int, min_px: int = 1500) -> list[tuple[int, int]]:
    """Return (width, height) of every level: halving while the last level is above ``min_px``."""
    dims = [(width, height)]
    while max(dims[-1]) > min_px:
        w, h = dims[-1]
        dims.append(((w + 1) // 2, (h + 1) // 2))
    return dims


def _raw_bands(path: Path, w: int, h: int, rows: int) -> Iterator[U8]:
    row_bytes = w * 3
    with open(path, "rb") as fh:
        for y in range(0, h, rows):
            n = min(rows, h - y)
            buf = fh.read(n * row_bytes)
            yield np.frombuffer(buf, np.uint8).reshape(n, w, 3)


def _tiles_from_bands(
    bands: Iterator[U8], w: int, quality: int, spool: Path | None
) -> Generator[bytes, None, None]:
    """Yield JPEG tiles of full-width bands (height multiple of TILE but the last) and spool the
    2× reduced band to ``spool`` if given."""
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(open(spool, "wb")) if spool is not None else None
        for band in bands:
            if out is not None:
                out.write(halve(band).tobytes())
                out.flush()
            yield from window_tiles(band, quality)


def write_pyramid(
    path: Path,
    level0_tiles: Iterator[bytes],
    width: int,
    height: int,
    mpp: float,
    quality: int,
    spool0: Path,
    description: str,
) -> list[tuple[int, int]]:
    """Write a pyramidal TIFF.

    Args:
        path: output file (written in place; the caller makes it atomic).
        level0_tiles: level-0 JPEG tiles in TIFF order; producing them must also write the 2×
            reduced level 0 as raw RGB rows to ``spool0``.
        width: level-0 width in pixels.
        height: level-0 height in pixels.
        mpp: level-0 µm per pixel.
        quality: JPEG quality.
        spool0: raw file the level-0 producer fills with level 1.
        description: ImageDescription of level 0.

    Returns:
        (width, height) of every level written.
    """
    dims = level_dims(width, height)
    px_per_cm = 1e4 / mpp
    common: dict[str, Any] = dict(
        dtype=np.uint8,
        tile=(TILE, TILE),
        photometric="rgb",
        compression="jpeg",
        subsampling=(2, 2),
        resolutionunit="CENTIMETER",
        metadata=None,
    )
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        tif.write(
            level0_tiles,
            shape=(height, width, 3),
            resolution=(px_per_cm, px_per_cm),
            subfiletype=0,
            description=description,
            **common,
        )  # type: ignore[arg-type]
        close = getattr(level0_tiles, "close", None)
        if close is not None:
            close()  # let the producer finish (close its spool file)
        src = spool0
        for lvl in range(1, len(dims)):
            w, h = dims[lvl]
            nxt = src.with_suffix(f".l{lvl + 1}") if lvl + 1 < len(dims) else None
            tiles = _tiles_from_bands(_raw_bands(src, w, h, 2 * TILE), w, quality, nxt)
            scale = px_per_cm / 2**lvl
            tif.write(tiles, shape=(h, w, 3), resolution=(scale, scale), subfiletype=1, **common)  # type: ignore[arg-type]
            tiles.close()
            src.unlink()
            if nxt is None:
                break
            src = nxt
    return dims


def write_label_pyramid(path: Path, labels: U8, l0_per_px: float, mpp: float) -> None:
    """Write a uint8 label map (one class per pixel) as a tiled, deflate-compressed pyramid."""
    px_per_cm = 1e4 / (mpp * l0_per_px)
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        lvl, cur = 0, labels
        while True:
            tif.write(
                cur,
                tile=(TILE, TILE),
                photometric="minisblack",
                compression="zlib",
                resolution=(px_per_cm / 2**lvl, px_per_cm / 2**lvl),
                resolutionunit="CENTIMETER",
                subfiletype=0 if lvl == 0 else 1,
                metadata=None,
                description=f"labels l0_per_px={l0_per_px * 2**lvl}",
            )
            if max(cur.shape) <= 1024:
                break
            cur = np.ascontiguousarray(cur[::2, ::2])
            lvl += 1
