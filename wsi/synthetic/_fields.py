"""Smooth random fields that lay out a synthetic section: tissue, regions, necrosis, orientation.

A field is fractal value noise evaluated at the nodes of a fixed 8 µm lattice in absolute
coordinates and interpolated bilinearly in between, so the label of a point is the same whether it
is asked for one cell centre, a patch, a slide tile or the 2 µm/px label map.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from wsi.synthetic._noise import mix_seed, noise_grid, noise_points
from wsi.synthetic.classes import PATTERN_CLASSES

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]

#: Lattice spacing (µm) of the field nodes.
NODE_UM = 8.0

#: Field name -> (largest noise scale in µm, octaves).
FIELD_SPECS: dict[str, tuple[float, int]] = {
    "tissue": (1400.0, 3),
    "nontumour": (900.0, 3),
    "spindle": (700.0, 2),
    "pleomorphic": (700.0, 2),
    "squamoid": (700.0, 2),
    "necrosis": (650.0, 4),
    "orient": (260.0, 2),
    "nest": (70.0, 2),
    "inflam": (300.0, 2),
    "mitosis": (900.0, 2),
    "tam": (450.0, 2),
    "density": (160.0, 1),
}
FIELD_NAMES: tuple[str, ...] = tuple(FIELD_SPECS)
LABEL_FIELDS: tuple[str, ...] = (
    "tissue",
    "nontumour",
    "spindle",
    "pleomorphic",
    "squamoid",
    "necrosis",
)

#: Fields whose scale follows ``Layout.region_scale``.
REGION_FIELDS: tuple[str, ...] = (*LABEL_FIELDS, "inflam", "mitosis", "tam")

BG, SPINDLE, PLEO, SQUAM, NECRO, NONTUM = (
    PATTERN_CLASSES.index(n)
    for n in ("background", "spindle", "pleomorphic", "squamoid", "necrosis", "non_tumour")
)
TUMOUR_LABELS: tuple[int, ...] = (SPINDLE, PLEO, SQUAM)


@dataclass(frozen=True)
class Layout:
    """Parameters of the region layout of one scene.

    Attributes:
        seed: scene seed.
        slide_um: (width, height) of the slide in µm, or None for an unbounded patch scene.
        pattern_bias: added to the spindle, pleomorphic and squamoid fields (predominant pattern).
        nontumour_t: non-tumour where its field exceeds this.
        necrosis_t: necrosis (inside tumour) where its field exceeds this.
        rim_delta: viable rim where the necrosis field lies within this below ``necrosis_t``.
        tissue_t: patch scenes only: glass where the tissue field is below this.
        region_scale: multiplies the scale of the region-level fields (small slides use < 1 so
            that every class fits in).
    """

    seed: int
    slide_um: tuple[float, float] | None = None
    pattern_bias: tuple[float, float, float] = (0.0, 0.0, 0.0)
    nontumour_t: float = 0.64
    necrosis_t: float = 0.60
    rim_delta: float = 0.035
    tissue_t: float = 0.40
    region_scale: float = 1.0

    def layers(self, names: tuple[str, ...]) -> tuple[F64, NDArray[np.uint32], F64, list[int]]:
        """Return stacked (scale, seed, weight) columns of the octaves of ``names``, and counts."""
        scales: list[float] = []
        seeds: list[int] = []
        weights: list[float] = []
        counts: list[int] = []
        for name in names:
            top, octaves = FIELD_SPECS[name]
            if name in REGION_FIELDS:
                top *= self.region_scale
            norm = sum(0.5**o for o in range(octaves))
            for o in range(octaves):
                scales.append(top / 2**o)
                seeds.append(mix_seed(self.seed, FIELD_NAMES.index(name), o))
                weights.append(0.5**o / norm)
            counts.append(octaves)
        return (
            np.array(scales, np.float64)[:, None],
            np.array(seeds, np.uint32)[:, None],
            np.array(weights, np.float64)[:, None],
            counts,
        )


def _fbm_nodes(layout: Layout, names: tuple[str, ...], nx: F64, ny: F64) -> F64:
    """Return (len(names), N) fractal noise at node positions (µm)."""
    scales, seeds, weights, counts = layout.layers(names)
    raw = noise_points(nx, ny, scales, seeds) * weights
    out = np.empty((len(names), nx.size), np.float64)
    k = 0
    for i, c in enumerate(counts):
        out[i] = raw[k : k + c].sum(axis=0)
        k += c
    return out


def _node_grid(
    layout: Layout, names: tuple[str, ...], i0: int, j0: int, nw: int, nh: int
) -> NDArray[np.float32]:
    """Return (len(names), nh, nw) field values at nodes (i0 + c, j0 + r) · NODE_UM."""
    scales, seeds, weights, counts = layout.layers(names)
    out = np.zeros((len(names), nh, nw), np.float32)
    k = 0
    for i, c in enumerate(counts):
        for _ in range(c):
            out[i] += np.float32(weights[k, 0]) * noise_grid(
                i0, j0, nw, nh, NODE_UM, float(scales[k, 0]), int(seeds[k, 0]), offset=0.0
            )
            k += 1
    return out


def fields_at_points(layout: Layout, names: tuple[str, ...], x_um: F64, y_um: F64) -> F64:
    """Return (len(names), N) field values at points (µm), lattice-interpolated."""
    u = x_um / NODE_UM
    v = y_um / NODE_UM
    iu = np.floor(u)
    iv = np.floor(v)
    tu = u - iu
    tv = v - iv
    if x_um.size == 0:
        return np.zeros((len(names), 0))
    i0, j0 = int(iu.min()), int(iv.min())
    nw, nh = int(iu.max()) - i0 + 2, int(iv.max()) - j0 + 2
    if x_um.size >= 64 and nw * nh <= 6 * x_um.size:
        nodes = _node_grid(layout, names, i0, j0, nw, nh)
        ci = (iu - i0).astype(np.int64)
        cj = (iv - j0).astype(np.int64)
        vals = np.stack(
            [
                nodes[:, cj, ci],
                nodes[:, cj, ci + 1],
                nodes[:, cj + 1, ci],
                nodes[:, cj + 1, ci + 1],
            ],
            axis=1,
        ).astype(np.float64)
    else:
        cx = np.concatenate([iu, iu + 1, iu, iu + 1]) * NODE_UM
        cy = np.concatenate([iv, iv, iv + 1, iv + 1]) * NODE_UM
        vals = _fbm_nodes(layout, names, cx, cy).reshape(len(names), 4, -1)
    top = vals[:, 0] + (vals[:, 1] - vals[:, 0]) * tu
    bot = vals[:, 2] + (vals[:, 3] - vals[:, 2]) * tu
    out: F64 = top + (bot - top) * tv
    return out


def fields_on_grid(
    layout: Layout, names: tuple[str, ...], gx0: int, gy0: int, w: int, h: int, px_um: float
) -> F32:
    """Return (len(names), h, w) field values at the pixel centres of a window.

    Args:
        layout: scene layout.
        names: fields to evaluate.
        gx0: left edge in pixels of the grid with spacing ``px_um``.
        gy0: top edge in pixels of that grid.
        w: width in pixels.
        h: height in pixels.
        px_um: pixel spacing in µm.
    """
    u = (np.arange(gx0, gx0 + w, dtype=np.float64) + 0.5) * (px_um / NODE_UM)
    v = (np.arange(gy0, gy0 + h, dtype=np.float64) + 0.5) * (px_um / NODE_UM)
    iu = np.floor(u).astype(np.int64)
    iv = np.floor(v).astype(np.int64)
    tu = (u - iu).astype(np.float32)
    tv = (v - iv).astype(np.float32)
    u_lo, v_lo = int(iu[0]), int(iv[0])
    nodes = _node_grid(layout, names, u_lo, v_lo, int(iu[-1]) - u_lo + 2, int(iv[-1]) - v_lo + 2)
    ry = iv - v_lo
    rows = nodes[:, ry] * (1.0 - tv)[None, :, None] + nodes[:, ry + 1] * tv[None, :, None]
    cx = iu - u_lo
    out: F32 = rows[:, :, cx] * (1.0 - tu) + rows[:, :, cx + 1] * tu
    return out


def _tissue(
    layout: Layout,
    f_tissue: NDArray[np.floating],
    x_um: NDArray[np.floating],
    y_um: NDArray[np.floating],
) -> NDArray[np.bool_]:
    if layout.slide_um is None:
        return np.asarray(f_tissue > layout.tissue_t)
    sw, sh = layout.slide_um
    dx = (x_um - 0.5 * sw) / (0.43 * sw)
    dy = (y_um - 0.5 * sh) / (0.41 * sh)
    q = np.sqrt(dx * dx + dy * dy)
    return np.asarray(q < 1.0 + 1.1 * (f_tissue - 0.5))


def labels_from_fields(
    layout: Layout,
    f: NDArray[np.floating],
    x_um: NDArray[np.floating],
    y_um: NDArray[np.floating],
) -> tuple[NDArray[np.uint8], NDArray[np.bool_]]:
    """Turn the ``LABEL_FIELDS`` stack into class labels and a viable-rim flag.

    Args:
        layout: scene layout.
        f: (6, ...) values of ``LABEL_FIELDS`` in that order.
        x_um: x positions (µm) broadcastable to ``f[0]``.
        y_um: y positions (µm).

    Returns:
        labels (PATTERN_CLASSES values; artefacts not included) and rim flag.
    """
    tissue = _tissue(layout, f[0], x_um, y_um)
    b = layout.pattern_bias
    pat = np.argmax(np.stack([f[2] + b[0], f[3] + b[1], f[4] + b[2]]), axis=0)
    lab = np.asarray(pat + SPINDLE, np.uint8)
    nec = f[5] > layout.necrosis_t
    lab[nec] = NECRO
    lab[f[1] > layout.nontumour_t] = NONTUM
    lab[~tissue] = BG
    rim = (~nec) & (f[5] > layout.necrosis_t - layout.rim_delta)
    rim &= (lab == SPINDLE) | (lab == PLEO) | (lab == SQUAM)
    return lab, np.asarray(rim)


def labels_at_points(
    layout: Layout, x_um: F64, y_um: F64
) -> tuple[NDArray[np.uint8], NDArray[np.bool_]]:
    """Return labels and rim flags at points (µm)."""
    f = fields_at_points(layout, LABEL_FIELDS, x_um, y_um)
    return labels_from_fields(layout, f, x_um, y_um)


def labels_on_grid(
    layout: Layout, gx0: int, gy0: int, w: int, h: int, px_um: float
) -> tuple[NDArray[np.uint8], NDArray[np.bool_]]:
    """Return (h, w) labels and rim flags at the pixel centres of a window."""
    f = fields_on_grid(layout, LABEL_FIELDS, gx0, gy0, w, h, px_um)
    xs = ((np.arange(gx0, gx0 + w) + 0.5) * px_um)[None, :]
    ys = ((np.arange(gy0, gy0 + h) + 0.5) * px_um)[:, None]
    return labels_from_fields(layout, f, xs, ys)
