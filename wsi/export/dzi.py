"""Deep Zoom (DZI) tiles generated on demand from any pyramidal region source, with an LRU cache.

Deep Zoom planes, named by prefix as in openslide-python's ``deepzoom.py``: ``l0_`` slide level-0
pixels, ``lvl_`` pixels of a slide pyramid level, ``z_`` pixels of a Deep Zoom level, ``t_`` tile
indices. Deep Zoom level ``L`` has size ``ceil(l0 / 2**(max_level - L))`` with
``max_level = ceil(log2(max(width, height)))``.
"""

from __future__ import annotations

import io
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Literal, Protocol

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from wsi.export._errors import ExportError

TileFormat = Literal["jpeg", "png"]
#: Largest slide-level block read at once while building one tile (pixels per side).
_MAX_BLOCK_LVL_PX = 2048


class RegionSource(Protocol):
    """What Deep Zoom needs from a slide (``wsi.Slide`` satisfies it)."""

    level_count: int
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]

    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> NDArray[np.uint8]:
        """Read (height, width, 3) RGB at ``level``; ``location`` in level-0 px."""
        ...


#: Turns an RGB region (h, w, 3) into the tile image (e.g. codes → RGBA through a colour map).
TileTransform = Callable[[NDArray[np.uint8]], NDArray[np.uint8]]


