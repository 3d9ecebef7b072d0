"""Vectorised builders of ordinary cells (tumour, stromal, immune, epithelial) as primitives.

Each builder takes centres ``x, y`` (µm), an orientation ``th`` (radians), a (N, 32) matrix of
uniform random numbers ``u`` (the cell's private randomness) and the cells' truth indices ``cid``,
and returns primitive rows (see ``_prims``).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from wsi.synthetic import _prims as P

F64 = NDArray[np.float64]


def _cat(parts: list[F64]) -> F64:
    return np.concatenate(parts) if parts else np.zeros((0, P.NCOL))


def _nucleus(
    x: F64,
    y: F64,
    a: F64,
    b: F64,
    th: F64,
    h: F64,
    harm: F64,
    cid: F64,
    tex: float,
    membrane: float = 0.0,
) -> list[F64]:
    """Return a nucleus: textured chromatin, plus a darker membrane ring if ``membrane`` > 0."""
    body = P.make(x, y, a, b, th, h=h, edge=0.45, harm=harm, tex=tex, cid=cid)
    if membrane <= 0:
        return [body]
    ring = P.make(
        x,
        y,
        a,
        b,
        th,
        h=membrane * np.ones_like(h),
        edge=0.35,
        harm=harm,
        ring=0.45,
        tex=0.3,
        cid=cid,
    )
    return [body, ring]


def _nucleolus(x: F64, y: F64, u: F64, cid: F64, scale: float) -> F64:
    r = scale * (0.45 + 0.35 * u[:, 0])
    return P.make(
        x + 1.2 * (u[:, 1] - 0.5), y + 1.2 * (u[:, 2] - 0.5), r, r, h=0.9, e=0.5, edge=0.3, cid=cid
    )


def spindle(x: F64, y: F64, th: F64, u: F64, cid: F64) -> F64:
    """Return spindle tumour cells: elongated hyperchromatic nuclei in fascicles, fibres between."""
    t = th + 0.35 * (u[:, 3] - 0.5)
    nuc = P.make(
        x,
        y,
        4.5 + 3.5 * u[:, 4],
        1.4 + 0.9 * u[:, 5],
        t,
        h=0.75 + 0.35 * u[:, 6],
        edge=0.45,
        harm=P.random_harm(u[:, 7:13], 0.08, 0.08, 0.05),
        tex=0.5,
        cid=cid,
    )
    cyto = P.make(
        x,
        y,
        10.0 + 4 * u[:, 13],
        3.2 + u[:, 14],
        t,
        e=0.2,
        h=0.06,
        edge=1.8,
        layer=P.BASE,
        tex=0.3,
        cid=cid,
    )
    off = 4.0 + 3.0 * u[:, 15]
    fx = x - np.sin(t) * off
    fy = y + np.cos(t) * off
    fib = P.make(
        fx,
        fy,
        12.0 + 8 * u[:, 16],
        0.6 + 0.5 * u[:, 17],
        t + 0.15 * (u[:, 18] - 0.5),
        e=0.22,
        edge=0.6,
        layer=P.BASE,
        cid=cid,
    )
    return _cat([nuc, cyto, fib])


def pleomorphic(x: F64, y: F64, th: F64, u: F64, cid: F64) -> F64:
    """Return pleomorphic tumour cells: huge irregular nuclei, some multinucleated."""
    r = 3.5 + 7.0 * u[:, 3] ** 2.2
    nuc = _nucleus(
        x,
        y,
        r * (1.0 + 0.4 * u[:, 4]),
        r,
        6.3 * u[:, 5],
        0.6 + 0.45 * u[:, 6],
        P.random_harm(u[:, 7:13], 0.18, 0.16, 0.12),
        cid,
        0.6,
        0.3,
    )
    cr = 1.6 * r + 5.0 + 4.0 * u[:, 13]
    cyto = P.make(
        x,
        y,
        cr,
        cr * (0.7 + 0.25 * u[:, 14]),
        6.3 * u[:, 15],
        e=0.3,
        h=0.08,
        edge=1.5,
        harm=P.random_harm(u[:, 16:22], 0.1, 0.12, 0.06),
        layer=P.BASE,
        tex=0.25,
        cid=cid,
    )
    multi = u[:, 22] < 0.2
    ang = 6.3 * u[multi, 23]
    off = 1.4 * r[multi]
    r2 = r[multi] * (0.6 + 0.4 * u[multi, 24])
    nuc2 = P.make(
        x[multi] + off * np.cos(ang),
        y[multi] + off * np.sin(ang),
        r2 * 1.1,
        r2,
        ang,
        h=0.9,
        edge=0.5,
        harm=P.random_harm(u[multi, 25:31], 0.15, 0.15, 0.1),
        tex=0.6,
        cid=cid[multi],
    )
    nucl = _nucleolus(x, y, u[:, 26:29], cid, 1.6)
    return _cat([*nuc, cyto, nuc2, nucl])


def squamoid(x: F64, y: F64, th: F64, u: F64, cid: F64) -> F64:
    """Return squamoid cells: polygonal, abundant eosinophilic cytoplasm, distinct borders."""
    r = 3.2 + 1.6 * u[:, 3]
    nuc = _nucleus(
        x,
        y,
        r * (1.0 + 0.25 * u[:, 4]),
        r,
        6.3 * u[:, 5],
        0.45 + 0.25 * u[:, 6],
        P.random_harm(u[:, 7:13], 0.06, 0.08, 0.05),
        cid,
        0.65,
        0.35,
    )
    cr = 7.0 + 2.0 * u[:, 13]
    harm = P.random_harm(u[:, 14:20], 0.04, 0.06, 0.08)
    cyto = P.make(
        x,
        y,
        cr,
        cr * (0.85 + 0.15 * u[:, 20]),
        6.3 * u[:, 21],
        e=0.36,
        h=0.07,
        edge=0.6,
        harm=harm,
        layer=P.BASE,
        tex=0.3,
        cid=cid,
    )
    border = P.make(
        x,
        y,
        cr,
        cr * (0.85 + 0.15 * u[:, 20]),
        6.3 * u[:, 21],
        h=0.05,
        e=0.16,
        edge=0.35,
        harm=harm,
        ring=0.45,
        layer=P.BASE,
        cid=cid,
    )
    nucl = _nucleolus(x, y, u[:, 22:25], cid, 1.2)
    return _cat([cyto, border, *nuc, nucl])


def fibroblast(x: F64, y: F64, th: F64, u: F64, cid: F64) -> F64:
    """Return stromal fibroblasts: thin wavy nuclei with collagen fibres."""
    t = th + 0.6 * (u[:, 3] - 0.5)
    nuc = P.make(
        x,
        y,
        4.0 + 2.5 * u[:, 4],
        0.9 + 0.5 * u[:, 5],
        t,
        h=0.8,
        edge=0.4,
        harm=P.random_harm(u[:, 7:13], 0.05, 0.1, 0.08),
        tex=0.3,
        cid=cid,
    )
    parts = [nuc]
    for k in range(3):
        off = (k - 1) * 4.0 + 2.0 * (u[:, 13 + k] - 0.5)
        parts.append(
            P.make(
                x - np.sin(t) * off,
                y + np.cos(t) * off,
                12.0 + 8 * u[:, 16 + k],
                0.9 + 0.7 * u[:, 19 + k],
                t + 0.2 * (u[:, 22 + k] - 0.5),
                e=0.26,
                edge=0.8,
                layer=P.BASE,
                cid=cid,
            )
        )
    return _cat(parts)


def lymphocyte(x: F64, y: F64, th: F64, u: F64, cid: F64) -> F64:
    """Return small lymphocytes: round dense nuclei with a thin rim of cytoplasm."""
    r = 2.6 + 0.7 * u[:, 3]
    nuc = P.make(
        x,
        y,
        r * (1 + 0.12 * u[:, 4]),
        r,
        6.3 * u[:, 5],
        h=1.0 + 0.2 * u[:, 6],
        edge=0.4,
        harm=P.random_harm(u[:, 7:13], 0.06, 0.06, 0.04),
        tex=0.45,
        cid=cid,
    )
    cyto = P.make(x, y, r + 0.9, r + 0.9, e=0.12, h=0.05, edge=0.5, layer=P.BASE, cid=cid)
    return _cat([cyto, nuc])


def epithelium(x: F64, y: F64, th: F64, u: F64, cid: F64) -> F64:
    """Return follicular epithelial nuclei: round, bland, evenly sized."""
    r = 2.5 + 0.6 * u[:, 3]
    return _cat(
        _nucleus(
            x,
            y,
            r * 1.1,
            r,
            th,
            0.55 + 0.15 * u[:, 4],
            P.random_harm(u[:, 7:13], 0.03, 0.04, 0.02),
            cid,
            0.5,
            0.25,
        )
    )


def ghost(x: F64, y: F64, th: F64, u: F64, cid: F64) -> F64:
    """Return ghost cells of necrosis: faint outlines with a pale nuclear shadow."""
    r = 5.0 + 3.0 * u[:, 3]
    outline = P.make(
        x,
        y,
        r,
        r * (0.8 + 0.2 * u[:, 4]),
        6.3 * u[:, 5],
        e=0.25,
        edge=0.6,
        ring=0.9,
        layer=P.BASE,
        harm=P.random_harm(u[:, 7:13], 0.08, 0.08, 0.05),
        cid=cid,
    )
    shadow = P.make(x, y, 3.0, 2.6, h=0.18, e=0.1, edge=1.0, tex=0.6, cid=cid)
    return _cat([outline, shadow])


def giant_cell(x: F64, y: F64, th: F64, u: F64, cid: F64) -> F64:
    """Return osteoclast-like giant cells: big eosinophilic cytoplasm, many small bland nuclei."""
    r = 18.0 + 8.0 * u[:, 3]
    cyto = P.make(
        x,
        y,
        r,
        r * (0.75 + 0.2 * u[:, 4]),
        6.3 * u[:, 5],
        e=0.55,
        edge=1.2,
        harm=P.random_harm(u[:, 7:13], 0.08, 0.1, 0.06),
        layer=P.BASE,
        tex=0.2,
        cid=cid,
    )
    parts = [cyto]
    for k in range(12):
        rr = 0.6 * r * np.sqrt(u[:, 13 + k])
        aa = 6.3 * u[:, (14 + 2 * k) % 32]
        parts.append(
            P.make(
                x + rr * np.cos(aa),
                y + rr * np.sin(aa),
                2.6,
                2.1,
                6.3 * u[:, (15 + k) % 32],
                h=0.8,
                edge=0.4,
                tex=0.3,
                cid=cid,
            )
        )
    return _cat(parts)
