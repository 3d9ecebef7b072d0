"""Mitosis crops from annotated points (the cell side of ``atc-wsi train``).

Positives are the annotated figures (``Mitosis: Typical`` / ``Atypical`` / ``Tripolar``);
negatives are annotated ``Negative`` points and, inside "Fully annotated" regions only, the
detector's own haematoxylin candidates further than 7.5 µm from every annotated figure (there,
an unannotated dark nucleus is known not to be a mitosis). Crops are read at the model's µm/px
around each point (a few hundred pixels of level 0 each), never a whole level.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from scipy.spatial import cKDTree

from models.cells.mitosis_net import CROP_PX, MitosisTileDetector
from models.registry import ModelSpec
from models.training.annotated import AnnotatedSlide
from models.training.augment import StainAugment, augment_batch, geometric, normalise
from models.training.mitosis_data import STORE_PX, crops_at, window
from wsi.errors import AnnotationError
from wsi.slide import open_slide
from wsi.taxonomy import MITOSIS_CLASSES
from wsi.tiling import TileGrid, TileReader, resample

#: Figures closer than this to an annotated mitosis are never used as negatives (µm).
NEGATIVE_MIN_DISTANCE_UM = 7.5


@dataclass(frozen=True)
class PointCrops:
    """Crops centred on points, ``STORE_PX`` square (random ``CROP_PX`` windows train).

    Attributes:
        images: (n, STORE_PX, STORE_PX, 3) uint8 at the model's µm/px.
        labels: (n,) ``MITOSIS_CLASSES`` index.
        slides: (n,) slide name of each crop.
    """

    images: NDArray[np.uint8]
    labels: NDArray[np.int64]
    slides: NDArray[np.str_]

    def __len__(self) -> int:
        return len(self.labels)


def read_point_crops(
    item: AnnotatedSlide, l0_xy: NDArray[np.float64], mpp: float, size: int = STORE_PX
) -> NDArray[np.uint8]:
    """(n, size, size, 3) crops centred on level-0 points, resampled to ``mpp`` µm/px."""
    out = np.empty((len(l0_xy), size, size, 3), np.uint8)
    with open_slide(item.path, item.mpp) as slide:
        edge = max(1, round(size * mpp / slide.mpp))  # level-0 px of one crop
        for i, (x, y) in enumerate(np.asarray(l0_xy, np.float64).reshape(-1, 2)):
            region = slide.read_region((round(x - edge / 2), round(y - edge / 2)), 0, (edge, edge))
            out[i] = region if edge == size else resample(region, size)
    return out


def _candidate_negatives(
    item: AnnotatedSlide,
    det: MitosisTileDetector,
    spec: ModelSpec,
    max_tiles: int,
    rng: np.random.Generator,
) -> NDArray[np.uint8]:
    """Crops of the detector's candidates inside "Fully annotated" regions, away from figures."""
    if item.ann.complete is None:
        return np.zeros((0, STORE_PX, STORE_PX, 3), np.uint8)
    with open_slide(item.path, item.mpp) as slide:
        grid = TileGrid.for_slide(slide, target_mpp=spec.input_mpp, tile_px=spec.tile_px)
    centres = grid.l0_xy.astype(np.float64) + grid.l0_tile / 2
    idx = np.flatnonzero(item.ann.in_complete(centres))
    if len(idx) > max_tiles:
        idx = np.sort(rng.choice(idx, max_tiles, replace=False))
    figures = item.ann.points_of(*MITOSIS_CLASSES[1:])
    tree = cKDTree(figures) if len(figures) else None
    l0_per_px = grid.l0_tile / grid.tile_px
    radius_l0 = NEGATIVE_MIN_DISTANCE_UM / spec.input_mpp * l0_per_px
    reader = TileReader(item.path, grid, item.mpp)
    crops = []
    try:
        for i in idx.tolist():
            img = reader.read(int(i))["image"]
            x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0
            with torch.inference_mode():
                rc, od = det.candidates(normalise(x, spec.mean, spec.std))
            rc_np = rc[0][od[0] >= 0].numpy().astype(np.float64)
            l0 = grid.l0_xy[i][::-1] + (rc_np + 0.5) * l0_per_px  # (row, col) → level-0 (y, x)
            xy = l0[:, ::-1]
            keep = item.ann.in_complete(xy)
            if tree is not None and len(xy):
                keep &= tree.query(xy)[0] > radius_l0
            crops.append(crops_at(img, rc_np[keep], STORE_PX))
    finally:
        reader.close()
    return np.concatenate(crops) if crops else np.zeros((0, STORE_PX, STORE_PX, 3), np.uint8)


def mitosis_crops(
    items: Sequence[AnnotatedSlide],
    spec: ModelSpec,
    det: MitosisTileDetector,
    *,
    max_tiles: int = 32,
    max_negatives_per_figure: int = 20,
    seed: int = 0,
) -> PointCrops:
    """Labelled crops of annotated figures, annotated negatives and mined candidate negatives.

    Raises:
        AnnotationError: no annotated mitosis on any slide.
    """
    rng = np.random.default_rng(seed)
    images, labels, slides = [], [], []
    for item in items:
        cls = np.array([MITOSIS_CLASSES.index(c) if c in MITOSIS_CLASSES else -1
                        for c in item.ann.point_classes], dtype=np.int64)  # fmt: skip
        keep = cls >= 0  # mitoses and annotated negatives (macrophages are not used here)
        xy, lab = item.ann.points_xy[keep], cls[keep]
        mined = _candidate_negatives(item, det, spec, max_tiles, rng)
        cap = max_negatives_per_figure * max(1, int((lab > 0).sum()))
        if len(mined) > cap:
            mined = mined[np.sort(rng.choice(len(mined), cap, replace=False))]
        images += [read_point_crops(item, xy, spec.input_mpp), mined]
        labels += [lab, np.zeros(len(mined), np.int64)]
        slides += [item.name] * (len(lab) + len(mined))
    y = np.concatenate(labels) if labels else np.zeros(0, np.int64)
    if not (y > 0).any():
        raise AnnotationError("no annotated mitosis on the training slides")
    return PointCrops(np.concatenate(images), y, np.array(slides))


