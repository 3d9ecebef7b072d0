"""Real labelled cell sets (../shared/data/real/cells, ../shared/data/ihc/deepliif): loaders,
splits, resampling, training targets and the scoring helpers, on the real files."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from models.training import real_cells as rc
from models.training.heat_cells import RealPatches, real_targets
from models.training.real_scoring import (
    Tally,
    calibrate_counts,
    score_ihc_counts,
)


@pytest.fixture(scope="module")
def monusac() -> list[rc.CellImage]:
    return rc.load_monusac()


def test_monusac_counts_and_patient_folds(monusac: list[rc.CellImage]) -> None:
    labels = Counter(str(lab) for im in monusac for lab in im.labels)
    assert labels == {"macrophage": 139, "lymphocyte": 4931, "epithelial": 4388, "neutrophil": 97}
    assert sum(1 for im in monusac if len(im.of("macrophage"))) == 15
    folds = {k: {im.group for im in monusac if im.split == f"fold{k}"} for k in (0, 1)}
    assert not folds[0] & folds[1]  # split by patient, never by image
    per_fold = [
        sum(len(im.of("macrophage")) for im in monusac if im.split == f"fold{k}") for k in (0, 1)
    ]
    assert per_fold == [66, 73]
    organs = {k: {im.organ for im in monusac if im.split == f"fold{k}"} for k in (0, 1)}
    assert organs[0] == {"breast", "kidney", "lung", "prostate"}
    assert organs[1] == {"kidney", "lung", "prostate"}  # both breast patients are in fold 0
    im = monusac[0]
    assert im.rgb.dtype == np.uint8 and im.rgb.ndim == 3 and im.mpp == 0.25
    h, w = im.rgb.shape[:2]
    assert (im.xy >= -1).all() and (im.xy[:, 0] <= w).all() and (im.xy[:, 1] <= h).all()


def test_consep_nucls_ki67_sets_parse() -> None:
    consep = rc.load_consep(split="test")
    assert len(consep) == 224 and len({im.group for im in consep}) == 14
    assert {str(x) for im in consep for x in im.labels} == {
        "other",
        "inflammatory",
        "epithelial",
        "spindle",
    }
    assert all(im.rgb.shape == (256, 256, 3) for im in consep[:5])
    nucls = rc.load_nucls(split="test")
    assert len(nucls) == 5 and sum(len(im.xy) for im in nucls) == 186
    dl = rc.load_deepliif()
    assert [im.name for im in dl] == ["22_2", "34_3", "6_2", "799_2"]
    assert sum(len(im.of("positive")) for im in dl) == 55
    gl = rc.load_ki67_glioma()
    assert sum(len(im.of("positive")) for im in gl) == 867
    assert sum(len(im.of("negative")) for im in gl) == 1893
    assert {im.group for im in gl} == {"1309620", "1329941", "8682421"}


def test_resample_keeps_points_on_their_cells(monusac: list[rc.CellImage]) -> None:
    im = next(m for m in monusac if len(m.of("lymphocyte")) >= 30)
    half = rc.resample(im, 0.5)
    assert half.mpp == 0.5
    assert half.rgb.shape[0] == round(im.rgb.shape[0] / 2)
    np.testing.assert_allclose((half.xy + 0.5) * 2, im.xy + 0.5)
    # a lymphocyte centre is darker than the image on average, before and after resampling
    for x in (im, half):
        xy = np.round(x.of("lymphocyte")).astype(int)
        xy = xy[(xy[:, 0] < x.rgb.shape[1]) & (xy[:, 1] < x.rgb.shape[0])]
        assert x.rgb[xy[:, 1], xy[:, 0]].mean() < x.rgb.mean() - 10


def test_real_targets_weights_by_set(monusac: list[rc.CellImage]) -> None:
    mon = rc.resample(next(m for m in monusac if len(m.of("macrophage"))), 0.5)
    t = real_targets(mon, 1.5)
    assert t.shape[0] == 4 and (t[0] == 1).sum() >= 1
    assert t[2].min() == 1.0  # MoNuSAC: every macrophage labelled, channel 0 everywhere
    assert t[2].max() == 5.0  # and its rare positives weigh more
    assert 0 < t[3].mean() < 1  # nuclei incompletely labelled: channel 1 only near labels
    consep = rc.resample(next(c for c in rc.load_consep(split="train") if len(c.of("other"))), 0.5)
    tc = real_targets(consep, 1.5)
    assert tc[0].max() == 0.0 and tc[3].min() == 1.0
    assert tc[2].min() == 0.0  # left out around the "other" nuclei (macrophage status unknown)
    patches = RealPatches([mon, consep], 128, 1.5, seed=1)
    rgb, tgt = patches.crop()
    assert rgb.shape == (128, 128, 3) and tgt.shape == (4, 64, 64)


def test_scoring_helpers() -> None:
    tl = Tally()
    tl.add(3, 1, 2)
    s = tl.summary()
    assert s["f1"] == pytest.approx(6 / 9, abs=1e-4) and s["true"] == 5 and s["found"] == 4
    dl = rc.load_deepliif()[:2]
    perfect = {0.5: [im.of("positive") for im in dl]}
    runs = [(im, {0.5: perfect[0.5][i], 0.9: perfect[0.5][i][:1]}) for i, im in enumerate(dl)]
    cal = calibrate_counts(runs, [dl[0].name])
    assert cal["threshold"] == 0.5 and cal["error_on_choice"] == 0.0
    assert cal["report"]["pooled"]["count_error"] == 0.0 and cal["report"]["pooled"]["f1"] == 1.0
    rep = score_ihc_counts(dl, [np.zeros((0, 2))] * 2)
    assert rep["pooled"]["count_error"] == -1.0


def test_missing_set_is_a_typed_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(rc.RealDataError, match="MoNuSAC points missing"):
        rc.load_monusac(tmp_path)
    with pytest.raises(rc.RealDataError, match="no CoNSeP"):
        rc.load_consep(tmp_path)
