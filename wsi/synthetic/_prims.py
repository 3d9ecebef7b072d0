"""Drawing primitives: soft, harmonically perturbed ellipses (solid or rings) in µm.

A primitive is one row of a float64 table. Cells, mitotic figures, follicles and macrophage
extensions are all built from rows of this table, and one vectorised splatter renders them.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

F64 = NDArray[np.float64]

# Column indices.
X, Y, A, B, TH, CH, CE, CD, EDGE, H1, P1, H2, P2, H3, P3, TEX, RING, LAYER, CID = range(19)
NCOL = 19

#: Layers, composited in this order: base (stroma, cytoplasm) is added, clear erases the base,
#: top (nuclei, chromatin) is added over everything.
BASE, CLEAR, TOP = 0, 1, 2

#: Object kinds recorded as truth points (code -> name).
KIND_NAMES: dict[int, str] = {
    0: "nucleus",
    1: "fibroblast",
    2: "epithelium",
    3: "lymphocyte_infiltrate",
    4: "macrophage_foamy",
    5: "macrophage_ramified",
    6: "giant_cell",
    7: "ghost",
    10: "typical_prophase",
    11: "typical_metaphase",
    12: "typical_anaphase",
    13: "tripolar_spokes",
    14: "tripolar_groups",
    20: "apoptotic",
    21: "pyknotic",
    22: "lymphocyte",
    23: "karyorrhectic",
    24: "tangential",
}
KIND_CODES: dict[str, int] = {v: k for k, v in KIND_NAMES.items()}
TYPICAL_CODES = (10, 11, 12)
TRIPOLAR_CODES = (13, 14)
LOOKALIKE_CODES = {
    20: "apoptotic",
    21: "pyknotic",
    22: "lymphocyte",
    23: "karyorrhectic",
    24: "tangential",
}
MACROPHAGE_CODES = (4, 5)
#: Kinds that are not a nucleated cell (debris, ghosts, apoptotic bodies).
NON_NUCLEATED = (7, 20, 23)


def mitosis_class(codes: NDArray[np.integer]) -> NDArray[np.int64]:
    """Return FIGURE_CLASSES index per kind code (0 negative, 1 typical, 2 tripolar)."""
    out = np.zeros(codes.shape, np.int64)
    out[np.isin(codes, TYPICAL_CODES)] = 1
    out[np.isin(codes, TRIPOLAR_CODES)] = 2
    return out


def make(
    x: ArrayLike,
    y: ArrayLike,
    a: ArrayLike,
    b: ArrayLike,
    th: ArrayLike = 0.0,
    *,
    h: ArrayLike = 0.0,
    e: ArrayLike = 0.0,
    d: ArrayLike = 0.0,
    edge: ArrayLike = 0.4,
    harm: NDArray[np.float64] | None = None,
    tex: ArrayLike = 0.0,
    ring: ArrayLike = 0.0,
    layer: int = TOP,
    cid: ArrayLike = -1.0,
) -> F64:
    """Build primitive rows; every argument broadcasts to the number of rows.

    Args:
        x: centre x in µm.
        y: centre y in µm.
        a: semi-axis along ``th`` in µm.
        b: semi-axis across ``th`` in µm.
        th: orientation in radians.
        h: haematoxylin concentration (OD units at full coverage).
        e: eosin concentration.
        d: DAB concentration (only shown by IHC stains).
        edge: width of the soft edge in µm.
        harm: (N, 6) harmonic amplitudes and phases (h1, p1, h2, p2, h3, p3) of the outline.
        tex: 0..1, how much the chromatin texture modulates the primitive.
        ring: 0 for a solid shape, else the ring thickness in µm.
        layer: BASE, CLEAR or TOP.
        cid: index of the owning object in the truth table (-1 for none).
    """
    vals = (x, y, a, b, th, h, e, d, edge, tex, ring, cid)
    sizes = [np.size(v) for v in vals if np.ndim(v) > 0]
    if harm is not None:
        sizes.append(len(harm))
    n = max(sizes) if sizes else 1
    out = np.zeros((n, NCOL), np.float64)
    for idx, val in zip((X, Y, A, B, TH, CH, CE, CD, EDGE, TEX, RING, CID), vals, strict=True):
        out[:, idx] = val
    if harm is not None:
        out[:, H1 : P3 + 1] = harm
    out[:, LAYER] = layer
    return out


def random_harm(u: F64, amp1: float, amp2: float, amp3: float) -> F64:
    """Return (N, 6) harmonics from (N, 6) uniforms: amplitudes scaled, phases in [0, 2π)."""
    out = np.empty_like(u[:, :6])
    out[:, 0] = amp1 * u[:, 0]
    out[:, 2] = amp2 * u[:, 2]
    out[:, 4] = amp3 * u[:, 4]
    out[:, 1] = 2 * np.pi * u[:, 1]
    out[:, 3] = 2 * np.pi * u[:, 3]
    out[:, 5] = 2 * np.pi * u[:, 5]
    return out


def half_box_um(p: F64) -> tuple[F64, F64]:
    """Return the half width and half height (µm) of each primitive's axis-aligned bounding box."""
    amp = 1.0 + np.abs(p[:, H1]) + np.abs(p[:, H2]) + np.abs(p[:, H3])
    pad = p[:, RING] + 2.0 * p[:, EDGE] + 0.5
    aa = p[:, A] * amp
    bb = p[:, B] * amp
    c = np.abs(np.cos(p[:, TH]))
    s = np.abs(np.sin(p[:, TH]))
    hx: F64 = np.sqrt((aa * c) ** 2 + (bb * s) ** 2) + pad
    hy: F64 = np.sqrt((aa * s) ** 2 + (bb * c) ** 2) + pad
    return hx, hy


def extent_um(p: F64) -> F64:
    """Return the radius (µm) of a disc around each primitive's centre that holds all of it."""
    amp = 1.0 + np.abs(p[:, H1]) + np.abs(p[:, H2]) + np.abs(p[:, H3])
    r: F64 = np.maximum(p[:, A], p[:, B]) * amp + p[:, RING] + 2.0 * p[:, EDGE] + 0.5
    return r