class DeepZoom:
    """Deep Zoom pyramid over a region source.

    Args:
        source: the slide (or overlay TIFF) to tile.
        tile_size: tile edge in Deep Zoom pixels (without overlap).
        overlap: pixels added on each inner tile edge.
        fmt: ``"jpeg"`` (slides) or ``"png"`` (overlays with transparency).
        quality: JPEG quality.
        transform: applied to each region before encoding (e.g. colour-map a u8 overlay).
        resample: ``"nearest"`` for coded maps, ``"lanczos"`` for images.
    """

    def __init__(
        self,
        source: RegionSource,
        *,
        tile_size: int = 254,
        overlap: int = 1,
        fmt: TileFormat = "jpeg",
        quality: int = 80,
        transform: TileTransform | None = None,
        resample: Literal["nearest", "lanczos"] = "lanczos",
    ) -> None:
        if tile_size < 1 or overlap < 0 or fmt not in ("jpeg", "png"):
            raise ExportError(
                f"bad Deep Zoom options: tile_size={tile_size}, overlap={overlap}, fmt={fmt!r}"
            )
        self.source = source
        self.tile_size = tile_size
        self.overlap = overlap
        self.fmt: TileFormat = fmt
        self.quality = quality
        self.transform = transform
        self._resample = (
            Image.Resampling.NEAREST if resample == "nearest" else Image.Resampling.LANCZOS
        )
        l0_w, l0_h = source.level_dimensions[0]
        self.l0_dimensions = (l0_w, l0_h)
        self.max_level = max(0, math.ceil(math.log2(max(l0_w, l0_h))))

    @property
    def level_count(self) -> int:
        """Number of Deep Zoom levels (level ``max_level`` is full resolution)."""
        return self.max_level + 1

    def z_dimensions(self, z_level: int) -> tuple[int, int]:
        """Return (width, height) of a Deep Zoom level in its own pixels."""
        self._check_level(z_level)
        scale = 2 ** (self.max_level - z_level)
        return (math.ceil(self.l0_dimensions[0] / scale), math.ceil(self.l0_dimensions[1] / scale))

    def tile_count(self, z_level: int) -> tuple[int, int]:
        """Return (columns, rows) of tiles at a Deep Zoom level."""
        z_w, z_h = self.z_dimensions(z_level)
        return (math.ceil(z_w / self.tile_size), math.ceil(z_h / self.tile_size))

    def dzi_xml(self) -> str:
        """Return the ``.dzi`` descriptor."""
        w, h = self.l0_dimensions
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" '
            f'Format="{"jpeg" if self.fmt == "jpeg" else "png"}" Overlap="{self.overlap}" '
            f'TileSize="{self.tile_size}"><Size Width="{w}" Height="{h}"/></Image>\n'
        )

    def _check_level(self, z_level: int) -> None:
        if not 0 <= z_level <= self.max_level:
            raise ExportError(f"Deep Zoom level {z_level} out of range 0..{self.max_level}")

    def _z_box(self, z_level: int, t_col: int, t_row: int) -> tuple[int, int, int, int]:
        cols, rows = self.tile_count(z_level)
        if not (0 <= t_col < cols and 0 <= t_row < rows):
            raise ExportError(
                f"tile ({t_col}, {t_row}) out of range at level {z_level} ({cols}×{rows} tiles)"
            )
        z_w, z_h = self.z_dimensions(z_level)
        ts, ov = self.tile_size, self.overlap
        z_x0 = t_col * ts - (ov if t_col > 0 else 0)
        z_y0 = t_row * ts - (ov if t_row > 0 else 0)
        z_x1 = min(z_w, (t_col + 1) * ts + ov)
        z_y1 = min(z_h, (t_row + 1) * ts + ov)
        return z_x0, z_y0, z_x1, z_y1

    def _best_level(self, l0_per_z: float) -> int:
        best = 0
        for level, ds in enumerate(self.source.level_downsamples):
            if ds <= l0_per_z + 1e-6:
                best = level
        return best

    def tile_array(self, z_level: int, t_col: int, t_row: int) -> NDArray[np.uint8]:
        """Return the tile's pixels (h, w, 3 or 4) before encoding."""
        z_x0, z_y0, z_x1, z_y1 = self._z_box(z_level, t_col, t_row)
        l0_per_z = float(2 ** (self.max_level - z_level))
        level = self._best_level(l0_per_z)
        z_w, z_h = z_x1 - z_x0, z_y1 - z_y0
        # Blocks of output pixels small enough that their slide-level region stays bounded.
        lvl_per_z = l0_per_z / self.source.level_downsamples[level]
        block = max(1, int(_MAX_BLOCK_LVL_PX // max(lvl_per_z, 1.0)))
        rows = []
        for by in range(0, z_h, block):
            row = [
                self._block(
                    level,
                    l0_per_z,
                    z_x0 + bx,
                    z_y0 + by,
                    min(block, z_w - bx),
                    min(block, z_h - by),
                )
                for bx in range(0, z_w, block)
            ]
            rows.append(np.concatenate(row, axis=1))
        region = np.concatenate(rows, axis=0)
        return self.transform(region) if self.transform is not None else region

    def _block(
        self, level: int, l0_per_z: float, z_x: int, z_y: int, z_w: int, z_h: int
    ) -> NDArray[np.uint8]:
        l0_w, l0_h = self.l0_dimensions
        ds = self.source.level_downsamples[level]
        l0_x, l0_y = int(z_x * l0_per_z), int(z_y * l0_per_z)
        l0_x1 = min(l0_w, math.ceil((z_x + z_w) * l0_per_z))
        l0_y1 = min(l0_h, math.ceil((z_y + z_h) * l0_per_z))
        lvl_w = max(1, math.ceil((l0_x1 - l0_x) / ds))
        lvl_h = max(1, math.ceil((l0_y1 - l0_y) / ds))
        region = self.source.read_region((l0_x, l0_y), level, (lvl_w, lvl_h))
        if region.shape[:2] == (z_h, z_w):
            return region
        img = Image.fromarray(region)
        return np.asarray(img.resize((z_w, z_h), self._resample, reducing_gap=2.0))

    def tile(self, z_level: int, t_col: int, t_row: int) -> bytes:
        """Return the encoded tile (JPEG or PNG bytes)."""
        arr = self.tile_array(z_level, t_col, t_row)
        buf = io.BytesIO()
        if self.fmt == "jpeg":
            Image.fromarray(arr[..., :3]).save(buf, "JPEG", quality=self.quality)
        else:
            Image.fromarray(arr).save(buf, "PNG", compress_level=3)
        return buf.getvalue()


def lut_transform(lut: NDArray[np.uint8]) -> TileTransform:
    """Return a transform colouring a u8 overlay region (first channel) through a (256, 4) LUT."""

    def apply(region: NDArray[np.uint8]) -> NDArray[np.uint8]:
        codes = region[..., 0] if region.ndim == 3 else region
        return np.ascontiguousarray(lut[codes])

    return apply


class TileCache:
    """A thread-safe LRU cache of encoded tiles, bounded in bytes."""

    def __init__(self, max_bytes: int = 64 << 20) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get_or_create(self, key: Hashable, create: Callable[[], bytes]) -> bytes:
        """Return the cached value of ``key``, or create it (outside the lock) and keep it."""
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return found
            self.misses += 1
        value = create()
        with self._lock:
            if key not in self._items and len(value) <= self.max_bytes:
                self._items[key] = value
                self._bytes += len(value)
                while self._bytes > self.max_bytes:
                    _, old = self._items.popitem(last=False)
                    self._bytes -= len(old)
        return value

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
