"""Slide artefacts: pen ink, tissue folds, air bubbles, out-of-focus patches and dust.

Artefacts live on a coarse block lattice (``ART_BLOCK_UM``) with per-block seeds, like cells, so
a window sees the same artefacts whatever the tiling. Pen, folds, bubbles and blur are labelled
background (they must be excluded from analysis). Dust specks are a thresholded noise field (too
small to label).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

from wsi.synthetic._noise import mix_seed

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]

ART_BLOCK_UM = 2000.0
_REACH_UM = 1200.0
PEN_OD = {
    "blue": (0.75, 0.45, 0.08),
    "green": (0.85, 0.2, 0.6),
    "black": (0.95, 0.95, 0.85),
}


@dataclass(frozen=True)
class ArtefactRates:
    """Expected artefacts per mm² of section; ``dust`` scales the density of dust specks."""

    pen: float = 0.02
    fold: float = 0.03
    bubble: float = 0.03
    blur: float = 0.03
    dust: float = 0.5


@dataclass(frozen=True)
class Artefact:
    """One artefact: ``kind`` and its geometry in µm (``pts`` polyline or centre, ``size``)."""

    kind: str
    pts: F64
    size: float
    od: tuple[float, float, float] = (0.0, 0.0, 0.0)


@lru_cache(maxsize=4096)
def _block(seed: int, bi: int, bj: int, rates: ArtefactRates) -> tuple[Artefact, ...]:
    rng = np.random.default_rng(mix_seed(seed, bi, bj, 909))
    area = (ART_BLOCK_UM / 1000.0) ** 2
    out: list[Artefact] = []
    origin = np.array([bi, bj], np.float64) * ART_BLOCK_UM
    for _ in range(rng.poisson(rates.pen * area)):
        start = origin + rng.random(2) * ART_BLOCK_UM
        ang = rng.uniform(0, 2 * np.pi)
        steps = [start]
        for _ in range(6):
            ang += rng.normal(0, 0.35)
            steps.append(steps[-1] + 150.0 * np.array([np.cos(ang), np.sin(ang)]))
        od = PEN_OD[("blue", "green", "black")[int(rng.integers(3))]]
        out.append(Artefact("pen", np.array(steps), float(rng.uniform(40, 120)), od))
    for _ in range(rng.poisson(rates.fold * area)):
        c = origin + rng.random(2) * ART_BLOCK_UM
        ang = rng.uniform(0, np.pi)
        half = rng.uniform(250, 900) * np.array([np.cos(ang), np.sin(ang)])
        out.append(Artefact("fold", np.stack([c - half, c + half]), float(rng.uniform(25, 90))))
    for _ in range(rng.poisson(rates.bubble * area)):
        c = origin + rng.random(2) * ART_BLOCK_UM
        out.append(Artefact("bubble", c[None, :], float(rng.uniform(120, 500))))
    for _ in range(rng.poisson(rates.blur * area)):
        c = origin + rng.random(2) * ART_BLOCK_UM
        out.append(Artefact("blur", c[None, :], float(rng.uniform(150, 600))))
    return tuple(out)


def artefacts_in(
    seed: int, rates: ArtefactRates, x0: float, y0: float, x1: float, y1: float
) -> list[Artefact]:
    """Return artefacts of the blocks that can reach the window [x0, x1) × [y0, y1) µm."""
    bi0 = int(np.floor((x0 - _REACH_UM) / ART_BLOCK_UM))
    bi1 = int(np.floor((x1 + _REACH_UM) / ART_BLOCK_UM))
    bj0 = int(np.floor((y0 - _REACH_UM) / ART_BLOCK_UM))
    bj1 = int(np.floor((y1 + _REACH_UM) / ART_BLOCK_UM))
    out: list[Artefact] = []
    for bj in range(bj0, bj1 + 1):
        for bi in range(bi0, bi1 + 1):
            out.extend(_block(seed, bi, bj, rates))
    return out


def _seg_dist(xs: F64, ys: F64, pts: F64) -> F64:
    """Return the distance (µm) from grid points (xs (1, w), ys (h, 1)) to a polyline."""
    best = np.full((ys.size, xs.size), np.inf)
    for p, q in itertools.pairwise(pts):
        d = q - p
        t = ((xs - p[0]) * d[0] + (ys - p[1]) * d[1]) / max(float(d @ d), 1e-9)
        t = np.clip(t, 0.0, 1.0)
        best = np.minimum(best, np.hypot(xs - p[0] - t * d[0], ys - p[1] - t * d[1]))
    return best


@dataclass
class ArtefactLayer:
    """Per-pixel effect of the artefacts on a window."""

    label_bg: NDArray[np.bool_]
    conc_gain: F32
    extra_od: F32 | None
    blur_w: F32 | None


def render_artefacts(
    arts: list[Artefact], xs: F64, ys: F64, px_um: float, need_pixels: bool = True
) -> ArtefactLayer:
    """Evaluate artefacts at pixel centres ``xs`` (1, w) and ``ys`` (h, 1) in µm."""
    h, w = ys.size, xs.size
    lab = np.zeros((h, w), bool)
    gain = np.ones((h, w), np.float32)
    od = np.zeros((3, h, w), np.float32) if need_pixels else None
    blur = np.zeros((h, w), np.float32) if need_pixels else None
    soft = max(px_um, 2.0)
    x0, x1, y0, y1 = xs[0, 0], xs[0, -1], ys[0, 0], ys[-1, 0]
    for a in arts:
        lo = a.pts.min(axis=0) - a.size - 10
        hi = a.pts.max(axis=0) + a.size + 10
        if hi[0] < x0 or lo[0] > x1 or hi[1] < y0 or lo[1] > y1:
            continue
        if a.kind in ("pen", "fold"):
            d = _seg_dist(xs, ys, a.pts)
        else:
            d = np.hypot(xs - a.pts[0, 0], ys - a.pts[0, 1])
        inside = np.clip((a.size - d) / soft + 0.5, 0.0, 1.0).astype(np.float32)
        lab |= inside > 0.5
        if a.kind == "fold":
            gain *= 1.0 + 0.9 * inside
        elif a.kind == "bubble":
            gain *= 1.0 - 0.35 * inside
        if od is None or blur is None:
            continue
        if a.kind == "pen":
            od += inside[None] * np.array(a.od, np.float32)[:, None, None]
        elif a.kind == "bubble":
            rim = np.clip(1.0 - np.abs(d - a.size) / max(6.0, 1.5 * px_um), 0.0, 1.0)
            od += rim.astype(np.float32)[None] * np.float32(0.55)
        elif a.kind == "blur":
            blur = np.maximum(blur, inside)
    return ArtefactLayer(lab, gain, od, blur)
