"""The only module that imports openslide: opening, reading and error translation."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import openslide
from numpy.typing import NDArray
from openslide import OpenSlide, OpenSlideError, OpenSlideUnsupportedFormatError

from wsi.errors import SlideNotFoundError, TileReadError, UnsupportedSlideError

LIBRARY_VERSION: str = str(openslide.__library_version__)


def open_handle(path: Path) -> OpenSlide:
    """Open ``path`` with OpenSlide, translating every failure into a ``WsiError``."""
    if not path.exists():
        raise SlideNotFoundError("no such file; check the path and the mount", path=path)
    if path.is_dir():
        raise SlideNotFoundError(
            "is a folder; pass one file of it (for DICOM, any instance of the series)", path=path
        )
    if not os.access(path, os.R_OK):
        raise SlideNotFoundError("file is not readable (permissions)", path=path)
    if path.stat().st_size == 0:
        raise UnsupportedSlideError(
            "file is empty (0 bytes); the copy may be incomplete", path=path
        )
    try:
        fmt = OpenSlide.detect_format(str(path))
    except (OpenSlideError, OSError) as exc:  # pragma: no cover - defensive
        raise UnsupportedSlideError(f"cannot detect the format: {exc}", path=path) from exc
    if fmt is None:
        raise UnsupportedSlideError(
            "not a whole-slide format OpenSlide reads (SVS, generic tiled TIFF, NDPI, MRXS, SCN, "
            "Philips TIFF, Ventana, DICOM WSI); convert it to a pyramidal TIFF",
            path=path,
        )
    try:
        return OpenSlide(str(path))
    except OpenSlideUnsupportedFormatError as exc:
        raise UnsupportedSlideError(f"unsupported format ({fmt}): {exc}", path=path) from exc
    except (OpenSlideError, OSError, ValueError) as exc:
        raise UnsupportedSlideError(
            f"OpenSlide detected {fmt} but could not open it ({exc}); the file is malformed or "
            "truncated",
            path=path,
        ) from exc


def read_rgb(
    handle: OpenSlide, path: Path, location: tuple[int, int], level: int, size: tuple[int, int]
) -> NDArray[np.uint8]:
    """Read a region as RGB uint8 with transparent pixels composited on white.

    Args:
        handle: an open OpenSlide.
        path: the slide's path, for error messages.
        location: level-0 (x, y) of the top-left corner.
        level: pyramid level.
        size: (width, height) in level pixels.
    """
    try:
        rgba: NDArray[np.uint8] = np.asarray(handle.read_region(location, level, size), np.uint8)
    except OpenSlideError as exc:
        raise TileReadError(
            f"corrupt pixel data: {exc}", path=path, l0_xy=location, level=level
        ) from exc
    if rgba[..., 3].min() == 255:  # opaque (almost every tile): no float arithmetic at all
        return np.ascontiguousarray(rgba[..., :3])
    rgb = rgba[..., :3].astype(np.float32)
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    out = rgb * alpha + 255.0 * (1.0 - alpha)
    composited: NDArray[np.uint8] = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return composited


def properties(handle: OpenSlide) -> dict[str, str]:
    """Return the slide's properties as a plain dict."""
    return {str(k): str(v) for k, v in handle.properties.items()}


def thumbnail(handle: OpenSlide, max_px: int) -> Any:
    """Return a PIL thumbnail no larger than ``max_px`` on its longer side."""
    return handle.get_thumbnail((max_px, max_px))


__all__ = ["OpenSlideError"]

PROPERTY_MPP_X = openslide.PROPERTY_NAME_MPP_X
PROPERTY_MPP_Y = openslide.PROPERTY_NAME_MPP_Y
PROPERTY_OBJECTIVE = openslide.PROPERTY_NAME_OBJECTIVE_POWER
PROPERTY_VENDOR = openslide.PROPERTY_NAME_VENDOR
PROPERTY_QUICKHASH = openslide.PROPERTY_NAME_QUICKHASH1
