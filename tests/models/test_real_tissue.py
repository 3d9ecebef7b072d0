"""Real tissue loaders (``../shared/data/real/tissue``), splits, balanced sampling, set loss."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from models.training.real_mix import balanced_weights, set_loss
from models.training.real_tissue import (
    SOURCES,
    TUMOUR_ANY,
    RealDataError,
    cut_tiles,
    fold_of,
    list_real_tissue,
    tissue_fraction,
)
from wsi.synthetic.classes import PATTERN_CLASSES, pattern_index

ROOT = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real" / "tissue"
pytestmark = pytest.mark.skipif(not ROOT.is_dir(), reason="../shared/data/real/tissue missing")


@pytest.fixture(scope="module")
def images() -> list:  # type: ignore[type-arg]
    return list_real_tissue(ROOT)


def test_every_set_and_class_is_read(images: list) -> None:  # type: ignore[type-arg]
    count = Counter((i.source, i.label) for i in images)
    assert count[("sarcoma_sts_foersch", "spindle")] == 30  # 15 LMS + 15 SS
    assert count[("sarcoma_sts_foersch", "pleomorphic")] == 15
    assert count[("oral_oscc_vs_normal_224", "squamoid")] == 150  # 400× only
    assert count[("oral_oscc_vs_normal_224", "non_tumour")] == 201
    assert count[("osteosarcoma_ut_atlan", "necrosis")] == 20
    assert count[("osteosarcoma_ut_atlan", "tumour")] == 20
    assert count[("thyhister_thyroid", "tumour")] == 28
    assert {i.mpp for i in images if i.source == "sarcoma_sts_foersch"} == {0.5}
    assert all(SOURCES[i.source].mpp_basis for i in images)


def test_folds_split_patients_and_slides(images: list) -> None:  # type: ignore[type-arg]
    by_group: dict[tuple[str, str], set[int]] = {}
    for i in images:
        by_group.setdefault((i.source, i.group), set()).add(fold_of(i))
    assert all(len(f) == 1 for f in by_group.values())  # a patient never sits in two folds
    for src in SOURCES:
        for label in {i.label for i in images if i.source == src and i.label != "tumour"}:
            folds = {fold_of(i) for i in images if i.source == src and i.label == label}
            assert folds == {0, 1}, (src, label)  # every class is validated in both folds


def test_tiles_are_resampled_and_labelled(images: list) -> None:  # type: ignore[type-arg]
    pick = [
        next(i for i in images if i.source == s and i.label == lab)
        for s, lab in (
            ("sarcoma_sts_foersch", "pleomorphic"),
            ("osteosarcoma_ut_atlan", "necrosis"),
            ("thyhister_thyroid", "non_tumour"),
            ("osteosarcoma_ut_atlan", "tumour"),
        )
    ]
    t = cut_tiles(pick, mpp=1.0, size=224)
    # 1024 px at 0.5 µm/px → 512 px at 1 µm/px → 3 × 3 tiles; 1024 px at 1 µm/px → 5 × 5 tiles.
    assert (t.image_ids == 0).sum() == 9
    assert all(
        im.shape == (224, 224, 3) for im, k in zip(t.images, t.image_ids, strict=True) if k < 2
    )
    assert set(t.labels[t.image_ids == 0].tolist()) == {pattern_index("pleomorphic")}
    assert set(t.labels[t.image_ids == 3].tolist()) <= {TUMOUR_ANY, 0}
    small = [im.shape for im, k in zip(t.images, t.image_ids, strict=True) if k == 2]
    assert small and all(s[0] == s[1] <= 152 for s in small)  # 304 px at 0.5 µm/px → 152 px
    assert len(t.subset(t.folds == 0)) + len(t.subset(t.folds == 1)) == len(t)


def test_glass_is_not_tissue() -> None:
    assert tissue_fraction(np.full((32, 32, 3), 245, np.uint8)) == 0.0
    assert tissue_fraction(np.full((32, 32, 3), 120, np.uint8)) == 1.0


def test_missing_set_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(RealDataError, match="label file missing"):
        list_real_tissue(tmp_path)


def test_sampling_balances_classes_and_sources() -> None:
    labels = np.array([1] * 90 + [1] * 10 + [5] * 5)
    sources = np.array(["a"] * 90 + ["b"] * 10 + ["a"] * 5)
    w = balanced_weights(labels, sources)
    assert w.sum() == pytest.approx(1.0)
    assert w[:90].sum() == pytest.approx(0.25) and w[90:100].sum() == pytest.approx(0.25)
    assert w[100:].sum() == pytest.approx(0.5)


def test_sampling_gives_non_tumour_its_share() -> None:
    non = PATTERN_CLASSES.index("non_tumour")
    labels = np.array([1] * 10 + [2] * 30 + [non] * 5 + [TUMOUR_ANY] * 7)
    sources = np.array(["a"] * 52)
    w = balanced_weights(labels, sources, non_tumour_share=0.4)
    assert w.sum() == pytest.approx(1.0)
    assert w[labels == non].sum() == pytest.approx(0.4)
    for c in (1, 2, TUMOUR_ANY):  # the rest shared equally by the other classes
        assert w[labels == c].sum() == pytest.approx(0.2)


def test_set_loss_rewards_any_tumour_pattern_for_unknown_tumour() -> None:
    y = torch.tensor([TUMOUR_ANY])
    spindle = torch.tensor([[0.0, 8.0, 0.0, 0.0, 0.0, 0.0]])
    squamoid = torch.tensor([[0.0, 0.0, 0.0, 8.0, 0.0, 0.0]])
    benign = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0, 8.0]])
    assert float(set_loss(spindle, y)) == pytest.approx(float(set_loss(squamoid, y)), abs=1e-6)
    assert float(set_loss(spindle, y)) < 0.01 < float(set_loss(benign, y))
    known = torch.tensor([pattern_index("squamoid")])
    assert float(set_loss(spindle, known)) > float(set_loss(squamoid, known))


@pytest.mark.slow
def test_cli_evaluate_tissue_on_real_patches(tmp_path: Path) -> None:
    """``atc-wsi evaluate tissue``: a CSV of real sarcoma tiles (0.5 µm/px) with their labels."""
    import json

    from typer.testing import CliRunner

    from workers.cli import app

    tiles = ROOT / "sarcoma_sts_foersch" / "Example_Tiles"
    names = ["LMS_2_VALID_01.jpg", "SS_2_VALID_01.jpg", "UPS_2_VALID_01.jpg"]
    csv_path = tmp_path / "patches.csv"
    csv_path.write_text(
        "file,label,patient\n" + "".join(f"{tiles / n},{n[:3].strip('_')},{n[:5]}\n" for n in names)
    )
    out = tmp_path / "tissue.json"
    res = CliRunner().invoke(
        app, ["evaluate", "tissue", str(csv_path), "--mpp", "0.5", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    m = json.loads(out.read_text())
    assert m["task"] == "tissue" and m["n"] == 3 and m["n_groups"] == 3
    assert set(m["per_class"]) == {"spindle", "pleomorphic"}  # LMS, SS → spindle; UPS
    assert m["tumour_vs_non_tumour"]["n"] == 3
    assert m["pattern_macro_f1"]["classes"] == ["spindle", "pleomorphic"]
    assert "tumour vs non-tumour accuracy" in res.output
    bad_label = tmp_path / "bad.csv"
    bad_label.write_text(f"file,label\n{tiles / names[0]},lipoma\n")
    bad = CliRunner().invoke(app, ["evaluate", "tissue", str(bad_label), "--mpp", "0.5"])
    assert bad.exit_code == 2 and "lipoma" in bad.output


@pytest.mark.slow
def test_necrosis_weak_masks_mark_only_necrotic_tissue() -> None:
    from models.training.real_tissue import necrosis_patch_set

    train, held = necrosis_patch_set(2.0, 192, holdout_fold=1, root=ROOT)
    nec = pattern_index("necrosis")
    assert train.masks is not None and train.images.shape[1:] == (192, 192, 3)
    is_nec = train.labels == nec
    assert is_nec.any() and (~is_nec).any()
    assert not (train.masks[~is_nec] == nec).any()  # no necrosis outside necrotic tiles
    assert (train.masks[is_nec] == nec).mean() > 0.3  # necrotic tiles: their tissue pixels
    assert set(held.folds.tolist()) == {1}
