"""Tests of the synthetic patch sampler (``wsi.synthetic.sample_patches``)."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.color import rgb2hed

from wsi.synthetic import PatchBatch, sample_patches
from wsi.synthetic.classes import LOOKALIKE_KINDS, PATTERN_CLASSES

TYPICAL = {"typical_prophase", "typical_metaphase", "typical_anaphase"}
TRIPOLAR = {"tripolar_spokes", "tripolar_groups"}


@pytest.fixture(scope="module")
def mitosis_batch() -> PatchBatch:
    return sample_patches("mitosis", 36, 96, 0.25, seed=5)


@pytest.fixture(scope="module")
def pattern_batch() -> PatchBatch:
    return sample_patches("pattern", 48, 48, 1.0, seed=3)


def test_shapes_and_types_of_every_kind() -> None:
    for kind, mpp in (("pattern", 4.0), ("necrosis", 2.0), ("mitosis", 0.25), ("macrophage", 0.5)):
        b = sample_patches(kind, 5, 40, mpp, seed=1)  # type: ignore[arg-type]
        assert b.images.shape == (5, 40, 40, 3) and b.images.dtype == np.uint8
        assert b.labels.shape == (5,) and b.labels.dtype == np.int64
        assert b.mpp == mpp and b.stain == "he"
        if kind in ("pattern", "necrosis"):
            assert b.masks is not None and b.masks.shape == (5, 40, 40)
            assert b.points is None and b.kinds is None
            assert b.masks.max() < len(PATTERN_CLASSES)
        else:
            assert b.masks is None and b.points is not None and len(b.points) == 5
            assert all(p.dtype == np.float32 and p.shape[1:] == (3,) for p in b.points)
        assert b.images.std() > 5  # not blank


def test_same_seed_same_patches_other_seed_other_patches() -> None:
    a = sample_patches("mitosis", 6, 64, 0.25, seed=11)
    b = sample_patches("mitosis", 6, 64, 0.25, seed=11)
    c = sample_patches("mitosis", 6, 64, 0.25, seed=12)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    assert a.kinds == b.kinds
    assert not np.array_equal(a.images, c.images)


def test_mitosis_classes_balanced_with_lookalike_negatives(mitosis_batch: PatchBatch) -> None:
    counts = np.bincount(mitosis_batch.labels, minlength=3)
    assert counts.tolist() == [12, 12, 12]
    kinds = mitosis_batch.kinds
    assert kinds is not None
    negatives = [k for k, lab in zip(kinds, mitosis_batch.labels, strict=True) if lab == 0]
    assert sum(k in LOOKALIKE_KINDS for k in negatives) >= len(negatives) / 2
    for k, lab in zip(kinds, mitosis_batch.labels, strict=True):
        assert (lab == 1) == (k in TYPICAL) and (lab == 2) == (k in TRIPOLAR)


def test_mitosis_points_mark_the_centred_figure(mitosis_batch: PatchBatch) -> None:
    assert mitosis_batch.points is not None
    c = 96 / 2
    for lab, pts in zip(mitosis_batch.labels, mitosis_batch.points, strict=True):
        near = pts[np.hypot(pts[:, 0] - c, pts[:, 1] - c) <= 4 * np.sqrt(2) + 0.5]
        if lab > 0:
            assert len(near) == 1 and near[0, 2] == lab
        else:
            assert len(near) == 0


def test_mitotic_chromatin_is_dense_at_the_centre(mitosis_batch: PatchBatch) -> None:
    """The darkest pixels near the centre of a mitosis crop are haematoxylin-dense."""
    h = np.stack([rgb2hed(im)[40:56, 40:56, 0] for im in mitosis_batch.images])
    peak = np.percentile(h.reshape(len(h), -1), 95, axis=1)
    mito = peak[mitosis_batch.labels > 0]
    whole = np.stack([rgb2hed(im)[:, :, 0].mean() for im in mitosis_batch.images])
    assert np.median(mito) > np.median(whole[mitosis_batch.labels > 0])


def test_pattern_covers_all_classes_and_label_is_mask_majority(pattern_batch: PatchBatch) -> None:
    assert pattern_batch.masks is not None
    present = set(np.unique(pattern_batch.labels).tolist())
    assert present == set(range(len(PATTERN_CLASSES)))
    for lab, mask in zip(pattern_batch.labels, pattern_batch.masks, strict=True):
        assert lab == np.bincount(mask.ravel(), minlength=6).argmax()
    # background patches are bright (glass) or hold artefacts; tumour patches are not glass
    bg = pattern_batch.images[pattern_batch.labels == 0].mean()
    tum = pattern_batch.images[np.isin(pattern_batch.labels, [1, 2, 3])].mean()
    assert bg > tum


def test_necrosis_patches_straddle_boundaries() -> None:
    b = sample_patches("necrosis", 24, 48, 3.0, seed=2)
    assert b.masks is not None
    has_nec = [(m == 4).any() for m in b.masks]
    mixed = [(m == 4).any() and (m != 4).any() for m in b.masks]
    assert np.mean(has_nec) >= 0.5 and np.mean(mixed) >= 0.3


def test_ihc_macrophage_patches_have_dab_on_macrophages() -> None:
    b = sample_patches("macrophage", 8, 128, 0.5, seed=4, stain="cd68")
    assert b.points is not None
    dab_mac: list[float] = []
    dab_other: list[float] = []
    for img, pts in zip(b.images, b.points, strict=True):
        dab = rgb2hed(img)[:, :, 2]
        for x, y, cls in pts:
            xi, yi = int(np.clip(x, 3, 124)), int(np.clip(y, 3, 124))
            v = dab[yi - 3 : yi + 4, xi - 3 : xi + 4].mean()
            (dab_mac if cls == 1 else dab_other).append(float(v))
    assert dab_mac and dab_other
    assert np.mean(dab_mac) > np.mean(dab_other) + 0.01
    he = sample_patches("macrophage", 2, 64, 0.5, seed=4, stain="he")
    assert rgb2hed(he.images[0])[:, :, 2].mean() < np.mean(dab_mac)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "cells"}, "unknown patch kind"),
        ({"size": 2}, "size"),
        ({"mpp": 50.0}, "mpp"),
        ({"n": -1}, "n=-1"),
        ({"stain": "pas"}, "unknown stain"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"kind": "pattern", "n": 1, "size": 32, "mpp": 1.0, "seed": 0}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        sample_patches(**args)  # type: ignore[arg-type]
