"""atc-wsi slide layer: reading, tissue detection, tiling, synthetic slides, torch-free writers.

This package never imports torch.
"""

from wsi.errors import (
    ImplausibleMppError,
    InvalidTilingError,
    MissingMppError,
    RegionTooLargeError,
    SlideNotFoundError,
    SlideTooLargeError,
    TileReadError,
    UnsupportedSlideError,
    WsiError,
)
from wsi.settings import SlideSettings, TilingSettings, TissueSettings
from wsi.slide import Slide, open_slide
from wsi.tiling import TileGrid, TileReader, TileSample, build_tile_grid
from wsi.tissue import TissueMask, compute_tissue_mask

__all__ = [
    "ImplausibleMppError",
    "InvalidTilingError",
    "MissingMppError",
    "RegionTooLargeError",
    "Slide",
    "SlideNotFoundError",
    "SlideSettings",
    "SlideTooLargeError",
    "TileGrid",
    "TileReadError",
    "TileReader",
    "TileSample",
    "TilingSettings",
    "TissueMask",
    "TissueSettings",
    "UnsupportedSlideError",
    "WsiError",
    "build_tile_grid",
    "compute_tissue_mask",
    "open_slide",
]
