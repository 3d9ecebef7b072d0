"""Vectorised builders of macrophages (foamy and ramified) as primitives.

Same signature as the builders in ``_cells``. Macrophage cytoplasm and extensions carry DAB, so
the IHC stains (CD68, CD163) show them brown; in H&E the extensions are nearly invisible.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from wsi.synthetic import _prims as P
from wsi.synthetic._cells import _cat, _nucleus

F64 = NDArray[np.float64]


def macrophage_foamy(x: F64, y: F64, th: F64, u: F64, cid: F64) -> F64:
    """Return foamy macrophages: large pale vacuolated cytoplasm, oval or kidney nucleus."""
    r = 7.5 + 5.0 * u[:, 3]
    cyto = P.make(
        x,
        y,
        r,
        r * (0.75 + 0.25 * u[:, 4]),
        6.3 * u[:, 5],
        e=0.17,
        h=0.04,
        d=0.9,
        edge=1.0,
        harm=P.random_harm(u[:, 7:13], 0.08, 0.1, 0.06),
        tex=0.6,
        layer=P.BASE,
        cid=cid,
    )
    ang = 6.3 * u[:, 13]
    off = 0.45 * r
    nx = x + off * np.cos(ang)
    ny = y + off * np.sin(ang)
    harm = np.zeros((x.size, 6))
    harm[:, 2] = -0.12 - 0.1 * u[:, 14]  # peanut / kidney indentation
    harm[:, 0] = 0.08
    harm[:, 1] = np.pi
    nuc = _nucleus(
        nx,
        ny,
        3.6 + 1.0 * u[:, 15],
        2.5 + 0.6 * u[:, 16],
        ang + np.pi / 2,
        0.5 + 0.15 * u[:, 17],
        harm,
        cid,
        0.5,
        0.25,
    )
    vac = []
    for k in range(12):
        va = 6.3 * u[:, (17 + k) % 32]
        vr = r * 0.75 * np.sqrt(u[:, (24 + k) % 32])
        rad = 0.45 + (0.6 if k < 9 else 1.4) * u[:, (3 + 2 * k) % 32]
        vac.append(
            P.make(
                x + vr * np.cos(va),
                y + vr * np.sin(va),
                rad,
                rad,
                h=0.6,
                edge=0.3,
                layer=P.CLEAR,
                cid=cid,
            )
        )
    return _cat([cyto, *vac, *nuc])


def _arm(
    x0: F64, y0: F64, ang: F64, u: F64, cid: F64, widths: tuple[float, ...], col: int
) -> tuple[list[F64], F64, F64, F64]:
    """Return a wiggly tapering chain of thin segments from (x0, y0), and its end and heading."""
    parts = []
    for i, wid in enumerate(widths):
        ang = ang + 0.7 * (u[:, (col + 2 * i) % 32] - 0.5)
        seg = 4.0 + 6.0 * u[:, (col + 2 * i + 1) % 32]
        cx, cy = x0 + seg / 2 * np.cos(ang), y0 + seg / 2 * np.sin(ang)
        parts.append(
            P.make(
                cx,
                cy,
                seg / 2 + 0.6,
                wid,
                ang,
                e=0.05,
                d=0.95 - 0.12 * i,
                edge=0.3,
                layer=P.BASE,
                cid=cid,
            )
        )
        x0, y0 = x0 + seg * np.cos(ang), y0 + seg * np.sin(ang)
    return parts, x0, y0, ang


def macrophage_ramified(x: F64, y: F64, th: F64, u: F64, cid: F64) -> F64:
    """Return ramified macrophages: small body, long thin branching extensions (a network)."""
    r = 4.5 + 1.5 * u[:, 3]
    body = P.make(
        x,
        y,
        r,
        r * 0.8,
        6.3 * u[:, 4],
        e=0.12,
        d=1.0,
        edge=0.8,
        tex=0.4,
        layer=P.BASE,
        harm=P.random_harm(u[:, 7:13], 0.1, 0.15, 0.1),
        cid=cid,
    )
    nuc = _nucleus(
        x,
        y,
        4.0 + u[:, 5],
        1.9 + 0.5 * u[:, 6],
        6.3 * u[:, 4],
        0.65 + 0.1 * u[:, 7],
        P.random_harm(u[:, 13:19], 0.06, 0.12, 0.06),
        cid,
        0.4,
        0.2,
    )
    parts = [body, *nuc]
    n_arms = 3 + (u[:, 8] > 0.5)
    for k in range(4):
        ang = 6.3 * (k + 0.6 * u[:, 19 + k]) / 4
        arm, ex, ey, head = _arm(
            x + 0.8 * r * np.cos(ang),
            y + 0.8 * r * np.sin(ang),
            ang,
            u,
            cid,
            (0.55, 0.45, 0.38),
            3 + 5 * k,
        )
        branch, _, _, _ = _arm(
            ex - 3.0 * np.cos(head),
            ey - 3.0 * np.sin(head),
            head + np.where(u[:, 23 + k] < 0.5, -0.9, 0.9),
            u,
            cid,
            (0.4, 0.32),
            11 + 3 * k,
        )
        keep = (k < n_arms).astype(float)
        for p in (*arm, *branch):
            p[:, P.CH : P.CD + 1] *= keep[:, None]
        parts.extend([*arm, *branch])
    return _cat(parts)
