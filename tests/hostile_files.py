"""Hostile slide files for tests, written byte by byte (no fixtures here)."""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

import numpy as np


def write_repeated_tile_tiff(
    path: Path, width: int, height: int, *, tile: int = 4096, px_per_cm: float = 40_000.0
) -> Path:
    """Write a single-level tiled TIFF whose every tile entry points at one deflate tile.

    The header claims ``width`` × ``height`` px at ``1e4 / px_per_cm`` µm/px (0.25 by default);
    the file stays small (4 + 4 bytes per tile in the tile tables, one compressed tile), which is
    what an attacker (or a broken converter) uploads to make a worker decode terapixels.
    """
    pixels = np.full((tile, tile, 3), 235, dtype=np.uint8)
    pixels[tile // 4 : tile // 2, tile // 4 : tile // 2] = (200, 110, 170)  # some "tissue"
    data = zlib.compress(pixels.tobytes(), 9)
    n_tiles = math.ceil(width / tile) * math.ceil(height / tile)
    entries: list[tuple[int, int, int, bytes | int]] = []  # (tag, type, count, value/bytes)
    # layout: header (8) | IFD | extra data (bits, resolutions, offsets, counts) | tile data
    n_entries = 14
    ifd_size = 2 + 12 * n_entries + 4
    extra_at = 8 + ifd_size
    bits = struct.pack("<3H", 8, 8, 8)
    res = struct.pack("<2I", int(px_per_cm), 1)
    bits_at = extra_at
    xres_at = bits_at + len(bits)
    yres_at = xres_at + len(res)
    offsets_at = yres_at + len(res)
    counts_at = offsets_at + 4 * n_tiles
    tile_at = counts_at + 4 * n_tiles
    entries = [
        (256, 4, 1, width),  # ImageWidth
        (257, 4, 1, height),  # ImageLength
        (258, 3, 3, bits_at),  # BitsPerSample
        (259, 3, 1, 8),  # Compression: deflate
        (262, 3, 1, 2),  # Photometric: RGB
        (277, 3, 1, 3),  # SamplesPerPixel
        (282, 5, 1, xres_at),  # XResolution
        (283, 5, 1, yres_at),  # YResolution
        (284, 3, 1, 1),  # PlanarConfiguration: contiguous
        (296, 3, 1, 3),  # ResolutionUnit: centimetre
        (322, 4, 1, tile),  # TileWidth
        (323, 4, 1, tile),  # TileLength
        (324, 4, n_tiles, offsets_at),  # TileOffsets
        (325, 4, n_tiles, counts_at),  # TileByteCounts
    ]
    assert len(entries) == n_entries
    out = bytearray(b"II*\x00" + struct.pack("<I", 8))
    out += struct.pack("<H", n_entries)
    for tag, typ, count, value in entries:
        if typ == 3 and count == 1:
            out += struct.pack("<HHIHH", tag, typ, count, int(value), 0)
        else:
            out += struct.pack("<HHII", tag, typ, count, int(value))
    out += struct.pack("<I", 0)
    out += bits + res + res
    out += struct.pack("<I", tile_at) * n_tiles
    out += struct.pack("<I", len(data)) * n_tiles
    out += data
    path.write_bytes(bytes(out))
    return path
