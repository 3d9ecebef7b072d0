"""Scoring model outputs against synthetic ground truth (label maps in level-0 geometry).

Used by ``scripts/evaluate.py`` (patterns, necrosis) and reusable by the cell evaluations.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from wsi.tiling import TileGrid


def tile_majority_labels(
    grid: TileGrid, label_map: NDArray[np.uint8], l0_per_px: float, n_classes: int
) -> NDArray[np.int64]:
    """Majority truth label inside each tile of ``grid``.

    Args:
        grid: the tile grid (level-0 tile corners).
        label_map: (rows, cols) class per pixel; pixel (r, c) covers level-0
            ``[c·l0_per_px, (c+1)·l0_per_px)`` in x and likewise in y.
        l0_per_px: level-0 pixels per label-map pixel.
        n_classes: number of classes (label values 0 … n_classes−1).

    Returns:
        (N,) label of each tile (pixels outside the map count as class 0, background).
    """
    rows, cols = label_map.shape
    out = np.zeros(len(grid), dtype=np.int64)
    edge = grid.l0_tile / l0_per_px
    for k, (x, y) in enumerate(grid.l0_xy.tolist()):
        c0, r0 = round(x / l0_per_px), round(y / l0_per_px)
        c1, r1 = round(c0 + edge), round(r0 + edge)
        win = label_map[max(r0, 0) : min(r1, rows), max(c0, 0) : min(c1, cols)]
        counts = np.bincount(win.ravel(), minlength=n_classes)[:n_classes].astype(np.int64)
        counts[0] += max(0, (r1 - r0) * (c1 - c0) - win.size)
        out[k] = int(counts.argmax())
    return out


def resample_nearest(
    src: NDArray[np.generic],
    src_l0_per_px: float,
    dst_shape: tuple[int, int],
    dst_l0_per_px: float,
    fill: int = 0,
) -> NDArray[np.generic]:
    """Sample ``src`` at the centres of a destination raster's pixels (same level-0 origin)."""
    rr = ((np.arange(dst_shape[0]) + 0.5) * dst_l0_per_px / src_l0_per_px).astype(np.int64)
    cc = ((np.arange(dst_shape[1]) + 0.5) * dst_l0_per_px / src_l0_per_px).astype(np.int64)
    out = np.full(dst_shape, fill, dtype=src.dtype)
    okr, okc = rr < src.shape[0], cc < src.shape[1]
    out[np.ix_(okr, okc)] = src[np.ix_(rr[okr], cc[okc])]
    return out
