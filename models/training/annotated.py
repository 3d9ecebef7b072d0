"""Training samples from a lab's slides and annotations (the one data layer of ``atc-wsi train``).

Slides are read tile by tile through the production reader (``TileReader``: the pyramid level
nearest the model's µm/px, resampled), never level 0 whole. Only annotated regions and points
count; inside "Fully annotated" regions unannotated pixels are negatives (necrosis: "not
necrosis").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from models.registry import ModelSpec
from models.training.data import PatchSet
from wsi.annotations import UNANNOTATED, SlideAnnotations, rasterise, read_annotations
from wsi.errors import AnnotationError
from wsi.slide import open_slide
from wsi.taxonomy import PATTERN_CLASSES
from wsi.tiling import TileGrid, TileReader

#: Coarse raster cells per tile edge when choosing tiles.
CELLS_PER_TILE = 8
ANNOTATION_SUFFIXES = (".geojson", ".json", ".csv")


@dataclass(frozen=True)
class AnnotatedSlide:
    """One slide and its annotations.

    Attributes:
        name: the slide's name (file stem; the folder name for a generator ``slide.tiff``).
        path: the slide file.
        ann: its annotations (level-0 px).
        mpp: µm/px override, or None (the slide's own).
    """

    name: str
    path: Path
    ann: SlideAnnotations
    mpp: float | None = None


def slide_name(path: Path) -> str:
    """Name of a slide for ``--holdout`` and per-slide rows: the file stem, or the folder name
    when the file is the generator's ``slide.tiff``."""
    return path.parent.name if path.stem == "slide" else path.stem


SLIDE_SUFFIXES = (
    ".svs",
    ".tif",
    ".tiff",
    ".ndpi",
    ".mrxs",
    ".scn",
    ".vms",
    ".vmu",
    ".bif",
    ".svslide",
)


def expand_slides(paths: Sequence[Path]) -> list[Path]:
    """Slide files of ``paths``: files as given; a folder gives its slide files and the
    ``slide.tiff`` of generator folders inside it (``labels.tiff`` is not a slide).

    Raises:
        AnnotationError: a path that does not exist, or no slide at all.
    """
    out: list[Path] = []
    for p in paths:
        if p.is_file():
            out.append(p)
        elif p.is_dir():
            found = [
                f
                for f in sorted(p.iterdir())
                if f.is_file() and f.suffix.lower() in SLIDE_SUFFIXES and f.name != "labels.tiff"
            ]
            found += sorted(p.glob("*/slide.tiff"))
            out += found
        else:
            raise AnnotationError("slide not found", path=p)
    if not out:
        raise AnnotationError(f"no slide files in {[str(p) for p in paths]}")
    return out


def _annotation_for(slide: Path, files: Sequence[Path]) -> Path | None:
    name = slide_name(slide)
    for f in files:
        if f.stem in (name, slide.stem) or (f.stem == "truth" and f.parent == slide.parent):
            return f
    return None


def pair_slides(
    slides: Sequence[Path],
    annotations: Sequence[Path],
    *,
    class_map: dict[str, str] | None = None,
    fully_annotated: bool = False,
    mpp: float | None = None,
) -> list[AnnotatedSlide]:
    """Match each slide with its annotation file and read it.

    ``annotations`` lists files or folders. With as many files as slides they pair in order;
    otherwise each slide takes the file whose stem is the slide's name (``truth.geojson`` beside
    a generator ``slide.tiff`` also matches).

    Raises:
        AnnotationError: a slide without annotations, a name given twice, or a bad file.
    """
    files: list[Path] = []
    for a in annotations:
        if a.is_dir():
            files += sorted(p for p in a.iterdir() if p.suffix.lower() in ANNOTATION_SUFFIXES)
        else:
            files.append(a)
    names = [slide_name(s) for s in slides]
    if len(set(names)) != len(names):
        raise AnnotationError(f"two slides share a name: {names}; rename one")
    paired: list[tuple[Path, Path]] = []
    if len(files) == len(slides) and all(f.is_file() for f in files):
        paired = list(zip(slides, files, strict=True))
    else:
        for s in slides:
            f = _annotation_for(s, files)
            if f is None:
                raise AnnotationError(
                    f"no annotation file for slide {slide_name(s)!r}; give one file per slide in "
                    "the same order, or name them <slide name>.geojson / .csv",
                    path=s,
                )
            paired.append((s, f))
    return [
        AnnotatedSlide(
            slide_name(s),
            s,
            read_annotations(f, class_map=class_map, fully_annotated=fully_annotated),
            mpp,
        )
        for s, f in paired
    ]


def load_annotated(
    slides: Sequence[Path],
    annotations: Sequence[Path],
    class_map: Path | None = None,
    fully_annotated: bool = False,
    mpp: float | None = None,
) -> list[AnnotatedSlide]:
    """What ``atc-wsi train`` and ``evaluate slides`` read: slides (files or folders, see
    :func:`expand_slides`) paired with their annotations, through the lab's class map file."""
    from wsi.annotations import load_class_map

    return pair_slides(
        expand_slides(slides),
        annotations,
        class_map=load_class_map(class_map),
        fully_annotated=fully_annotated,
        mpp=mpp,
    )


def split_holdout(
    items: Sequence[AnnotatedSlide], holdout: Sequence[str]
) -> tuple[list[AnnotatedSlide], list[AnnotatedSlide]]:
    """Split into (training, held-out) by slide name.

    Raises:
        AnnotationError: a held-out name that is not among the slides, or nothing left to train.
    """
    names = {i.name for i in items}
    unknown = sorted(set(holdout) - names)
    if unknown:
        raise AnnotationError(
            f"--holdout names {unknown} are not slides given; slides: {sorted(names)}"
        )
    train = [i for i in items if i.name not in holdout]
    held = [i for i in items if i.name in holdout]
    if not train:
        raise AnnotationError("every slide is held out: nothing left to train on")
    return train, held


def _grid(item: AnnotatedSlide, spec: ModelSpec, overlap_px: int) -> TileGrid:
    with open_slide(item.path, item.mpp) as slide:
        return TileGrid.for_slide(
            slide, target_mpp=spec.input_mpp, tile_px=spec.tile_px, overlap_px=overlap_px
        )


def tile_coverage(
    item: AnnotatedSlide, grid: TileGrid
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """:func:`box_coverage` of the tiles of ``grid``."""
    return box_coverage(item.ann, grid.l0_xy, grid.l0_tile)


def box_coverage(
    ann: SlideAnnotations, l0_xy: NDArray[np.int64], l0_tile: float
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Majority annotated class of each square box and the share of the box it covers.

    Args:
        ann: the annotations.
        l0_xy: (N, 2) level-0 top-left corners.
        l0_tile: box edge, level-0 px.

    Returns:
        ``(labels, share)``: (N,) ``PATTERN_CLASSES`` index (−1 where nothing is annotated) and
        (N,) covered share of the box (0–1).
    """
    l0_per_cell = l0_tile / CELLS_PER_TILE
    if len(l0_xy) == 0:
        return np.zeros(0, np.int64), np.zeros(0)
    x1 = float(l0_xy[:, 0].max()) + l0_tile
    y1 = float(l0_xy[:, 1].max()) + l0_tile
    shape = (int(np.ceil(y1 / l0_per_cell)) + 1, int(np.ceil(x1 / l0_per_cell)) + 1)
    raster = rasterise(ann, shape, l0_per_cell)
    labels = np.full(len(l0_xy), -1, dtype=np.int64)
    share = np.zeros(len(l0_xy))
    n_cls = len(PATTERN_CLASSES)
    for k, (x, y) in enumerate(np.asarray(l0_xy).tolist()):
        r0, c0 = max(0, round(y / l0_per_cell)), max(0, round(x / l0_per_cell))
        win = raster[r0 : r0 + CELLS_PER_TILE, c0 : c0 + CELLS_PER_TILE]
        counts = np.bincount(win[win != UNANNOTATED].ravel(), minlength=n_cls)[:n_cls]
        if counts.sum():
            labels[k] = int(counts.argmax())
            share[k] = counts.max() / float(CELLS_PER_TILE * CELLS_PER_TILE)
    return labels, share


def _read(item: AnnotatedSlide, grid: TileGrid, idx: NDArray[np.int64]) -> NDArray[np.uint8]:
    reader = TileReader(item.path, grid, item.mpp)
    try:
        images = [reader.read(int(i))["image"] for i in idx]
    finally:
        reader.close()
    s = grid.tile_px
    return np.stack(images) if images else np.zeros((0, s, s, 3), np.uint8)


def pattern_tiles(
    items: Sequence[AnnotatedSlide],
    spec: ModelSpec,
    *,
    min_share: float = 0.5,
    max_per_slide: int = 2000,
    seed: int = 0,
) -> tuple[PatchSet, NDArray[np.str_]]:
    """Tiles of the pattern classifier whose majority annotated class covers ≥ ``min_share``.

    Tiles overlap by half their edge. Returns the patch set (labels = ``PATTERN_CLASSES``
    index) and the slide name of each tile.

    Raises:
        AnnotationError: no tile qualifies on any slide.
    """
    rng = np.random.default_rng(seed)
    images, labels, groups = [], [], []
    for item in items:
        grid = _grid(item, spec, spec.tile_px // 2)
        lab, share = tile_coverage(item, grid)
        idx = np.flatnonzero((lab >= 0) & (share >= min_share))
        if len(idx) > max_per_slide:
            idx = np.sort(rng.choice(idx, max_per_slide, replace=False))
        images.append(_read(item, grid, idx))
        labels.append(lab[idx])
        groups += [item.name] * len(idx)
    if not groups:
        raise AnnotationError(
            f"no {spec.tile_px} px tile at {spec.input_mpp} µm/px is at least {min_share:.0%} "
            "covered by one annotated tissue class; draw larger regions"
        )
    return (
        PatchSet(np.concatenate(images), np.concatenate(labels).astype(np.int64), None),
        np.array(groups),
    )


def region_targets(
    item: AnnotatedSlide, grid: TileGrid, idx: NDArray[np.int64], positive: str
) -> NDArray[np.uint8]:
    """Per-pixel targets of tiles ``idx``: 1 = ``positive`` class, 0 = another annotated class
    (or unannotated inside "Fully annotated"), :data:`UNANNOTATED` = unknown (ignored)."""
    s = grid.tile_px
    l0_per_px = grid.l0_tile / s
    pos = PATTERN_CLASSES.index(positive)
    out = np.empty((len(idx), s, s), dtype=np.uint8)
    offs = (np.arange(s) + 0.5) * l0_per_px
    for n, i in enumerate(idx.tolist()):
        x, y = (float(v) for v in grid.l0_xy[i])
        raster = rasterise(item.ann, (s, s), l0_per_px, (x, y))
        t = np.where(raster == UNANNOTATED, UNANNOTATED, (raster == pos).astype(np.uint8))
        if item.ann.complete is not None:
            xx, yy = np.meshgrid(x + offs, y + offs)
            inside = item.ann.in_complete(np.stack([xx.ravel(), yy.ravel()], 1)).reshape(s, s)
            t = np.where((t == UNANNOTATED) & inside, 0, t)
        out[n] = t.astype(np.uint8)
    return out


def segmentation_tiles(
    items: Sequence[AnnotatedSlide],
    spec: ModelSpec,
    positive: str = "necrosis",
    *,
    min_share: float = 0.1,
    max_per_slide: int = 1000,
    seed: int = 0,
) -> tuple[PatchSet, NDArray[np.str_]]:
    """Tiles of a segmenter with per-pixel targets (see :func:`region_targets`) in ``masks``.

    A tile is used when at least ``min_share`` of it is annotated (or fully annotated).

    Raises:
        AnnotationError: no tile qualifies.
    """
    rng = np.random.default_rng(seed)
    images, masks, groups = [], [], []
    for item in items:
        grid = _grid(item, spec, spec.overlap_px)
        _, share = tile_coverage(item, grid)
        if item.ann.complete is not None:
            centres = grid.l0_xy.astype(np.float64) + grid.l0_tile / 2
            share = np.where(item.ann.in_complete(centres), 1.0, share)
        idx = np.flatnonzero(share >= min_share)
        if len(idx) > max_per_slide:
            idx = np.sort(rng.choice(idx, max_per_slide, replace=False))
        t = region_targets(item, grid, idx, positive)
        keep = (t != UNANNOTATED).reshape(len(idx), -1).mean(axis=1) >= min_share
        images.append(_read(item, grid, idx[keep]))
        masks.append(t[keep])
        groups += [item.name] * int(keep.sum())
    if not groups:
        raise AnnotationError(
            f"no {spec.tile_px} px tile at {spec.input_mpp} µm/px is {min_share:.0%} annotated"
        )
    m = np.concatenate(masks)
    return PatchSet(
        np.concatenate(images), (m == 1).any(axis=(1, 2)).astype(np.int64), m
    ), np.array(groups)
