"""Vectorised rasterisation of primitives into concentration planes.

Primitives are grouped by the size of their bounding box; each group is evaluated as one
(n, k, k) array and accumulated with ``np.bincount``. Output planes: base H, E, DAB, clear, top
H, E, DAB.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from wsi.synthetic import _prims as P

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]

NPLANES = 7
_BUCKETS = (
    3,
    5,
    7,
    9,
    13,
    17,
    25,
    33,
    49,
    65,
    97,
    129,
    193,
    257,
    385,
    513,
    769,
    1025,
    1537,
    2049,
    4097,
)
_MAX_ELEMS = 1_500_000
_SMALL = 5  # index into _BUCKETS (box edge 17 px)


def _subpixel(p: F64, px_um: float) -> F64:
    """Widen primitives thinner than a pixel and keep their integrated density."""
    q = p.copy()
    s2 = (0.45 * px_um) ** 2
    a2 = np.sqrt(q[:, P.A] ** 2 + s2)
    b2 = np.sqrt(q[:, P.B] ** 2 + s2)
    ring = q[:, P.RING] > 0
    fac = np.where(ring, 1.0, (q[:, P.A] * q[:, P.B]) / (a2 * b2))
    t2 = np.sqrt(q[:, P.RING] ** 2 + s2)
    fac = np.where(ring, q[:, P.RING] / t2, fac)
    q[:, P.RING] = np.where(ring, t2, 0.0)
    q[:, P.A] = a2
    q[:, P.B] = b2
    q[:, P.CH : P.CD + 1] *= fac[:, None]
    q[:, P.EDGE] = np.sqrt(q[:, P.EDGE] ** 2 + (0.5 * px_um) ** 2)
    return q


def _shape(q: F64, dx: F32, dy: F32) -> F32:
    """Return coverage in [0, 1] of primitives ``q`` at offsets dx (n, 1, kx), dy (n, ky, 1) µm.

    The signed distance to the outline is approximated as ``(ρ − r(φ)) · min(a, b)``, exact across
    the minor axis; along the major axis of elongated shapes the edge is softer (tapered ends).
    """
    c = np.cos(q[:, P.TH]).astype(np.float32)[:, None, None]
    s = np.sin(q[:, P.TH]).astype(np.float32)[:, None, None]
    ia = (1.0 / q[:, P.A]).astype(np.float32)[:, None, None]
    ib = (1.0 / q[:, P.B]).astype(np.float32)[:, None, None]
    ua = (dx * c + dy * s) * ia
    vb = (dy * c - dx * s) * ib
    rho = np.sqrt(ua * ua + vb * vb)
    scale = (np.minimum(q[:, P.A], q[:, P.B]) / q[:, P.EDGE]).astype(np.float32)[:, None, None]
    if np.any(q[:, P.H1 : P.P3 + 1 : 2] != 0):
        inv = 1.0 / (rho + np.float32(1e-6))
        cp = ua * inv
        sp = vb * inv
        r = _harmonic_radius(q, cp, sp)
        d = rho - r
    else:
        d = rho - np.float32(1.0)
    ring = q[:, P.RING]
    if np.any(ring > 0):
        t = (ring / np.minimum(q[:, P.A], q[:, P.B])).astype(np.float32)[:, None, None]
        d = np.where(t > 0, np.abs(d + t / 2) - t / 2, d)
    d *= scale
    np.subtract(np.float32(0.5), d, out=d)
    out: F32 = np.clip(d, 0.0, 1.0, out=d)
    return out


def _harmonic_radius(q: F64, cp: F32, sp: F32) -> F32:
    """Return the outline radius 1 + Σ h_k cos(kφ − p_k) from cos φ, sin φ."""

    def col(i: int) -> F32:
        return q[:, i].astype(np.float32)[:, None, None]

    c2 = 2 * cp * cp - 1
    s2 = 2 * sp * cp
    c3 = cp * (4 * cp * cp - 3)
    s3 = sp * (3 - 4 * sp * sp)
    r: F32 = (
        1.0
        + col(P.H1) * (cp * np.cos(col(P.P1)) + sp * np.sin(col(P.P1)))
        + col(P.H2) * (c2 * np.cos(col(P.P2)) + s2 * np.sin(col(P.P2)))
        + col(P.H3) * (c3 * np.cos(col(P.P3)) + s3 * np.sin(col(P.P3)))
    )
    return r


def _plane_weights(q: F64) -> F64:
    """Return (n, NPLANES) weight of each primitive in each output plane."""
    w = np.zeros((len(q), NPLANES))
    lay = q[:, P.LAYER]
    base, clear, top = lay == P.BASE, lay == P.CLEAR, lay == P.TOP
    w[base, 0:3] = q[base, P.CH : P.CD + 1]
    w[clear, 3] = q[clear, P.CH]
    w[top, 4:7] = q[top, P.CH : P.CD + 1]
    return w


def splat(
    prims: F64,
    gx0: int,
    gy0: int,
    w: int,
    h: int,
    px_um: float,
    tex: F32,
    planes: tuple[int, ...] = tuple(range(NPLANES)),
) -> F32:
    """Rasterise primitives (µm) into (NPLANES, h, w) planes of a window.

    Only ``planes`` are computed; the others are returned as zeros.

    Args:
        prims: primitive table (µm).
        gx0: window left edge in pixels of the grid with spacing ``px_um``.
        gy0: window top edge, same grid.
        w: width in pixels.
        h: height in pixels.
        px_um: pixel spacing in µm.
        tex: (h, w) chromatin texture in [0, 1].
    """
    out = np.zeros((NPLANES, h, w), np.float32)
    if len(prims) == 0:
        return out
    keep = np.zeros(NPLANES, bool)
    keep[list(planes)] = True
    q = _subpixel(prims, px_um)
    cx = q[:, P.X] / px_um - gx0 - 0.5
    cy = q[:, P.Y] / px_um - gy0 - 0.5
    hx, hy = P.half_box_um(q)
    hx, hy = hx / px_um, hy / px_um
    vis = (cx + hx >= 0) & (cx - hx <= w - 1) & (cy + hy >= 0) & (cy - hy <= h - 1)
    vis &= np.abs(_plane_weights(q)[:, keep]).sum(axis=1) > 0
    q, cx, cy, hx, hy = q[vis], cx[vis], cy[vis], hx[vis], hy[vis]
    buckets = np.array(_BUCKETS)
    bx = np.minimum(np.searchsorted(buckets, 2 * np.ceil(hx) + 1), len(_BUCKETS) - 1)
    by = np.minimum(np.searchsorted(buckets, 2 * np.ceil(hy) + 1), len(_BUCKETS) - 1)
    harm = np.any(q[:, P.H1 : P.P3 + 1 : 2] != 0, axis=1)
    # Small boxes: fewer, square groups (Python overhead per group outweighs the wasted pixels).
    small = np.maximum(bx, by) <= _SMALL
    bx = np.where(small, np.maximum(bx, by), bx)
    by = np.where(small, bx, by)
    harm = np.where(small, True, harm)
    key = (bx * 64 + by) * 2 + harm
    tex_flat = tex.ravel()
    slots = np.full(NPLANES, -1)
    slots[keep] = np.arange(int(keep.sum()))
    idx_parts: list[NDArray[np.int64]] = []
    w_parts: list[F32] = []
    for kk in np.unique(key):
        kx, ky = _BUCKETS[kk // 128], _BUCKETS[(kk // 2) % 64]
        idx_all = np.flatnonzero(key == kk)
        step = max(1, _MAX_ELEMS // (kx * ky))
        for s0 in range(0, idx_all.size, step):
            sel = idx_all[s0 : s0 + step]
            i_p, w_p = _splat_group(
                q[sel], cx[sel], cy[sel], kx, ky, gx0, gy0, w, h, px_um, tex_flat, slots
            )
            idx_parts.extend(i_p)
            w_parts.extend(w_p)
    if not idx_parts:
        return out
    nk = int(keep.sum())
    acc = np.bincount(
        np.concatenate(idx_parts), weights=np.concatenate(w_parts), minlength=nk * h * w
    )
    out[keep] = acc.reshape(nk, h, w)
    return out


def _splat_group(
    q: F64,
    cx: F64,
    cy: F64,
    bkx: int,
    bky: int,
    gx0: int,
    gy0: int,
    w: int,
    h: int,
    px_um: float,
    tex_flat: F32,
    slots: NDArray[np.int64],
) -> tuple[list[NDArray[np.int64]], list[F32]]:
    kx, ky = min(bkx, w), min(bky, h)
    # Boxes are shifted (not cropped) to lie inside the window: the in-window part stays covered.
    sx = np.clip(np.rint(cx).astype(np.int64) - bkx // 2, 0, w - kx)
    sy = np.clip(np.rint(cy).astype(np.int64) - bky // 2, 0, h - ky)
    ix = sx[:, None] + np.arange(kx)  # (n, kx)
    iy = sy[:, None] + np.arange(ky)
    dx = ((ix + gx0 + 0.5) * px_um - q[:, P.X, None]).astype(np.float32)[:, None, :]
    dy = ((iy + gy0 + 0.5) * px_um - q[:, P.Y, None]).astype(np.float32)[:, :, None]
    cov = _shape(q, dx, dy)
    flat = iy[:, :, None] * w + ix[:, None, :]
    texa = q[:, P.TEX].astype(np.float32)[:, None, None]
    if np.any(texa > 0):
        cov = cov * np.maximum(1.0 + texa * (4.0 * tex_flat[flat] - 2.0), 0.0)
    weights = _plane_weights(q)
    idx_parts: list[NDArray[np.int64]] = []
    w_parts: list[F32] = []
    for p in range(NPLANES):
        if slots[p] < 0:
            continue
        sel = np.flatnonzero(weights[:, p] != 0)
        if sel.size == 0:
            continue
        idx_parts.append((flat[sel] + int(slots[p]) * h * w).ravel())
        w_parts.append((cov[sel] * weights[sel, p, None, None].astype(np.float32)).ravel())
    return idx_parts, w_parts