def crop_stream(
    data: PointCrops, batch_size: int, gen: torch.Generator, spec: ModelSpec
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless batches of augmented ``CROP_PX`` windows (random shifts ≤ 8 px): half negatives,
    half figures with their classes drawn equally often (a rare tripolar class is not drowned,
    and the negative share keeps the shipped operating point roughly calibrated)."""
    positive = [np.flatnonzero(data.labels == c) for c in np.unique(data.labels[data.labels > 0])]
    negative = np.flatnonzero(data.labels == 0)
    pools = [negative] if len(negative) else []
    jitter = (STORE_PX - CROP_PX) // 2
    aug = StainAugment()

    def draw(pool: NDArray[np.int64]) -> int:
        return int(pool[int(torch.randint(0, len(pool), (1,), generator=gen))])

    while True:
        idx = []
        for k in range(batch_size):
            if pools and k % 2 == 0:
                idx.append(draw(negative))
            else:
                idx.append(
                    draw(positive[int(torch.randint(0, len(positive), (1,), generator=gen))])
                )
        sel = np.array(idx)
        off = torch.randint(-jitter, jitter + 1, (batch_size, 2), generator=gen).numpy()
        x = augment_batch(torch.from_numpy(window(data.images[sel], CROP_PX, off)), aug, gen)
        x, _ = geometric(x, None, gen)
        x = normalise(x, spec.mean, spec.std).contiguous(memory_format=torch.channels_last)
        yield x, torch.from_numpy(data.labels[sel])


@dataclass(frozen=True)
class HeatTiles:
    """Tiles of the macrophage heat-map detector with targets and loss weights.

    Attributes:
        images: (n, s, s, 3) uint8 at the model's µm/px.
        targets: (n, 4, s/2, s/2) float32: macrophage target, nucleated-cell target, their loss
            weights (``models.training.heat_cells`` layout). Macrophages are trained only inside
            "Fully annotated" regions (weight 1 there, 0 elsewhere); the nucleated-cell channel
            is not annotated by labs and gets weight 0.
    """

    images: NDArray[np.uint8]
    targets: NDArray[np.float32]

    def __len__(self) -> int:
        return len(self.images)


def tam_tiles(
    items: Sequence[AnnotatedSlide], spec: ModelSpec, *, max_per_slide: int = 400, seed: int = 0
) -> HeatTiles:
    """Detector tiles whose centre lies in a "Fully annotated" region, with macrophage targets.

    Raises:
        AnnotationError: no "Fully annotated" region with macrophage points.
    """
    from models.cells.heat_net import HEAT_STRIDE
    from models.training.heat_cells import draw

    rng = np.random.default_rng(seed)
    images, targets = [], []
    for item in items:
        if item.ann.complete is None:
            continue
        with open_slide(item.path, item.mpp) as slide:
            grid = TileGrid.for_slide(slide, target_mpp=spec.input_mpp, tile_px=spec.tile_px)
        centres = grid.l0_xy.astype(np.float64) + grid.l0_tile / 2
        idx = np.flatnonzero(item.ann.in_complete(centres))
        if len(idx) > max_per_slide:
            idx = np.sort(rng.choice(idx, max_per_slide, replace=False))
        s, h = spec.tile_px, spec.tile_px // HEAT_STRIDE
        l0_per_px = grid.l0_tile / s
        macrophages = item.ann.points_of("macrophage")
        t = np.zeros((len(idx), 4, h, h), np.float32)
        heat_centres = (np.arange(h) + 0.5) * HEAT_STRIDE * l0_per_px
        for n, i in enumerate(idx.tolist()):
            x0, y0 = (float(v) for v in grid.l0_xy[i])
            rel = (macrophages - (x0, y0)) / l0_per_px
            near = np.all((rel > -8) & (rel < s + 8), axis=1)
            draw(t[n, 0], rel[near], 1.0)
            xx, yy = np.meshgrid(x0 + heat_centres, y0 + heat_centres)
            inside = item.ann.in_complete(np.stack([xx.ravel(), yy.ravel()], 1))
            t[n, 2] = inside.reshape(h, h)
        reader = TileReader(item.path, grid, item.mpp)
        try:
            images.append(np.stack([reader.read(int(i))["image"] for i in idx]))
        finally:
            reader.close()
        targets.append(t)
    if not images or not any((t[:, 0] >= 0.999).any() for t in targets):
        raise AnnotationError(
            "tam training needs macrophage points inside a 'Fully annotated' region"
        )
    return HeatTiles(np.concatenate(images), np.concatenate(targets))


def heat_stream(
    data: HeatTiles, batch_size: int, gen: torch.Generator, spec: ModelSpec
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless augmented (x, target-and-weight) batches of :class:`HeatTiles`."""
    aug = StainAugment()
    while True:
        sel = np.sort(torch.randint(0, len(data), (batch_size,), generator=gen).numpy())
        x = augment_batch(torch.from_numpy(data.images[sel]), aug, gen)
        x, y = geometric(x, torch.from_numpy(data.targets[sel]), gen)
        assert y is not None
        yield normalise(x, spec.mean, spec.std), y
