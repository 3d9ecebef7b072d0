"""A deterministic scene: the cells and objects of a section, generated block by block.

The plane is cut into square blocks of ``BLOCK_UM``; each block's objects depend only on the scene
seed and the block's indices, so any window can be rendered by generating the blocks around it.
Cells come from a jittered lattice thinned to the local density of the region they fall in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from wsi.synthetic import _cells as C
from wsi.synthetic import _figures as FG
from wsi.synthetic import _macrophages as M
from wsi.synthetic import _prims as P
from wsi.synthetic._fields import (
    BG,
    FIELD_NAMES,
    LABEL_FIELDS,
    NECRO,
    NONTUM,
    PLEO,
    SPINDLE,
    SQUAM,
    Layout,
    fields_at_points,
    labels_at_points,
    labels_from_fields,
)
from wsi.synthetic._noise import hash_uniform, mix_seed

F64 = NDArray[np.float64]
Builder = Callable[[F64, F64, F64, F64, F64], F64]

BLOCK_UM = 100.0
_SPACING = 10.0
_PER_SIDE = round(BLOCK_UM / _SPACING)
MAX_DENSITY_MM2 = 1e6 / _SPACING**2
#: Largest distance (µm) an object's drawing reaches from its block.
REACH_UM = 75.0
#: Largest distance (µm) a cell's drawing reaches from its centre (ramified macrophage arms).
CELL_REACH_UM = 60.0
_FOLLICLE_UM = 130.0

#: Cells per mm² by region (before the density field and the crowded rim).
_DENSITY = {SPINDLE: 6400.0, PLEO: 3000.0, SQUAM: 5000.0, NECRO: 1600.0, NONTUM: 1100.0}
_SQUAM_STROMA = 900.0
_NEST_T = 0.4
_INFLAM = 7500.0

BUILDERS: dict[int, Builder] = {
    0: C.spindle,  # overridden per region below
    1: C.fibroblast,
    2: C.epithelium,
    3: C.lymphocyte,
    4: M.macrophage_foamy,
    5: M.macrophage_ramified,
    6: C.giant_cell,
    7: C.ghost,
    10: FG.prophase,
    11: FG.metaphase,
    12: FG.anaphase,
    13: FG.tripolar_spokes,
    14: FG.tripolar_groups,
    20: FG.apoptotic,
    21: FG.pyknotic,
    22: C.lymphocyte,
    23: FG.karyorrhectic,
    24: FG.tangential,
}
_TUMOUR_BUILDERS: dict[int, Builder] = {SPINDLE: C.spindle, PLEO: C.pleomorphic, SQUAM: C.squamoid}


@dataclass(frozen=True)
class Scene:
    """Everything that decides what a synthetic section contains.

    Attributes:
        layout: region layout (seed, slide extent, thresholds).
        mitoses_per_mm2: mean mitotic figures per mm² of viable tumour.
        tripolar_fraction: share of mitoses that are atypical tripolar.
        tam_fraction: share of cells that are macrophages in spindle, pleomorphic, squamoid and
            non-tumour regions.
        ramified_fraction: share of macrophages that are ramified (the rest are foamy).
        lookalike_per_mm2: apoptotic, pyknotic, lymphocyte and tangential look-alikes per mm² of
            viable tumour (each), and karyorrhectic clusters per mm² of necrosis.
    """

    layout: Layout
    mitoses_per_mm2: float = 2.5
    tripolar_fraction: float = 0.35
    tam_fraction: tuple[float, float, float, float] = (0.3, 0.3, 0.3, 0.08)
    ramified_fraction: float = 0.5
    lookalike_per_mm2: float = 12.0
    _cache: dict[tuple[int, int], tuple[F64, F64]] = field(
        default_factory=dict, compare=False, repr=False
    )

    @property
    def seed(self) -> int:
        """The scene seed."""
        return self.layout.seed


def _candidates(scene: Scene, blocks: Sequence[tuple[int, int]]) -> tuple[F64, F64, F64, F64]:
    """Return jittered lattice candidates of all blocks: x, y (µm), uniforms (N, 40), block idx."""
    xs, ys, us, bs = [], [], [], []
    g = (np.arange(_PER_SIDE) + 0.5) * _SPACING
    gx, gy = np.meshgrid(g, g)
    for k, (bi, bj) in enumerate(blocks):
        rng = np.random.default_rng(mix_seed(scene.seed, bi, bj, 101))
        jit = rng.random((2, gx.size))
        xs.append(bi * BLOCK_UM + gx.ravel() + (jit[0] - 0.5) * 0.9 * _SPACING)
        ys.append(bj * BLOCK_UM + gy.ravel() + (jit[1] - 0.5) * 0.9 * _SPACING)
        us.append(rng.random((gx.size, 40)))
        bs.append(np.full(gx.size, k, np.float64))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(us), np.concatenate(bs)


def _follicles_near(scene: Scene, x: F64, y: F64) -> tuple[F64, F64, F64, NDArray[np.bool_]]:
    """Return follicle centre x, y, radius and existence for lattice nodes given by (x, y) (µm)."""
    i = np.floor(x / _FOLLICLE_UM).astype(np.int64)
    j = np.floor(y / _FOLLICLE_UM).astype(np.int64)
    s = mix_seed(scene.seed, 77)
    cx = (i + 0.5 + 0.5 * (hash_uniform(i, j, s) - 0.5)) * _FOLLICLE_UM
    cy = (j + 0.5 + 0.5 * (hash_uniform(i, j, s + 1) - 0.5)) * _FOLLICLE_UM
    r = 20.0 + 30.0 * hash_uniform(i, j, s + 2).astype(np.float64)
    f = fields_at_points(scene.layout, (*LABEL_FIELDS, "inflam"), cx, cy)
    lab, _ = labels_from_fields(scene.layout, f[:6], cx, cy)
    exists = (lab == NONTUM) & (f[6] < 0.56) & (hash_uniform(i, j, s + 3) < 0.8)
    return cx, cy, r, exists


def _in_follicle(scene: Scene, x: F64, y: F64) -> NDArray[np.bool_]:
    """Return whether points (µm) fall inside a follicle (colloid plus epithelium)."""
    i = np.floor(x / _FOLLICLE_UM).astype(np.int64)
    j = np.floor(y / _FOLLICLE_UM).astype(np.int64)
    ni = np.arange(i.min() - 1, i.max() + 2)
    nj = np.arange(j.min() - 1, j.max() + 2)
    gi, gj = np.meshgrid(ni, nj)
    cx, cy, r, ok = _follicles_near(
        scene, (gi.ravel() + 0.5) * _FOLLICLE_UM, (gj.ravel() + 0.5) * _FOLLICLE_UM
    )
    inside = np.zeros(x.size, bool)
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            k = (j + dj - nj[0]) * ni.size + (i + di - ni[0])
            inside |= ok[k] & (np.hypot(x - cx[k], y - cy[k]) < r[k] + 9.0)
    return inside


def _assign_kinds(
    scene: Scene, lab: NDArray[np.uint8], f: dict[str, F64], dens: F64, u: F64
) -> NDArray[np.int64]:
    """Return the kind code of each kept candidate (see ``_prims.KIND_NAMES``)."""
    kind = np.zeros(lab.size, np.int64)
    tum = (lab == SPINDLE) | (lab == PLEO) | (lab == SQUAM)
    dens_um2 = dens / 1e6
    p_mit = 2.0 * scene.mitoses_per_mm2 / 1e6 * f["mitosis"] / dens_um2
    p_la = scene.lookalike_per_mm2 / 1e6 / dens_um2
    tam = np.array([*scene.tam_fraction, 0.0])
    reg = np.select([lab == SPINDLE, lab == PLEO, lab == SQUAM, lab == NONTUM], [0, 1, 2, 3], 4)
    p_mac = np.clip(tam[reg] * (0.4 + 1.2 * f["tam"]), 0.0, 0.97)
    edges = np.cumsum(np.stack([p_mit, p_la, p_la, p_la, p_la, p_mac]), axis=0)
    cat = (u[:, 1][None, :] >= edges).sum(axis=0)
    tcode = np.array([-1, 20, 21, 22, 24, 4, 0])[cat]
    is_mit = tcode == -1
    tri = u[:, 2] < scene.tripolar_fraction
    typ = np.where(u[:, 3] < 0.3, 10, np.where(u[:, 3] < 0.75, 11, 12))
    tcode = np.where(is_mit, np.where(tri, np.where(u[:, 4] < 0.5, 13, 14), typ), tcode)
    rami = u[:, 5] < scene.ramified_fraction
    tcode = np.where(tcode == 4, np.where(rami, 5, 4), tcode)
    tcode = np.where((tcode == 0) & (lab == PLEO) & (u[:, 6] < 0.03), 6, tcode)
    tcode = np.where((lab == SQUAM) & (f["nest"] < _NEST_T) & (tcode == 0), 1, tcode)
    kind[tum] = tcode[tum]
    nec = lab == NECRO
    p_kar = 2.5 * scene.lookalike_per_mm2 / 1e6 / dens_um2
    kind[nec] = np.where(u[nec, 1] < p_kar[nec], 23, np.where(u[nec, 1] < 2 * p_kar[nec], 21, 7))
    non = lab == NONTUM
    inflam = f["inflam"] > 0.58
    kind[non] = np.where(
        u[non, 1] < p_mac[non], np.where(rami[non], 5, 4), np.where(inflam[non], 3, 1)
    )
    return kind


def _robust_mitoses(scene: Scene, x: F64, y: F64, kind: NDArray[np.int64]) -> None:
    """Demote mitoses within 4 µm of a non-viable label to ordinary nuclei (in place)."""
    m = np.flatnonzero(np.isin(kind, (*P.TYPICAL_CODES, *P.TRIPOLAR_CODES)))
    if m.size == 0:
        return
    ok = np.ones(m.size, bool)
    for dx, dy in ((4.0, 0.0), (-4.0, 0.0), (0.0, 4.0), (0.0, -4.0)):
        lab, _ = labels_at_points(scene.layout, x[m] + dx, y[m] + dy)
        ok &= (lab == SPINDLE) | (lab == PLEO) | (lab == SQUAM)
    kind[m[~ok]] = 0


def _density(
    scene: Scene, lab: NDArray[np.uint8], rim: NDArray[np.bool_], f: dict[str, F64]
) -> F64:
    dens = np.zeros(lab.size)
    for code, d in _DENSITY.items():
        dens[lab == code] = d
    squam_stroma = (lab == SQUAM) & (f["nest"] < _NEST_T)
    dens[squam_stroma] = _SQUAM_STROMA
    dens[(lab == NONTUM) & (f["inflam"] > 0.58)] = _INFLAM
    dens *= 0.75 + 0.5 * f["density"]
    dens[rim] *= 1.6
    return np.minimum(dens, MAX_DENSITY_MM2)


def generate_blocks(
    scene: Scene,
    blocks: Sequence[tuple[int, int]],
    clip: tuple[float, float, float, float] | None = None,
) -> list[tuple[F64, F64]]:
    """Generate the objects of blocks.

    Args:
        scene: the scene.
        blocks: (i, j) block indices.
        clip: optional (x0, y0, x1, y1) µm: cells centred outside are skipped (a window grown by
            ``CELL_REACH_UM`` loses nothing it can see; follicles are always kept).

    Returns:
        per block: (primitives (n, NCOL) with CID indexing the block's points, points (m, 3):
        x µm, y µm, kind code).
    """
    x, y, u, bidx = _candidates(scene, blocks)
    if clip is not None:
        inside = (x >= clip[0]) & (x < clip[2]) & (y >= clip[1]) & (y < clip[3])
        x, y, u, bidx = x[inside], y[inside], u[inside], bidx[inside]
    fv = fields_at_points(scene.layout, FIELD_NAMES, x, y)
    f = {n: fv[i] for i, n in enumerate(FIELD_NAMES)}
    lab, rim = labels_from_fields(
        scene.layout, fv[[FIELD_NAMES.index(n) for n in LABEL_FIELDS]], x, y
    )
    dens = _density(scene, lab, rim, f)
    keep = (lab != BG) & (u[:, 0] * MAX_DENSITY_MM2 < dens)
    non = keep & (lab == NONTUM)
    if non.any():
        keep[np.flatnonzero(non)[_in_follicle(scene, x[non], y[non])]] = False
    idx = np.flatnonzero(keep)
    x, y, u, bidx, lab, dens = x[idx], y[idx], u[idx], bidx[idx], lab[idx], dens[idx]
    f = {k: v[idx] for k, v in f.items()}
    kind = _assign_kinds(scene, lab, f, dens, u)
    _robust_mitoses(scene, x, y, kind)
    th = f["orient"] * 3.0 * np.pi
    prims, pts = _build(x, y, th, u[:, 8:], kind, lab)
    pblk = bidx[prims[:, P.CID].astype(np.int64)]
    order = np.argsort(pblk, kind="stable")
    prims, pblk = prims[order], pblk[order]
    p_cut = np.searchsorted(pblk, np.arange(len(blocks) + 1))
    t_cut = np.searchsorted(bidx, np.arange(len(blocks) + 1))
    out: list[tuple[F64, F64]] = []
    follicles = _follicle_nodes(scene, blocks)
    for k, blk in enumerate(blocks):
        bp = prims[p_cut[k] : p_cut[k + 1]].copy()
        bp[:, P.CID] -= t_cut[k]
        bpts = pts[t_cut[k] : t_cut[k + 1]]
        fp, fpts = _follicle_objects(scene, blk, follicles[k], len(bpts))
        out.append((np.concatenate([bp, fp]), np.concatenate([bpts, fpts])))
    return out


def _build(
    x: F64, y: F64, th: F64, u: F64, kind: NDArray[np.int64], lab: NDArray[np.uint8]
) -> tuple[F64, F64]:
    cid = np.arange(x.size, dtype=np.float64)
    parts = []
    for code in np.unique(kind):
        m = kind == code
        if code == 0:
            for reg, fn in _TUMOUR_BUILDERS.items():
                mm = m & (lab == reg)
                if mm.any():
                    parts.append(fn(x[mm], y[mm], th[mm], u[mm], cid[mm]))
        else:
            parts.append(BUILDERS[int(code)](x[m], y[m], th[m], u[m], cid[m]))
    prims = np.concatenate(parts) if parts else np.zeros((0, P.NCOL))
    pts = np.stack([x, y, kind.astype(np.float64)], axis=1)
    return prims, pts


def _follicle_nodes(scene: Scene, blocks: Sequence[tuple[int, int]]) -> list[F64]:
    """Return per block the follicles (rows cx, cy, r in µm) whose lattice node lies in it."""
    ii, jj, owner = [], [], []
    for k, (bi, bj) in enumerate(blocks):
        i0 = int(np.ceil(bi * BLOCK_UM / _FOLLICLE_UM - 0.5))
        i1 = int(np.ceil((bi + 1) * BLOCK_UM / _FOLLICLE_UM - 0.5))
        j0 = int(np.ceil(bj * BLOCK_UM / _FOLLICLE_UM - 0.5))
        j1 = int(np.ceil((bj + 1) * BLOCK_UM / _FOLLICLE_UM - 0.5))
        for j in range(j0, j1):
            for i in range(i0, i1):
                ii.append(i)
                jj.append(j)
                owner.append(k)
    out = [np.zeros((0, 3)) for _ in blocks]
    if not ii:
        return out
    cx, cy, r, ok = _follicles_near(
        scene, (np.array(ii) + 0.5) * _FOLLICLE_UM, (np.array(jj) + 0.5) * _FOLLICLE_UM
    )
    own = np.array(owner)
    for k in np.unique(own[ok]):
        m = ok & (own == k)
        out[int(k)] = np.stack([cx[m], cy[m], r[m]], axis=1)
    return out


def _follicle_objects(scene: Scene, blk: tuple[int, int], fol: F64, cid0: int) -> tuple[F64, F64]:
    """Return primitives and epithelial truth points of a block's follicles (rows cx, cy, r)."""
    bi, bj = blk
    prims, pts = [], []
    nxt = cid0
    for n, (fx, fy, fr) in enumerate(fol):
        rng = np.random.default_rng(mix_seed(scene.seed, bi, bj, 303, n))
        col = P.make(
            fx,
            fy,
            fr,
            fr * (0.8 + 0.2 * rng.random()),
            6.3 * rng.random(),
            e=0.55,
            edge=0.7,
            harm=P.random_harm(rng.random((1, 6)), 0.05, 0.06, 0.04),
            tex=0.08,
            layer=P.BASE,
        )
        epi = P.make(
            fx,
            fy,
            fr + 4.0,
            fr * 0.9 + 4.0,
            col[0, P.TH],
            e=0.28,
            edge=1.0,
            ring=7.5,
            harm=col[:, P.H1 : P.P3 + 1],
            layer=P.BASE,
        )
        nn = int(2 * np.pi * (fr + 4.5) / 7.0)
        ang = (np.arange(nn) + 0.3 * rng.random(nn)) * 2 * np.pi / nn
        ex = fx + (fr + 4.5) * np.cos(ang)
        ey = fy + (fr * 0.9 + 4.5) * np.sin(ang)
        cids = nxt + np.arange(nn, dtype=np.float64)
        nxt += nn
        nuc = C.epithelium(ex, ey, ang + np.pi / 2, rng.random((nn, 32)), cids)
        prims.extend([col, epi, nuc])
        pts.append(np.stack([ex, ey, np.full(nn, 2.0)], axis=1))
    if not prims:
        return np.zeros((0, P.NCOL)), np.zeros((0, 3))
    return np.concatenate(prims), np.concatenate(pts)


