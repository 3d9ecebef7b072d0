"""Deterministic hashed noise in absolute coordinates.

Every random texture in the generator is a pure function of absolute position (µm or pixel index)
and a seed, so two windows that share pixels render them identically, whatever the tiling.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]

_M1 = np.uint32(0x8DA6B343)
_M2 = np.uint32(0xD8163841)
_M3 = np.uint32(0xCB1AB31F)
_F1 = np.uint32(0x7FEB352D)
_F2 = np.uint32(0x846CA68B)


def mix_seed(*parts: int) -> int:
    """Combine integers into one 32-bit seed (order matters)."""
    h = 0x9E3779B9
    for p in parts:
        h ^= (int(p) & 0xFFFFFFFF) + 0x9E3779B9 + ((h << 6) & 0xFFFFFFFF) + (h >> 2)
        h &= 0xFFFFFFFF
        h = ((h ^ (h >> 16)) * 0x7FEB352D) & 0xFFFFFFFF
        h = ((h ^ (h >> 15)) * 0x846CA68B) & 0xFFFFFFFF
        h ^= h >> 16
    return h


def hash_uniform(
    ix: NDArray[np.int64], iy: NDArray[np.int64], seed: NDArray[np.uint32] | int
) -> F32:
    """Return uniform [0, 1) floats hashed from integer lattice coordinates and a seed.

    Args:
        ix: integer x lattice coordinates (any shape, may be negative).
        iy: integer y lattice coordinates, broadcastable with ``ix``.
        seed: 32-bit seed(s), broadcastable with ``ix``.
    """
    with np.errstate(over="ignore"):
        h = (ix.astype(np.uint32) * _M1) ^ (iy.astype(np.uint32) * _M2)
        h = h ^ (np.asarray(seed, dtype=np.uint32) * _M3)
        h ^= h >> np.uint32(16)
        h *= _F1
        h ^= h >> np.uint32(15)
        h *= _F2
        h ^= h >> np.uint32(16)
    out: F32 = (h >> np.uint32(8)).astype(np.float32) * np.float32(1.0 / (1 << 24))
    return out


def _smooth(t: F64) -> F64:
    return t * t * (3.0 - 2.0 * t)


def noise_points(x: F64, y: F64, scale: F64, seed: NDArray[np.uint32]) -> F64:
    """Evaluate smooth value noise (range [0, 1]) at scattered points.

    Args:
        x: (N,) x in µm.
        y: (N,) y in µm.
        scale: (K, 1) lattice spacing in µm of each of K layers.
        seed: (K, 1) seed of each layer.

    Returns:
        (K, N) noise values.
    """
    u = x[None, :] / scale
    v = y[None, :] / scale
    iu = np.floor(u)
    iv = np.floor(v)
    tu = _smooth(u - iu)
    tv = _smooth(v - iv)
    i0 = iu.astype(np.int64)
    j0 = iv.astype(np.int64)
    a = hash_uniform(i0, j0, seed)
    b = hash_uniform(i0 + 1, j0, seed)
    c = hash_uniform(i0, j0 + 1, seed)
    d = hash_uniform(i0 + 1, j0 + 1, seed)
    top = a + (b - a) * tu
    bot = c + (d - c) * tu
    out: F64 = top + (bot - top) * tv
    return out


def noise_grid(
    gx0: int,
    gy0: int,
    w: int,
    h: int,
    px_um: float,
    scale_um: float,
    seed: int,
    offset: float = 0.5,
) -> F32:
    """Evaluate smooth value noise on a pixel grid, cheaply (separable interpolation).

    Pixel (i, j) of the window has its centre at ((gx0 + j + 0.5) * px_um, (gy0 + i + 0.5) * px_um)
    µm, so windows that share absolute pixels get identical values.

    Args:
        gx0: window left edge, in pixels of a grid with spacing ``px_um``.
        gy0: window top edge, same grid.
        w: window width in pixels.
        h: window height in pixels.
        px_um: pixel spacing in µm.
        scale_um: noise lattice spacing in µm.
        seed: 32-bit seed.
        offset: sample position inside a pixel (0.5 = centre, 0 = corner / lattice node).

    Returns:
        (h, w) float32 in [0, 1].
    """
    u = (np.arange(gx0, gx0 + w, dtype=np.float64) + offset) * (px_um / scale_um)
    v = (np.arange(gy0, gy0 + h, dtype=np.float64) + offset) * (px_um / scale_um)
    iu = np.floor(u).astype(np.int64)
    iv = np.floor(v).astype(np.int64)
    tu = _smooth(u - iu).astype(np.float32)
    tv = _smooth(v - iv).astype(np.float32)
    u_lo, v_lo = int(iu[0]), int(iv[0])
    lat_x = np.arange(u_lo, int(iu[-1]) + 2, dtype=np.int64)
    lat_y = np.arange(v_lo, int(iv[-1]) + 2, dtype=np.int64)
    lat = hash_uniform(lat_x[None, :], lat_y[:, None], seed)
    ry = iv - v_lo
    rows = lat[ry] * (1.0 - tv)[:, None] + lat[ry + 1] * tv[:, None]
    cx = iu - u_lo
    out: F32 = rows[:, cx] * (1.0 - tu)[None, :] + rows[:, cx + 1] * tu[None, :]
    return out


def fbm_grid(
    gx0: int,
    gy0: int,
    w: int,
    h: int,
    px_um: float,
    scale_um: float,
    seed: int,
    octaves: int = 3,
) -> F32:
    """Return fractal (multi-octave) value noise on a pixel grid, normalised to about [0, 1]."""
    total = np.zeros((h, w), np.float32)
    amp, norm = 1.0, 0.0
    for o in range(octaves):
        total += np.float32(amp) * noise_grid(
            gx0, gy0, w, h, px_um, scale_um / (2**o), mix_seed(seed, o)
        )
        norm += amp
        amp *= 0.5
    return total / np.float32(norm)


def white_grid(gx0: int, gy0: int, w: int, h: int, seed: int) -> F32:
    """Return per-pixel uniform [0, 1) noise hashed from absolute pixel indices."""
    ix = np.arange(gx0, gx0 + w, dtype=np.int64)[None, :]
    iy = np.arange(gy0, gy0 + h, dtype=np.int64)[:, None]
    return hash_uniform(ix, iy, seed)


def white_grid3(gx0: int, gy0: int, w: int, h: int, seed: int) -> F32:
    """Return (3, h, w) per-pixel uniform [0, 1) noise from one hash (10 bits per plane)."""
    ix = np.arange(gx0, gx0 + w, dtype=np.int64)[None, :]
    iy = np.arange(gy0, gy0 + h, dtype=np.int64)[:, None]
    u = (hash_uniform(ix, iy, seed) * np.float32(1 << 24)).astype(np.uint32)
    out = np.empty((3, h, w), np.float32)
    for c in range(3):
        out[c] = ((u >> np.uint32(7 * c)) & np.uint32(127)).astype(np.float32) * np.float32(1 / 128)
    return out
