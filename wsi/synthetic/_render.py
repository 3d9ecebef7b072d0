"""Render any window of a scene, at any pixel size, to RGB plus its label map.

This one function draws patches (``sample_patches``) and slide tiles (``generate_slide``), so both
look the same. A window is given on a pixel grid of spacing ``px_um`` by its integer origin
(``gx0``, ``gy0``); all noise is hashed from absolute positions, so overlapping windows agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from wsi.synthetic import _prims as P
from wsi.synthetic._artefacts import (
    ArtefactLayer,
    ArtefactRates,
    artefacts_in,
    render_artefacts,
)
from wsi.synthetic._fields import BG, NECRO, NONTUM, PLEO, SPINDLE, SQUAM, labels_on_grid
from wsi.synthetic._noise import fbm_grid, mix_seed, noise_grid, white_grid3
from wsi.synthetic._scene import Scene, objects_for_window
from wsi.synthetic._splat import splat
from wsi.synthetic._stain import StainModel, to_rgb

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]

_BASE_E = {SPINDLE: 0.20, PLEO: 0.18, SQUAM: 0.16, NECRO: 0.30, NONTUM: 0.26}
_BASE_H = {SPINDLE: 0.12, PLEO: 0.12, SQUAM: 0.12, NECRO: 0.07, NONTUM: 0.07}
#: Caps (soft) of the summed cytoplasm/stroma primitives: cells abut, they do not stack.
_BASE_CAP = np.array([0.35, 0.45, 1.1], np.float32)[:, None, None]
_ART_BLUR_UM = 2.5
_SAT = 2.2


@dataclass(frozen=True)
class Forced:
    """Objects forced into a window (patch centres): extra primitives and a cleared disc.

    Attributes:
        prims: primitive rows to add (µm, CID ignored).
        clear_xy: (x, y) µm of a disc whose scene cells are removed first.
        clear_r: radius of that disc in µm.
    """

    prims: F64
    clear_xy: tuple[float, float]
    clear_r: float


@dataclass
class Rendered:
    """A rendered window: RGB, labels and the truth points of the scene inside it."""

    rgb: NDArray[np.uint8]
    labels: NDArray[np.uint8]
    points: F64  # (k, 3): x, y in window pixels, kind code


def _base_planes(
    scene: Scene, lab: NDArray[np.uint8], gx0: int, gy0: int, w: int, h: int, px_um: float
) -> tuple[F32, F32]:
    e = np.zeros((h, w), np.float32)
    hh = np.zeros((h, w), np.float32)
    for code, val in _BASE_E.items():
        e[lab == code] = val
        hh[lab == code] = _BASE_H[code]
    s = scene.seed
    fib = fbm_grid(gx0, gy0, w, h, px_um, 14.0, mix_seed(s, 11), 3)
    # ridged noise: thin bright-dark veins that read as wavy collagen fibres and retraction
    ridge = 1.0 - np.abs(2.0 * fbm_grid(gx0, gy0, w, h, px_um, 9.0, mix_seed(s, 15), 2) - 1.0)
    e *= (0.45 + 1.1 * fib) * (0.55 + 0.7 * ridge**3)
    nec = lab == NECRO
    if nec.any():
        dust = fbm_grid(gx0, gy0, w, h, px_um, 1.6, mix_seed(s, 12), 1)
        mott = fbm_grid(gx0, gy0, w, h, px_um, 30.0, mix_seed(s, 13), 2)
        hh += nec * (1.2 * np.clip((dust - 0.86) * 7.0, 0.0, 1.0) + 0.08 * mott)
        e += nec * 0.2 * (mott - 0.5)
    gaps = fbm_grid(gx0, gy0, w, h, px_um, 40.0, mix_seed(s, 14), 2)
    hole = np.clip((gaps - 0.72) * 10.0, 0.0, 1.0) * (lab != NECRO)
    e *= 1.0 - 0.9 * hole
    return hh, e


def _up2(c: F32) -> F32:
    """Bilinearly upsample (k, n, m) planes 2× (pixel-centre aligned), dropping the edge pixels.

    Coarse pixel ``C`` covers fine pixels ``2C`` and ``2C + 1``; the result covers fine pixels
    ``2(C0 + 1)`` … ``2(C0 + n − 1) − 1`` of the input's coarse range ``C0`` … ``C0 + n − 1``.
    """
    mid = c[:, 1:-1] * np.float32(0.75)
    rows = np.empty((c.shape[0], 2 * (c.shape[1] - 2), c.shape[2]), np.float32)
    rows[:, 0::2] = mid + np.float32(0.25) * c[:, :-2]
    rows[:, 1::2] = mid + np.float32(0.25) * c[:, 2:]
    mid = rows[:, :, 1:-1] * np.float32(0.75)
    out = np.empty((c.shape[0], rows.shape[1], 2 * (c.shape[2] - 2)), np.float32)
    out[:, :, 0::2] = mid + np.float32(0.25) * rows[:, :, :-2]
    out[:, :, 1::2] = mid + np.float32(0.25) * rows[:, :, 2:]
    return out


def _layers(
    scene: Scene, prims: F64, X0: int, Y0: int, W: int, H: int, px_um: float, dab: bool
) -> tuple[F32, NDArray[np.uint8]]:
    """Return (3, H, W) stain concentrations (before artefacts) and (H, W) labels of a window.

    Below 0.45 µm/px the smooth parts (region background, cytoplasm, stroma, the clear layer and
    the labels) are computed on a 2× coarser grid and upsampled; nuclei stay at full resolution.
    """
    seed = mix_seed(scene.seed, 21)
    f = 1 if px_um >= 0.45 else 2
    top = prims[:, P.LAYER] == P.TOP
    if f == 1:
        cx0, cy0, cw, ch = X0, Y0, W, H
    else:
        cx0, cy0 = X0 // 2 - 1, Y0 // 2 - 1
        cw = (X0 + W + 1) // 2 - cx0 + 1
        ch = (Y0 + H + 1) // 2 - cy0 + 1
    cpx = f * px_um
    lab, _rim = labels_on_grid(scene.layout, cx0, cy0, cw, ch, cpx)
    if len(prims) == 0 and not lab.any():  # glass: nothing to draw
        return np.zeros((3, H, W), np.float32), _fine_labels(lab, f, X0, Y0, W, H, cx0, cy0)
    hh, e = _base_planes(scene, lab, cx0, cy0, cw, ch, cpx)
    ctex = fbm_grid(cx0, cy0, cw, ch, cpx, 0.9, seed, 2)
    want = (0, 1, 2, 3) if dab else (0, 1, 3)
    if f == 1:
        want = (*want, 4, 5, 6) if dab else (*want, 4, 5)
    base = splat(prims[~top] if f == 2 else prims, cx0, cy0, cw, ch, cpx, ctex, want)
    base_c = _BASE_CAP * (1.0 - np.exp(-base[0:3] / _BASE_CAP))
    conc = np.stack([hh + base_c[0], e + base_c[1], base_c[2]])
    conc *= 1.0 - np.clip(base[3], 0.0, 1.0)
    if f == 1:
        return conc + base[4:7], lab
    oy, ox = Y0 - 2 * (cy0 + 1), X0 - 2 * (cx0 + 1)
    conc = _up2(conc)[:, oy : oy + H, ox : ox + W]
    lab = _fine_labels(lab, f, X0, Y0, W, H, cx0, cy0)
    if not top.any():
        return conc, lab
    tex = fbm_grid(X0, Y0, W, H, px_um, 0.9, seed, 2)
    fine = splat(prims[top], X0, Y0, W, H, px_um, tex, (4, 5, 6) if dab else (4, 5))
    return conc + fine[4:7], lab


def _fine_labels(
    lab: NDArray[np.uint8], f: int, X0: int, Y0: int, W: int, H: int, cx0: int, cy0: int
) -> NDArray[np.uint8]:
    """Return the window's labels from labels on the f× coarser grid starting at (cx0, cy0)."""
    if f == 1:
        return lab
    up = np.repeat(np.repeat(lab, 2, axis=0), 2, axis=1)
    return np.ascontiguousarray(
        up[Y0 - 2 * cy0 : Y0 - 2 * cy0 + H, X0 - 2 * cx0 : X0 - 2 * cx0 + W]
    )


def _artefacts(
    scene: Scene, rates: ArtefactRates | None, X0: int, Y0: int, W: int, H: int, px_um: float
) -> ArtefactLayer | None:
    """Return the artefacts' effect on a window (dust specks folded into the extra OD)."""
    if rates is None:
        return None
    xs = ((np.arange(X0, X0 + W, dtype=np.float64) + 0.5) * px_um)[None, :]
    ys = ((np.arange(Y0, Y0 + H, dtype=np.float64) + 0.5) * px_um)[:, None]
    x0u, y0u = X0 * px_um, Y0 * px_um
    arts = artefacts_in(scene.seed, rates, x0u, y0u, x0u + W * px_um, y0u + H * px_um)
    layer = render_artefacts(arts, xs, ys, px_um)
    if layer.extra_od is not None and rates.dust > 0:
        t = 1.0 - 0.002 * rates.dust
        d = noise_grid(X0, Y0, W, H, px_um, 6.0, mix_seed(scene.seed, 41))
        speck = np.clip((d - t) / (1.0 - t) * 3.0, 0.0, 1.0)
        layer.extra_od += speck[None] * np.array([0.8, 0.8, 0.7], np.float32)[:, None, None]
    return layer


def _drop_cleared(prims: F64, pts: F64, forced: Sequence[Forced]) -> tuple[F64, F64]:
    gone = np.zeros(len(pts), bool)
    for f in forced:
        gone |= np.hypot(pts[:, 0] - f.clear_xy[0], pts[:, 1] - f.clear_xy[1]) < f.clear_r
    keep = ~np.isin(prims[:, P.CID], np.flatnonzero(gone).astype(np.float64))
    extra = np.concatenate([f.prims for f in forced])
    extra[:, P.CID] = -1.0
    return np.concatenate([prims[keep], extra]), pts[~gone]