def objects_for_window(
    scene: Scene, x0_um: float, y0_um: float, x1_um: float, y1_um: float, cache: bool = False
) -> tuple[F64, F64]:
    """Return all primitives and truth points of the blocks that can reach a window (µm)."""
    bi0 = int(np.floor((x0_um - REACH_UM) / BLOCK_UM))
    bi1 = int(np.floor((x1_um + REACH_UM) / BLOCK_UM))
    bj0 = int(np.floor((y0_um - REACH_UM) / BLOCK_UM))
    bj1 = int(np.floor((y1_um + REACH_UM) / BLOCK_UM))
    want = [(i, j) for j in range(bj0, bj1 + 1) for i in range(bi0, bi1 + 1)]
    missing = [b for b in want if b not in scene._cache] if cache else want
    r = CELL_REACH_UM
    clip = None if cache else (x0_um - r, y0_um - r, x1_um + r, y1_um + r)
    made = generate_blocks(scene, missing, clip) if missing else []
    fresh = dict(zip(missing, made, strict=True))
    if cache:
        scene._cache.update(fresh)
    got = [scene._cache[b] if cache else fresh[b] for b in want]
    prims, pts = [], []
    n = 0
    for pr, pt in got:
        q = pr.copy()
        q[:, P.CID] = np.where(q[:, P.CID] >= 0, q[:, P.CID] + n, -1.0)
        prims.append(q)
        pts.append(pt)
        n += len(pt)
    return np.concatenate(prims), np.concatenate(pts)


def evict(scene: Scene, min_bj: int) -> None:
    """Drop cached blocks above row ``min_bj`` (streaming renderers call this as they go down)."""
    for key in [k for k in scene._cache if k[1] < min_bj]:
        del scene._cache[key]
