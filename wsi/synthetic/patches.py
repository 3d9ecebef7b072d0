"""Labelled training patches rendered straight from synthetic scenes (no slide written).

``sample_patches`` draws a fresh scene (layout, stain, densities) every few patches and renders
windows from it with the same renderer that writes slides, so patches and slides look alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
from numpy.typing import NDArray

from wsi.synthetic import _prims as P
from wsi.synthetic._artefacts import ArtefactRates, artefacts_in
from wsi.synthetic._fields import (
    BG,
    NECRO,
    NONTUM,
    TUMOUR_LABELS,
    Layout,
    fields_at_points,
    labels_at_points,
)
from wsi.synthetic._noise import mix_seed
from wsi.synthetic._render import Forced, render_window
from wsi.synthetic._scene import _TUMOUR_BUILDERS, BUILDERS, Scene
from wsi.synthetic._stain import check_stain, stain_model
from wsi.synthetic.classes import PATTERN_CLASSES

PatchKind = Literal["pattern", "necrosis", "mitosis", "macrophage"]
PATCH_KINDS: tuple[str, ...] = get_args(PatchKind)
_GROUP = 16
_AREA_UM = 3000.0
_PATTERN_RATES = ArtefactRates(pen=0.15, fold=0.2, bubble=0.2, blur=0.2, dust=1.5)
_MITOTIC = (*P.TYPICAL_CODES, *P.TRIPOLAR_CODES)
_NEGATIVES = (20, 21, 22, 23, 24, 0)
_FORCEABLE = (*_MITOTIC, *_NEGATIVES, 4, 5, 6)


@dataclass(frozen=True)
class PatchBatch:
    """A batch of rendered patches and their truth.

    Attributes:
        images: (n, size, size, 3) uint8 RGB.
        labels: (n,) int64. pattern/necrosis: PATTERN_CLASSES index of the patch's majority
            class; mitosis: FIGURE_CLASSES index of the object at the centre (0 = negative);
            macrophage: zeros.
        masks: (n, size, size) uint8 label map in PATTERN_CLASSES values (pattern, necrosis), else
            None.
        points: per patch (k, 3) float32: x, y in patch pixels, class id. mitosis: every mitotic
            figure in the patch (1 typical, 2 tripolar); macrophage: every nucleated cell
            (1 macrophage, 2 other). None for pattern and necrosis.
        kinds: mitosis only: the centred object's kind per patch (``typical_prophase``,
            ``typical_metaphase``, ``typical_anaphase``, ``tripolar_spokes``,
            ``tripolar_groups``, ``apoptotic``, ``pyknotic``, ``lymphocyte``, ``karyorrhectic``,
            ``tangential``, ``nucleus``); else None.
        mpp: pixel size in µm.
        stain: ``"he"``, ``"cd68"`` or ``"cd163"``.
    """

    images: NDArray[np.uint8]
    labels: NDArray[np.int64]
    masks: NDArray[np.uint8] | None
    points: list[NDArray[np.float32]] | None
    kinds: tuple[str, ...] | None
    mpp: float
    stain: str


def _check(kind: str, n: int, size: int, mpp: float, seed: int, stain: str) -> None:
    if kind not in PATCH_KINDS:
        raise ValueError(f"unknown patch kind {kind!r}; expected one of {', '.join(PATCH_KINDS)}")
    if not 0 <= n <= 1_000_000:
        raise ValueError(f"n={n} patches is out of range; ask for 0 to 1,000,000")
    if not 8 <= size <= 4096:
        raise ValueError(f"size={size} px is out of range; use 8 to 4096")
    if not 0.1 <= mpp <= 16.0:
        raise ValueError(f"mpp={mpp} µm/px is out of range; use 0.1 to 16 (0.25 = 40x)")
    if not 0 <= seed < 2**63:
        raise ValueError(f"seed={seed} must be a non-negative integer")
    check_stain(stain)


def _scene(kind: str, seed: int, g: int, rng: np.random.Generator) -> Scene:
    sseed = mix_seed(seed, g, PATCH_KINDS.index(kind), 555)
    bias = tuple(float(b) for b in rng.normal(0.0, 0.04, 3))
    layout = Layout(
        seed=sseed,
        pattern_bias=(bias[0], bias[1], bias[2]),
        necrosis_t=float(rng.uniform(0.56, 0.64)),
        nontumour_t=float(rng.uniform(0.6, 0.68)),
    )
    tam = float(rng.uniform(0.05, 0.8)) if kind == "macrophage" else float(rng.uniform(0.1, 0.4))
    return Scene(
        layout,
        mitoses_per_mm2=float(rng.uniform(0.5, 8.0)),
        tripolar_fraction=0.35,
        tam_fraction=(tam, tam, tam, tam * 0.3),
        ramified_fraction=float(rng.uniform(0.2, 0.8)),
    )


@dataclass(frozen=True)
class _Pool:
    """Random candidate centres of one scene with their labels and a boundary flag."""

    x: NDArray[np.float64]
    y: NDArray[np.float64]
    lab: NDArray[np.uint8]
    boundary: NDArray[np.bool_]


def _pool(scene: Scene, rng: np.random.Generator, span_um: float, n: int = 512) -> _Pool:
    x = rng.uniform(0, _AREA_UM, n)
    y = rng.uniform(0, _AREA_UM, n)
    lab, _ = labels_at_points(scene.layout, x, y)
    dx = np.array([1.0, -1.0, 0.0, 0.0]) * span_um
    dy = np.array([0.0, 0.0, 1.0, -1.0]) * span_um
    nl, _ = labels_at_points(
        scene.layout, (x[None, :] + dx[:, None]).ravel(), (y[None, :] + dy[:, None]).ravel()
    )
    other = (nl.reshape(4, n) != lab[None, :]).any(axis=0)
    return _Pool(x, y, lab, other)


def _pick(
    pool: _Pool, rng: np.random.Generator, want: set[int], boundary: bool | None
) -> tuple[float, float]:
    """Return a pooled point (µm) labelled in ``want``; at a boundary if True, inside if False."""
    ok = np.isin(pool.lab, list(want))
    if boundary is not None:
        ok &= pool.boundary == boundary
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        idx = np.flatnonzero(np.isin(pool.lab, list(want)))
    if idx.size == 0:
        idx = np.arange(pool.x.size)
    i = int(idx[rng.integers(idx.size)])
    return float(pool.x[i]), float(pool.y[i])


def _pick_artefact(scene: Scene, rng: np.random.Generator) -> tuple[float, float] | None:
    arts = [
        a
        for a in artefacts_in(scene.seed, _PATTERN_RATES, 0, 0, _AREA_UM, _AREA_UM)
        if a.kind != "dust"
    ]
    if not arts:
        return None
    a = arts[int(rng.integers(len(arts)))]
    k = int(rng.integers(len(a.pts)))
    jit = rng.normal(0.0, 0.3 * a.size, 2) if a.kind in ("bubble", "blur") else np.zeros(2)
    return float(a.pts[k, 0] + jit[0]), float(a.pts[k, 1] + jit[1])


def _pattern_target(kind: str, i: int, rng: np.random.Generator) -> tuple[int, bool]:
    if kind == "necrosis":
        if rng.random() < 0.7:
            return NECRO, True
        return int(rng.integers(len(PATTERN_CLASSES))), bool(rng.random() < 0.5)
    return i % len(PATTERN_CLASSES), bool(rng.random() < 0.35)


def _forced(code: int, x: float, y: float, scene: Scene, rng: np.random.Generator) -> Forced:
    th = fields_at_points(scene.layout, ("orient",), np.array([x]), np.array([y]))[0] * 3 * np.pi
    u = rng.random((1, 32))
    if code == 0:
        lab, _ = labels_at_points(scene.layout, np.array([x]), np.array([y]))
        fn = _TUMOUR_BUILDERS.get(int(lab[0]), _TUMOUR_BUILDERS[TUMOUR_LABELS[0]])
        prims = fn(np.array([x]), np.array([y]), th, u, np.zeros(1))
    else:
        prims = BUILDERS[code](np.array([x]), np.array([y]), th, u, np.zeros(1))
    return Forced(prims, (x, y), 9.0 if code != 23 else 6.0)


def _mitosis_code(i: int, rng: np.random.Generator) -> int:
    r = i % 3
    if r == 1:
        return int(rng.choice(P.TYPICAL_CODES))
    if r == 2:
        return int(rng.choice(P.TRIPOLAR_CODES))
    return int(_NEGATIVES[int(rng.integers(len(_NEGATIVES) + 1)) % len(_NEGATIVES)])


def sample_patches(
    kind: PatchKind, n: int, size: int, mpp: float, seed: int, stain: str = "he"
) -> PatchBatch:
    """Render ``n`` labelled patches of ``size`` × ``size`` px at ``mpp`` µm/px.

    Args:
        kind: ``"pattern"`` (all six PATTERN_CLASSES, balanced, boundaries included),
            ``"necrosis"`` (biased to necrosis/viable boundaries), ``"mitosis"`` (centred ±4 px
            on a typical or tripolar mitosis or a negative, a third each) or ``"macrophage"``
            (tissue with macrophages at varied density; points of every nucleated cell).
        n: number of patches.
        size: patch edge in pixels.
        mpp: pixel size in µm (0.1 to 16).
        seed: makes the batch deterministic.
        stain: ``"he"``, ``"cd68"`` or ``"cd163"``.

    Raises:
        ValueError: on an unknown kind or stain, or an out-of-range size, mpp, n or seed.
    """
    _check(kind, n, size, mpp, seed, stain)
    if kind in ("pattern", "necrosis"):
        return _region_patches(kind, n, size, mpp, seed, stain)
    if kind == "mitosis":
        return _mitosis_patches(n, size, mpp, seed, stain)
    return _macrophage_patches(n, size, mpp, seed, stain)


def _region_patches(kind: str, n: int, size: int, mpp: float, seed: int, stain: str) -> PatchBatch:
    rng = np.random.default_rng(mix_seed(seed, 17))
    order = rng.permutation(n)
    images = np.zeros((n, size, size, 3), np.uint8)
    labels = np.zeros(n, np.int64)
    masks = np.zeros((n, size, size), np.uint8)
    span = size * mpp
    for i in range(n):
        if i % _GROUP == 0:
            scene = _scene(kind, seed, i // _GROUP, rng)
            st = stain_model(stain, scene.seed)
            pool = _pool(scene, rng, span / 3)
        target, boundary = _pattern_target(kind, int(order[i]), rng)
        xy = _pick_artefact(scene, rng) if target == BG and rng.random() < 0.5 else None
        if xy is None:
            xy = _pick(pool, rng, {target}, boundary or None)
        gx0 = round(xy[0] / mpp) - size // 2
        gy0 = round(xy[1] / mpp) - size // 2
        r = render_window(scene, st, _PATTERN_RATES, gx0, gy0, size, size, mpp)
        images[i] = r.rgb
        masks[i] = r.labels
        labels[i] = int(np.bincount(r.labels.ravel(), minlength=len(PATTERN_CLASSES)).argmax())
    return PatchBatch(images, labels, masks, None, None, float(mpp), stain)


def _grid(k: int, step: int) -> list[tuple[int, int]]:
    cols = int(np.ceil(np.sqrt(k)))
    return [((i % cols) * step, (i // cols) * step) for i in range(k)]


def _mitosis_patches(
    n: int, size: int, mpp: float, seed: int, stain: str, kinds: Sequence[str] | None = None
) -> PatchBatch:
    """Render mitosis crops a group at a time: one canvas per group, forced objects on a grid."""
    rng = np.random.default_rng(mix_seed(seed, 17))
    order = rng.permutation(n)
    codes = [_mitosis_code(int(o), rng) for o in order]
    if kinds is not None:
        codes = [P.KIND_CODES[k] for k in kinds]
    images = np.zeros((n, size, size, 3), np.uint8)
    points: list[NDArray[np.float32]] = [np.zeros((0, 3), np.float32)] * n
    step = int(np.ceil((size * mpp / 2 + 14.0) / mpp))
    todo = list(range(n))
    g = 0
    while todo:
        group, todo = todo[:_GROUP], todo[_GROUP:]
        scene = _scene("mitosis", seed, g, rng)
        st = stain_model(stain, scene.seed)
        pool = _pool(scene, rng, 14.0, 256)
        g += 1
        want_nec = codes[group[0]] == 23
        if want_nec:
            group, todo = group[:1], group[1:] + todo
        elif any(codes[i] == 23 for i in group):
            todo = [i for i in group if codes[i] == 23] + todo
            group = [i for i in group if codes[i] != 23]
        ax, ay = _pick(pool, rng, {NECRO} if want_nec else set(TUMOUR_LABELS), False)
        offs = _grid(len(group), step)
        mx, my = max(o[0] for o in offs), max(o[1] for o in offs)
        cx0 = round(ax / mpp) - mx // 2
        cy0 = round(ay / mpp) - my // 2
        forced, centres, bad = [], [], []
        for i, (ox, oy) in zip(group, offs, strict=True):
            jx, jy = (int(v) for v in rng.integers(-4, 5, 2))
            fx, fy = (cx0 + ox + jx) * mpp, (cy0 + oy + jy) * mpp
            if not _placeable(scene, codes[i], fx, fy):
                bad.append(i)
                continue
            forced.append(_forced(codes[i], fx, fy, scene, rng))
            centres.append((i, cx0 + ox, cy0 + oy))
        todo = bad + todo
        if not forced:
            continue
        w, h = mx + size, my + size
        x0, y0 = cx0 - size // 2, cy0 - size // 2
        r = render_window(scene, st, None, x0, y0, w, h, mpp, forced=forced)
        fpts = np.array(
            [
                [f.clear_xy[0] / mpp - x0, f.clear_xy[1] / mpp - y0, float(codes[c[0]])]
                for f, c in zip(forced, centres, strict=True)
            ]
        )
        allpts = np.concatenate([r.points, fpts])
        for i, px, py in centres:
            lx, ly = px - size // 2 - x0, py - size // 2 - y0
            images[i] = r.rgb[ly : ly + size, lx : lx + size]
            points[i] = _mitosis_points(allpts, lx, ly, size)
    labels = P.mitosis_class(np.array(codes, np.int64))
    kinds = tuple(P.KIND_NAMES[c] for c in codes)
    return PatchBatch(images, labels, None, points, kinds, float(mpp), stain)


def sample_objects(
    kinds: Sequence[str], size: int, mpp: float, seed: int, stain: str = "he"
) -> PatchBatch:
    """Render one crop centred (±4 px) on each named object kind, e.g. for figures and docs.

    Args:
        kinds: object kinds as in ``PatchBatch.kinds`` (``typical_metaphase``, ``apoptotic`` …).
        size: crop edge in pixels.
        mpp: pixel size in µm.
        seed: makes the crops deterministic.
        stain: ``"he"``, ``"cd68"`` or ``"cd163"``.
    """
    _check("mitosis", len(kinds), size, mpp, seed, stain)
    bad = [k for k in kinds if k not in P.KIND_CODES or P.KIND_CODES[k] not in _FORCEABLE]
    if bad:
        raise ValueError(
            f"cannot centre a crop on {bad}; use one of "
            f"{', '.join(P.KIND_NAMES[c] for c in _FORCEABLE)}"
        )
    return _mitosis_patches(len(kinds), size, mpp, seed, stain, kinds)


def _placeable(scene: Scene, code: int, x: float, y: float) -> bool:
    """Return whether a forced object at (x, y) µm sits well inside its region."""
    d = 10.0
    xs = np.array([x, x + d, x - d, x, x])
    ys = np.array([y, y, y, y + d, y - d])
    lab, _ = labels_at_points(scene.layout, xs, ys)
    want = (NECRO,) if code == 23 else TUMOUR_LABELS
    return bool(np.isin(lab, want).all())


def _macrophage_patches(n: int, size: int, mpp: float, seed: int, stain: str) -> PatchBatch:
    """Render macrophage patches as adjacent tiles of one canvas per group."""
    rng = np.random.default_rng(mix_seed(seed, 17))
    images = np.zeros((n, size, size, 3), np.uint8)
    points: list[NDArray[np.float32]] = []
    per = max(1, min(_GROUP, int((1024 // size) ** 2)))
    for g, s0 in enumerate(range(0, n, per)):
        k = min(per, n - s0)
        scene = _scene("macrophage", seed, g, rng)
        st = stain_model(stain, scene.seed)
        pool = _pool(scene, rng, 0.0, 256)
        want = set(TUMOUR_LABELS) if rng.random() < 0.8 else {NONTUM}
        ax, ay = _pick(pool, rng, want, None)
        offs = _grid(k, size)
        w = max(o[0] for o in offs) + size
        h = max(o[1] for o in offs) + size
        x0, y0 = round(ax / mpp) - w // 2, round(ay / mpp) - h // 2
        r = render_window(scene, st, None, x0, y0, w, h, mpp)
        for j, (ox, oy) in enumerate(offs):
            images[s0 + j] = r.rgb[oy : oy + size, ox : ox + size]
            points.append(_cell_points(r.points, ox, oy, size))
    return PatchBatch(images, np.zeros(n, np.int64), None, points, None, float(mpp), stain)


def _in_crop(pts: NDArray[np.float64], lx: int, ly: int, size: int) -> NDArray[np.float64]:
    m = (pts[:, 0] >= lx) & (pts[:, 0] < lx + size) & (pts[:, 1] >= ly) & (pts[:, 1] < ly + size)
    out = pts[m].copy()
    out[:, 0] -= lx
    out[:, 1] -= ly
    return out


def _mitosis_points(pts: NDArray[np.float64], lx: int, ly: int, size: int) -> NDArray[np.float32]:
    """Return (k, 3) x, y (crop px), FIGURE_CLASSES index of every mitotic figure in a crop."""
    c = _in_crop(pts, lx, ly, size)
    codes = c[:, 2].astype(np.int64)
    m = np.isin(codes, _MITOTIC)
    return np.stack([c[m, 0], c[m, 1], P.mitosis_class(codes[m])], axis=1).astype(np.float32)


def _cell_points(pts: NDArray[np.float64], lx: int, ly: int, size: int) -> NDArray[np.float32]:
    """Return (k, 3) x, y (crop px), class (1 macrophage, 2 other) of every nucleated cell."""
    c = _in_crop(pts, lx, ly, size)
    codes = c[:, 2].astype(np.int64)
    m = ~np.isin(codes, P.NON_NUCLEATED)
    cls = np.where(np.isin(codes[m], P.MACROPHAGE_CODES), 1, 2)
    return np.stack([c[m, 0], c[m, 1], cls], axis=1).astype(np.float32)
