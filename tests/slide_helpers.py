"""Plain helpers for tests: paths and generated pyramidal TIFFs (no fixtures here)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import tifffile
from numpy.typing import NDArray

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
CACHE = REPO / ".cache" / "test-slides"

# A color function gets level-0 pixel centre coordinates (x, y arrays) and returns RGB uint8.
ColorFn = Callable[[NDArray[np.float64], NDArray[np.float64]], NDArray[np.uint8]]


def ellipse_tissue(width: int, height: int) -> ColorFn:
    """Pink tissue inside an ellipse centred on the slide, white glass elsewhere."""
    cx, cy, rx, ry = width / 2, height / 2, width * 0.35, height * 0.30

    def color(x: NDArray[np.float64], y: NDArray[np.float64]) -> NDArray[np.uint8]:
        inside = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1.0
        out = np.full((*x.shape, 3), 245, dtype=np.uint8)
        out[inside] = (200, 110, 170)
        return out

    return color


def ellipse_area_px(width: int, height: int) -> float:
    """Exact area in level-0 px² of the tissue drawn by :func:`ellipse_tissue`."""
    return math.pi * (width * 0.35) * (height * 0.30)


def write_pyramid(
    path: Path,
    width: int,
    height: int,
    mpp: float,
    color: ColorFn,
    *,
    tile: int = 256,
    compression: str = "jpeg",
    min_level_px: int = 512,
) -> Path:
    """Write a tiled pyramidal TIFF that OpenSlide reads as generic-tiff with mpp.

    Every level is computed directly from ``color`` (never by reading level 0 back), tile by
    tile, so level 0 is never whole in memory.
    """
    px_per_cm = 1e4 / mpp
    levels = [1]
    while max(width, height) / levels[-1] / 2 >= min_level_px:
        levels.append(levels[-1] * 2)
    tmp = path.with_suffix(".partial")
    with tifffile.TiffWriter(tmp, bigtiff=True) as tw:
        for i, ds in enumerate(levels):
            lw, lh = math.ceil(width / ds), math.ceil(height / ds)

            def tiles(lw: int = lw, lh: int = lh, ds: int = ds) -> Iterator[NDArray[np.uint8]]:
                for ty in range(0, lh, tile):
                    for tx in range(0, lw, tile):
                        xs = (np.arange(tx, tx + tile) + 0.5) * ds
                        ys = (np.arange(ty, ty + tile) + 0.5) * ds
                        gx, gy = np.meshgrid(xs, ys)
                        yield color(gx, gy)

            tw.write(
                tiles(),
                shape=(lh, lw, 3),
                dtype=np.uint8,
                tile=(tile, tile),
                photometric="rgb",
                compression=compression,
                resolution=(px_per_cm / ds, px_per_cm / ds),
                resolutionunit="CENTIMETER",
                subfiletype=0 if i == 0 else 1,
            )
    tmp.replace(path)
    return path


def synthetic_cache() -> Path:
    """A cache folder for synthetic slides, keyed by the generator's source code.

    Any change to ``wsi/synthetic`` gives a new folder, so a test never scores the current
    models on a slide drawn by an older generator.
    """
    import hashlib

    digest = hashlib.sha256()
    for src in sorted((REPO / "wsi" / "synthetic").glob("*.py")):
        digest.update(src.name.encode())
        digest.update(src.read_bytes())
    folder = CACHE / f"synthetic-{digest.hexdigest()[:12]}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder
