"""Candidate finding on the haematoxylin channel, peak finding on heat maps, point NMS."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from models.cells.stain import haematoxylin_od


def find_peaks(
    heat: NDArray[np.float32], *, threshold: float, min_distance_px: int
) -> NDArray[np.int64]:
    """Return (k, 2) (row, col) of local maxima of ``heat`` at or above ``threshold``.

    A pixel is a peak when it equals the maximum in its (2·min_distance+1)² window; plateaus
    keep one pixel (the first in raster order).
    """
    if heat.ndim != 2:
        raise ValueError(f"heat map must be 2-D, got shape {heat.shape}")
    size = 2 * max(int(min_distance_px), 1) + 1
    mx = ndi.maximum_filter(heat, size=size, mode="nearest")
    peak = (heat >= mx) & (heat >= threshold)
    lab, n = ndi.label(peak)
    if n == 0:
        return np.zeros((0, 2), dtype=np.int64)
    centres = ndi.minimum_position(np.arange(heat.size).reshape(heat.shape), lab, range(1, n + 1))
    return np.asarray(centres, dtype=np.int64).reshape(-1, 2)


def haematoxylin_candidates(
    rgb: NDArray[np.uint8], *, mpp: float, sigma_um: float, min_od: float, min_distance_um: float
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Return candidate nucleus centres (row, col) and their smoothed haematoxylin OD.

    Dark chromatin (mitotic figures and their look-alikes) gives high, compact peaks of the
    smoothed haematoxylin optical density.

    Args:
        rgb: (H, W, 3) uint8 tile at ``mpp``.
        mpp: µm per pixel of the tile.
        sigma_um: Gaussian smoothing in µm.
        min_od: lowest peak OD kept.
        min_distance_um: closest two candidates may be (µm).
    """
    h = ndi.gaussian_filter(haematoxylin_od(rgb), sigma=sigma_um / mpp)
    rc = find_peaks(h, threshold=min_od, min_distance_px=max(1, round(min_distance_um / mpp)))
    return rc, h[rc[:, 0], rc[:, 1]] if len(rc) else np.zeros(0, dtype=np.float32)


def nms_points(
    l0_xy: NDArray[np.float64], scores: NDArray[np.float32], radius: float
) -> NDArray[np.int64]:
    """Return indices kept by greedy non-maximum suppression (highest score first) within radius."""
    pts = np.asarray(l0_xy, dtype=np.float64).reshape(-1, 2)
    if len(pts) == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-np.asarray(scores), kind="stable")
    tree = cKDTree(pts)
    alive = np.ones(len(pts), dtype=bool)
    keep: list[int] = []
    for i in order:
        if not alive[i]:
            continue
        keep.append(int(i))
        alive[tree.query_ball_point(pts[i], radius)] = False
    return np.array(sorted(keep), dtype=np.int64)


def crops_at(rgb: NDArray[np.uint8], rc: NDArray[np.int64], size: int) -> NDArray[np.uint8]:
    """Return (k, size, size, 3) crops centred on ``rc``, padded with white at the borders."""
    half = size // 2
    pad = np.pad(rgb, ((half, half), (half, half), (0, 0)), constant_values=255)
    out = np.empty((len(rc), size, size, 3), dtype=np.uint8)
    for k, (r, c) in enumerate(rc):
        out[k] = pad[r : r + size, c : c + size]
    return out


def cluster_points(rows: NDArray[np.float64], radius: float) -> NDArray[np.float64]:
    """Merge detections of one object: greedy clusters within ``radius`` of the best-scored one.

    ``rows`` is (n, 3 + F): x, y, score, then features. Each cluster becomes one row: the
    score-weighted mean position, the highest score, and the score-weighted mean features (e.g.
    class probabilities). A figure whose chromosome groups gave several candidates (anaphase,
    tripolar groups) thus comes out once, at its centre.
    """
    rows = np.asarray(rows, dtype=np.float64)
    if len(rows) == 0:
        return rows.reshape(0, rows.shape[1] if rows.ndim == 2 else 3)
    order = np.argsort(-rows[:, 2], kind="stable")
    tree = cKDTree(rows[:, :2])
    alive = np.ones(len(rows), dtype=bool)
    out = []
    for i in order:
        if not alive[i]:
            continue
        idx = np.array([j for j in tree.query_ball_point(rows[i, :2], radius) if alive[j]])
        alive[idx] = False
        w = rows[idx, 2] / rows[idx, 2].sum()
        merged = np.empty(rows.shape[1])
        merged[:2] = w @ rows[idx, :2]
        merged[2] = rows[idx, 2].max()
        merged[3:] = w @ rows[idx, 3:]
        out.append(merged)
    return np.array(out)
