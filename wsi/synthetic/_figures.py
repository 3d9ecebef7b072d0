"""Vectorised builders of mitotic figures and their look-alikes, as primitives.

Same signature as the builders in ``_cells``: centres (µm), orientation, (N, 32) uniforms, truth
indices. Mitotic chromatin is dense (high haematoxylin), hairy-edged (small chromosome arms) and
sits in a rounded cell with paler cytoplasm; look-alikes are smooth and round (apoptotic,
pyknotic, lymphocyte), scattered dots (karyorrhexis) or soft and smudgy (tangential cuts).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from wsi.synthetic import _prims as P

F64 = NDArray[np.float64]

_CHROM_H = 1.45


def _cat(parts: list[F64]) -> F64:
    return np.concatenate(parts) if parts else np.zeros((0, P.NCOL))


def _rounded_cell(x: F64, y: F64, u: F64, cid: F64, r0: float = 8.0) -> list[F64]:
    r = r0 + 2.0 * u[:, 0]
    body = P.make(
        x,
        y,
        r,
        r * (0.85 + 0.15 * u[:, 1]),
        6.3 * u[:, 2],
        e=0.14,
        h=0.04,
        edge=1.5,
        layer=P.BASE,
        tex=0.3,
        cid=cid,
    )
    clear = P.make(x, y, r * 0.9, r * 0.85, 6.3 * u[:, 2], h=0.3, edge=2.5, layer=P.CLEAR, cid=cid)
    return [clear, body]


def _arms(cx: F64, cy: F64, th: F64, half_len: F64, u: F64, cid: F64, n: int = 6) -> list[F64]:
    """Return little chromosome arms sticking out of a plate centred at (cx, cy) along ``th``."""
    out = []
    for k in range(n):
        t = 2.0 * u[:, k] - 1.0
        side = np.where(u[:, (k + 7) % 32] < 0.5, -1.0, 1.0)
        px = cx + np.cos(th) * t * half_len
        py = cy + np.sin(th) * t * half_len
        arm_t = th + np.pi / 2 + 1.2 * (u[:, (k + 13) % 32] - 0.5)
        arm_l = 0.3 + 0.9 * u[:, (k + 19) % 32]
        out.append(
            P.make(
                px + side * np.cos(arm_t) * (0.7 + arm_l / 2),
                py + side * np.sin(arm_t) * (0.7 + arm_l / 2),
                arm_l,
                0.4,
                arm_t,
                h=_CHROM_H * (0.6 + 0.4 * u[:, (k + 3) % 32]),
                edge=0.45,
                tex=0.3,
                cid=cid,
            )
        )
    return out


def _plate(cx: F64, cy: F64, th: F64, half_len: F64, u: F64, cid: F64, n_arms: int) -> list[F64]:
    harm = P.random_harm(u[:, 20:26], 0.06, 0.1, 0.08)
    core = P.make(
        cx,
        cy,
        half_len,
        1.2 + 0.8 * u[:, 26],
        th,
        h=_CHROM_H + 0.2 * u[:, 27],
        edge=0.5,
        harm=harm,
        tex=0.3,
        cid=cid,
    )
    return [core, *_arms(cx, cy, th, half_len, u, cid, n_arms)]


def metaphase(x: F64, y: F64, th: F64, u: F64, cid: F64) -> F64:
    """Return metaphase plates seen on edge: a dense hairy bar of chromatin."""
    t = 6.3 * u[:, 3]
    half = 4.0 + 2.0 * u[:, 4]
    return _cat([*_rounded_cell(x, y, u[:, 5:8], cid), *_plate(x, y, t, half, u, cid, 8)])


def anaphase(x: F64, y: F64, th: F64, u: F64, cid: F64) -> F64:
    """Return anaphase figures: two parallel chromatin bars moving apart."""
    t = 6.3 * u[:, 3]
    sep = 3.5 + 2.0 * u[:, 4]
    nx, ny = -np.sin(t) * sep, np.cos(t) * sep
    half = 3.2 + 1.3 * u[:, 5]
    body = P.make(
        x, y, 8.0 + 2 * u[:, 6], 10.0 + 2 * u[:, 6], t, e=0.30, edge=1.0, layer=P.BASE, cid=cid
    )
    clear = P.make(x, y, 6.5, 8.5, t, h=0.35, edge=1.5, layer=P.CLEAR, cid=cid)
    p1 = _plate(x + nx, y + ny, t + 0.15 * (u[:, 8] - 0.5), half, u, cid, 5)
    p2 = _plate(x - nx, y - ny, t + 0.15 * (u[:, 9] - 0.5), half, u[:, ::-1], cid, 5)
    return _cat([clear, body, *p1, *p2])


def prophase(x: F64, y: F64, th: F64, u: F64, cid: F64) -> F64:
    """Return prophase / prometaphase: a round nucleus of condensed thread-like chromatin clumps."""
    r = 4.0 + 1.5 * u[:, 3]
    parts = [*_rounded_cell(x, y, u[:, 4:7], cid, 9.0)]
    parts.append(P.make(x, y, r, r * 0.9, 6.3 * u[:, 7], h=0.35, edge=0.6, tex=0.3, cid=cid))
    for k in range(14):
        rr = r * 0.85 * np.sqrt(u[:, (8 + k) % 32])
        aa = 6.3 * u[:, (9 + k * 2) % 32]
        parts.append(
            P.make(
                x + rr * np.cos(aa),
                y + rr * np.sin(aa),
                0.8 + 0.9 * u[:, (10 + k) % 32],
                0.45 + 0.2 * u[:, (11 + k) % 32],
                6.3 * u[:, (12 + k) % 32],
                h=_CHROM_H,
                edge=0.3,
                cid=cid,
            )
        )
    return _cat(parts)


def tripolar_spokes(x: F64, y: F64, th: F64, u: F64, cid: F64) -> F64:
    """Return atypical tripolar figures: three radiating chromatin spokes from a central hub."""
    parts = [*_rounded_cell(x, y, u[:, 0:3], cid, 10.0)]
    parts.append(P.make(x, y, 1.6 + 0.5 * u[:, 3], 1.5, h=_CHROM_H + 0.1, edge=0.35, cid=cid))
    base = 6.3 * u[:, 4]
    for k in range(3):
        ang = base + k * 2.094 + 0.5 * (u[:, 5 + k] - 0.5)
        half = 2.2 + 1.6 * u[:, 8 + k]
        cx = x + np.cos(ang) * (half + 0.6)
        cy = y + np.sin(ang) * (half + 0.6)
        harm = P.random_harm(u[:, 11 + k : 17 + k], 0.05, 0.08, 0.06)
        parts.append(
            P.make(
                cx,
                cy,
                half + 0.4,
                0.8 + 0.4 * u[:, 17 + k],
                ang,
                h=_CHROM_H,
                edge=0.3,
                harm=harm,
                tex=0.15,
                cid=cid,
            )
        )
        parts.extend(_arms(cx, cy, ang, half, np.roll(u, 5 * k, axis=1), cid, 3))
    return _cat(parts)


def tripolar_groups(x: F64, y: F64, th: F64, u: F64, cid: F64) -> F64:
    """Return atypical tripolar figures: three chromosome groups at 120° around the centre."""
    parts = [*_rounded_cell(x, y, u[:, 0:3], cid, 10.5)]
    base = 6.3 * u[:, 4]
    for k in range(3):
        ang = base + k * 2.094 + 0.45 * (u[:, 5 + k] - 0.5)
        rad = 4.0 + 1.8 * u[:, 8 + k]
        cx = x + np.cos(ang) * rad
        cy = y + np.sin(ang) * rad
        parts.extend(
            _plate(
                cx, cy, ang + np.pi / 2, 1.8 + 1.0 * u[:, 11 + k], np.roll(u, 7 * k, axis=1), cid, 3
            )
        )
    return _cat(parts)


def apoptotic(x: F64, y: F64, th: F64, u: F64, cid: F64) -> F64:
    """Return apoptotic bodies: shrunken eosinophilic body, round dense fragments, clear halo."""
    r = 3.5 + 1.5 * u[:, 3]
    halo = P.make(x, y, r + 2.2, r + 2.0, 6.3 * u[:, 4], h=0.75, edge=1.2, layer=P.CLEAR, cid=cid)
    body = P.make(
        x,
        y,
        r,
        r * (0.85 + 0.15 * u[:, 5]),
        6.3 * u[:, 4],
        e=0.65,
        h=0.12,
        edge=0.6,
        tex=0.3,
        layer=P.TOP,
        cid=cid,
    )
    parts = [halo, body]
    n = 1 + (u[:, 6] * 3.99).astype(int)
    for k in range(4):
        rr = 0.55 * r * np.sqrt(u[:, 7 + k])
        aa = 6.3 * u[:, 11 + k]
        fr = np.where(n > k, 0.8 + 1.1 * u[:, 15 + k], 0.0)
        parts.append(
            P.make(x + rr * np.cos(aa), y + rr * np.sin(aa), fr, fr, h=1.7, edge=0.3, cid=cid)
        )
    return _cat(parts)


def pyknotic(x: F64, y: F64, th: F64, u: F64, cid: F64) -> F64:
    """Return pyknotic nuclei: small, round, homogeneous and very dark."""
    r = 2.0 + 0.9 * u[:, 3]
    halo = P.make(x, y, r + 1.5, r + 1.5, h=0.35, edge=1.0, layer=P.CLEAR, cid=cid)
    cyto = P.make(x, y, r + 3.0, r + 2.5, 6.3 * u[:, 4], e=0.45, edge=0.8, layer=P.BASE, cid=cid)
    nuc = P.make(x, y, r * 1.05, r, 6.3 * u[:, 4], h=1.6, edge=0.4, tex=0.05, cid=cid)
    return _cat([cyto, halo, nuc])


def karyorrhectic(x: F64, y: F64, th: F64, u: F64, cid: F64) -> F64:
    """Return karyorrhectic debris: a loose cluster of dark nuclear dust."""
    parts = []
    for k in range(12):
        rr = 4.5 * np.sqrt(u[:, k])
        aa = 6.3 * u[:, 12 + k]
        fr = 0.35 + 0.75 * u[:, (24 + k) % 32] ** 2
        parts.append(
            P.make(
                x + rr * np.cos(aa), y + rr * np.sin(aa), fr, fr * 0.85, h=1.6, edge=0.25, cid=cid
            )
        )
    return _cat(parts)


def tangential(x: F64, y: F64, th: F64, u: F64, cid: F64) -> F64:
    """Return tangentially cut nuclei: small, blurred, dark and coarsely textured."""
    r = 2.6 + 1.2 * u[:, 3]
    cyto = P.make(x, y, 8.0, 7.0, 6.3 * u[:, 4], e=0.3, edge=1.5, layer=P.BASE, cid=cid)
    nuc = P.make(
        x,
        y,
        r * 1.3,
        r,
        6.3 * u[:, 4],
        h=1.05 + 0.3 * u[:, 5],
        edge=1.4,
        harm=P.random_harm(u[:, 7:13], 0.1, 0.12, 0.08),
        tex=0.7,
        cid=cid,
    )
    return _cat([cyto, nuc])
