"""The labelled-set reader, metrics with intervals, and ``atc-wsi evaluate`` on real crops."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from models.errors import LabelError
from models.training.augment import StainAugment, augment_batch
from models.training.crop_eval import EvalTask, classification_metrics, evaluate_set
from models.training.eval_tasks import mitosis_scores, mitosis_task
from models.training.labelled import centre_crop, map_labels, read_labelled
from models.training.metrics import wilson_interval

AMI_BR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mitosis" / "ami-br"


def _write(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((16, 16, 3), value, np.uint8)).save(path)


def test_class_folders_and_csv(tmp_path: Path) -> None:
    _write(tmp_path / "folders" / "Atypical" / "a.png", 10)
    _write(tmp_path / "folders" / "normal" / "b.png", 200)
    data = read_labelled(tmp_path / "folders")
    assert sorted(data.labels) == ["Atypical", "normal"]
    (tmp_path / "folders" / "set.csv").write_text(
        "file,label,slide\nAtypical/a.png,atypical,s1\nnormal/b.png,normal,s2\n"
    )
    via_csv = read_labelled(tmp_path / "folders")  # the one labelled CSV wins
    assert via_csv.groups == ("s1", "s2")
    (tmp_path / "folders" / "other.csv").write_text("file,label\nnormal/b.png,normal\n")
    with pytest.raises(LabelError, match="several labelled CSVs"):
        read_labelled(tmp_path / "folders")
    (tmp_path / "bad.csv").write_text("file,label\nmissing.png,normal\n")
    with pytest.raises(LabelError, match="not found"):
        read_labelled(tmp_path / "bad.csv")


def test_unknown_labels_are_listed() -> None:
    classes = ("negative", "typical", "atypical")
    y = map_labels(
        ["Atypical", "NMF", "imposter"], classes, {"nmf": "typical", "imposter": "negative"}
    )
    assert y.tolist() == [2, 1, 0]
    with pytest.raises(LabelError, match=r"'prophase'.*known:.*atypical"):
        map_labels(["prophase"], classes, {})
    assert map_labels(["prophase"], classes, {}, {"prophase": "typical"}).tolist() == [1]


def test_metrics_and_intervals() -> None:
    y = np.array([0, 0, 1, 1, 1, 1])
    p = np.array([0, 1, 1, 1, 1, 0])
    m = classification_metrics(y, p, ("a", "b"), groups=["s1", "s1", "s2", "s2", "s3", "s3"])
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 0.75) / 2, abs=1e-4)
    assert m["confusion"]["rows_truth_cols_prediction"] == [[1, 1], [1, 3]]
    lo, hi = m["balanced_accuracy_ci95"]
    assert lo <= m["balanced_accuracy"] <= hi
    lo, hi = wilson_interval(0, 10)
    assert lo == 0 and 0.25 < hi < 0.35  # the textbook value 0.278


def test_mitosis_scores_and_operating_point() -> None:
    probs = np.array([[0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.05, 0.1, 0.85]], np.float32)
    s = mitosis_scores(probs, ("negative", "mitosis_typical", "mitosis_tripolar"))
    task = mitosis_task(0.5)
    assert task.to_truth(s).tolist() == [0, 1, 2]
    assert mitosis_task(0.99).to_truth(s).tolist() == [0, 0, 0]


def test_evaluate_set_with_a_fixed_predictor(tmp_path: Path) -> None:
    for i in range(3):
        _write(tmp_path / "typical" / f"t{i}.png", 40)
        _write(tmp_path / "negative" / f"n{i}.png", 220)

    def predictor(images: list[np.ndarray]) -> np.ndarray:  # dark crop = mitosis
        dark = np.array([im.mean() < 128 for im in images], np.float32)
        return np.stack([dark, np.zeros_like(dark), np.zeros_like(dark)], 1)

    m = evaluate_set(read_labelled(tmp_path), mitosis_task(0.5), predictor)
    assert m["balanced_accuracy"] == 1.0
    assert m["mitoses_called_mitosis"]["share"] == 1.0
    assert m["negatives_called_mitosis"]["share"] == 0.0
    task = EvalTask("t", ("negative", "typical"), {}, lambda s: np.zeros(len(s), np.int64))
    assert evaluate_set(read_labelled(tmp_path), task, predictor)["balanced_accuracy"] == 0.5


def test_centre_crop_pads_white() -> None:
    img = np.zeros((10, 10, 3), np.uint8)
    out = centre_crop(img, 14)
    assert out.shape == (14, 14, 3) and out[0, 0, 0] == 255 and out[7, 7, 0] == 0


def test_real_stain_augmentation_changes_colour_and_stays_in_range() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.full((16, 32, 32, 3), 128, dtype=torch.uint8)
    x[:, 8:24, 8:24] = torch.tensor([90, 40, 140], dtype=torch.uint8)  # a haematoxylin-ish blob
    y = augment_batch(x, StainAugment.real(), gen)
    assert y.shape == (16, 3, 32, 32) and float(y.min()) >= 0 and float(y.max()) <= 1
    means = y.mean(dim=(2, 3))
    assert float(means.std(dim=0).min()) > 0.02  # colours differ between images
    again = augment_batch(x, StainAugment.real(), torch.Generator().manual_seed(0))
    assert torch.equal(y, again)  # seeded


@pytest.mark.slow
@pytest.mark.skipif(not AMI_BR.is_dir(), reason="shared real crops not present")
def test_cli_evaluate_mitosis_on_real_crops(tmp_path: Path) -> None:
    from workers.cli import app

    out = tmp_path / "m.json"
    res = CliRunner().invoke(
        app, ["evaluate", "mitosis", str(AMI_BR), "--mpp", "0.25", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    m = json.loads(out.read_text())
    assert m["n"] == 120 and m["per_class"]["atypical"]["n"] == 60
    assert 0 <= m["mitoses_called_mitosis"]["share"] <= 1
    assert "balanced accuracy" in res.output
    bad = CliRunner().invoke(app, ["evaluate", "mitosis", str(tmp_path / "nope"), "--mpp", "0.25"])
    assert bad.exit_code == 2 and "no such file or folder" in bad.output
