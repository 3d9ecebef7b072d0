"""Training tiles read from generated slides through the production reader (``TileReader``).

Patches rendered directly at 1–2 µm/px differ from slide levels downsampled from 0.25 µm/px
(fine texture is averaged away in the pyramid), so models also learn from real pyramid reads of
training slides (seeds disjoint from the evaluation seeds), with masks from their label maps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from models.training.data import PatchSet
from wsi.slide import open_slide
from wsi.tiling import TileGrid, TileReader


def tile_masks(
    grid: TileGrid, label_map: NDArray[np.uint8], l0_per_label: float, indices: NDArray[np.int64]
) -> NDArray[np.uint8]:
    """Label map sampled (nearest) at every target pixel of the tiles ``indices``: (k, s, s)."""
    s = grid.tile_px
    step = grid.l0_tile / s
    offs = (np.arange(s) + 0.5) * step
    rows, cols = label_map.shape
    out = np.zeros((len(indices), s, s), dtype=np.uint8)
    for n, i in enumerate(indices.tolist()):
        x, y = grid.l0_xy[i]
        r = np.clip(((y + offs) / l0_per_label).astype(np.int64), 0, rows - 1)
        c = np.clip(((x + offs) / l0_per_label).astype(np.int64), 0, cols - 1)
        out[n] = label_map[np.ix_(r, c)]
    return out


def slide_patch_set(
    folder: Path, *, mpp: float, size: int, stride: int, min_foreground: float = 0.05
) -> PatchSet:
    """Tiles of ``folder/slide.tiff`` at ``mpp`` with their label maps and majority labels.

    Args:
        folder: a ``generate_slide`` output folder (slide.tiff + truth).
        mpp: target µm/px.
        size: tile edge in target px.
        stride: distance between tiles in target px (< size: overlapping tiles).
        min_foreground: keep tiles whose label map is at least this much non-background.
    """
    from wsi.synthetic.truth import load_truth

    truth = load_truth(folder)
    with open_slide(folder / "slide.tiff") as slide:
        grid = TileGrid.for_slide(slide, target_mpp=mpp, tile_px=size, overlap_px=size - stride)
    idx = np.arange(len(grid), dtype=np.int64)
    masks = tile_masks(grid, truth.label_map, truth.label_l0_per_px, idx)
    keep = (masks > 0).reshape(len(idx), -1).mean(axis=1) >= min_foreground
    idx, masks = idx[keep], masks[keep]
    reader = TileReader(folder / "slide.tiff", grid)
    images = np.stack([reader.read(int(i))["image"] for i in idx])
    reader.close()
    n_cls = int(masks.max()) + 1
    counts = np.stack([(masks == c).reshape(len(idx), -1).sum(1) for c in range(n_cls)], 1)
    return PatchSet(images, counts.argmax(axis=1).astype(np.int64), masks)


def concat(*sets: PatchSet, repeat_last: int = 1) -> PatchSet:
    """Concatenate patch sets; the last one repeated ``repeat_last`` times (oversampling)."""
    parts = [*sets[:-1], *([sets[-1]] * repeat_last)]
    masks = None
    if all(p.masks is not None for p in parts):
        masks = np.concatenate([p.masks for p in parts if p.masks is not None])
    return PatchSet(
        np.concatenate([p.images for p in parts]),
        np.concatenate([p.labels for p in parts]),
        masks,
    )