def render_window(
    scene: Scene,
    stain: StainModel,
    rates: ArtefactRates | None,
    gx0: int,
    gy0: int,
    w: int,
    h: int,
    px_um: float,
    *,
    forced: Sequence[Forced] = (),
    cache: bool = False,
) -> Rendered:
    """Render a window of the scene.

    Args:
        scene: the scene.
        stain: stain model.
        rates: artefact rates, or None for no artefacts.
        gx0: window left edge in pixels of the grid with spacing ``px_um``.
        gy0: window top edge, same grid.
        w: width in pixels.
        h: height in pixels.
        px_um: pixel spacing in µm.
        forced: objects forced into the window (patch centres).
        cache: keep generated blocks in the scene's cache (streaming slide rendering).
    """
    sig_px = stain.blur_um / px_um
    art_sig = min(_ART_BLUR_UM / px_um, 10.0)
    m = int(np.ceil(3 * max(sig_px, art_sig if rates else 0.0))) + 1
    X0, Y0, W, H = gx0 - m, gy0 - m, w + 2 * m, h + 2 * m
    x0u, y0u = X0 * px_um, Y0 * px_um
    prims, pts = objects_for_window(scene, x0u, y0u, x0u + W * px_um, y0u + H * px_um, cache)
    if forced:
        prims, pts = _drop_cleared(prims, pts, forced)
    conc, lab = _layers(scene, prims, X0, Y0, W, H, px_um, stain.name != "he")
    if stain.name == "cd68":  # CD68 marks lysosomes: granular cytoplasmic DAB
        gran = noise_grid(X0, Y0, W, H, px_um, 0.7, mix_seed(scene.seed, 51))
        conc[2] *= 0.35 + 1.3 * gran
    conc = (_SAT * (1.0 - np.exp(-np.maximum(conc, 0.0) / _SAT))).astype(np.float32)
    layer = _artefacts(scene, rates, X0, Y0, W, H, px_um)
    extra_od, blur_w = (layer.extra_od, layer.blur_w) if layer else (None, None)
    if layer is not None:
        conc *= layer.conc_gain
        lab = np.where(layer.label_bg, np.uint8(BG), lab)
    rgb = to_rgb(conc.astype(np.float32), stain, extra_od)
    if sig_px > 0.3:
        rgb = ndimage.gaussian_filter(rgb, (0, sig_px, sig_px), truncate=3.0)
    if blur_w is not None and blur_w.any():
        soft = ndimage.gaussian_filter(rgb, (0, art_sig, art_sig), truncate=3.0)
        rgb = rgb + (soft - rgb) * blur_w[None]
    crop = rgb[:, m : m + h, m : m + w] + np.float32(0.5)
    crop += (white_grid3(gx0, gy0, w, h, mix_seed(scene.seed, 31)) - 0.5) * np.float32(
        3.46 * stain.noise
    )
    out = np.clip(crop, 0, 255).astype(np.uint8).transpose(1, 2, 0).copy()
    in_win = (pts[:, 0] >= gx0 * px_um) & (pts[:, 0] < (gx0 + w) * px_um)
    in_win &= (pts[:, 1] >= gy0 * px_um) & (pts[:, 1] < (gy0 + h) * px_um)
    wpts = pts[in_win].copy()
    wpts[:, 0] = wpts[:, 0] / px_um - gx0
    wpts[:, 1] = wpts[:, 1] / px_um - gy0
    return Rendered(out, np.ascontiguousarray(lab[m : m + h, m : m + w]), wpts)
