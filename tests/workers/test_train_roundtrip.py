"""The lab loop on small synthetic slides: analyse → export GeoJSON → a pathologist corrects the
classes (in code) → import as annotations → fine-tune → evaluate on a held-out slide → reanalyse
with the new version. Plus: a resumed training run ends with the weights of an uninterrupted one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from models.registry import get_spec
from models.training import finetune
from models.training.annotated import pair_slides
from models.training.finetune import TrainConfig
from workers.cli import app
from wsi.synthetic import SynthSpec, generate_slide
from wsi.synthetic.truth import load_truth
from wsi.taxonomy import PATTERN_CLASSES, PATTERN_DISPLAY

LAB_SPINDLE = "ATC spindle (lab)"  # the lab's own name, mapped by --class-map


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two small synthetic slides, lab-a (to annotate) and lab-b (held out)."""
    root = tmp_path_factory.mktemp("lab")
    for name, seed in (("lab-a", 3), ("lab-b", 5)):
        spec = SynthSpec(width=3072, height=3072, seed=seed, workers=1, artefacts=False)
        generate_slide(spec, root / name)
    return root


def _run(args: list[str]) -> Any:
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    return res


def _pathologist_corrects(export: Path, folder: Path, out: Path) -> int:
    """Keep the model's tile squares, reclassed to what the slide really shows; glass tiles are
    deleted; spindle is written in the lab's own vocabulary. Returns how many tiles changed."""
    truth = load_truth(folder)
    lab, f = truth.label_map, truth.label_l0_per_px
    data = json.loads(export.read_text())
    kept, changed = [], 0
    for feat in data["features"]:
        props = feat["properties"]
        if props["objectType"] != "detection" or feat["geometry"]["type"] != "Polygon":
            continue
        ring = np.asarray(feat["geometry"]["coordinates"][0])
        (x0, y0), (x1, y1) = ring.min(axis=0) / f, ring.max(axis=0) / f
        win = lab[int(y0) : int(y1), int(x0) : int(x1)]
        cls = PATTERN_CLASSES[int(np.bincount(win.ravel(), minlength=6).argmax())]
        if cls == "background":
            continue
        name = LAB_SPINDLE if cls == "spindle" else PATTERN_DISPLAY[cls]
        changed += props["classification"]["name"] != PATTERN_DISPLAY[cls]
        props["classification"] = {"name": name}
        props["objectType"] = "annotation"
        kept.append(feat)
    out.write_text(json.dumps({"type": "FeatureCollection", "features": kept}))
    assert kept
    return changed


def test_round_trip(lab: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = lab / "lab-a" / "slide.tiff", lab / "lab-b" / "slide.tiff"
    _run(["analyze", str(a), "--out", str(tmp_path / "res-a"), "--device", "cpu",
          "--analyses", "pattern,necrosis"])  # fmt: skip
    edited = tmp_path / "lab-a.geojson"
    _pathologist_corrects(tmp_path / "res-a" / "annotations.geojson", lab / "lab-a", edited)
    class_map = tmp_path / "classes.csv"
    class_map.write_text(f"name,class\n{LAB_SPINDLE},Spindle\n")

    models_dir = tmp_path / "models"
    folder = models_dir / "atc-pattern-v1" / "1.2.0+lab.1"
    _run(["train", "pattern", "--slides", str(a), "--slides", str(b),
          "--annotations", str(edited), "--annotations", str(lab / "lab-b" / "truth.geojson"),
          "--class-map", str(class_map), "--holdout", "lab-b", "--out", str(folder),
          "--version", "1.2.0+lab.1", "--steps", "4", "--batch-size", "4", "--seed", "1",
          "--device", "cpu", "--checkpoint-every", "2"])  # fmt: skip
    card = json.loads((folder / "card.json").read_text())
    assert [s["name"] for s in card["data"]["train_slides"]] == ["lab-a"]
    assert [s["name"] for s in card["data"]["heldout_slides"]] == ["lab-b"]
    assert card["data"]["train_slides"][0]["region_area_px2"]["spindle"] > 0  # mapped name
    assert [r["slide"] for r in card["metrics"]["slides"]] == ["lab-b"]
    assert card["metrics"]["models"]["atc-pattern-v1"] == "atc-pattern-v1@1.2.0+lab.1"
    assert card["training"]["steps"] == 4 and card["base"] == "atc-pattern-v1"

    monkeypatch.setenv("ATC_MODELS_DIR", str(models_dir))
    ref = "atc-pattern-v1@1.2.0+lab.1"
    metrics = tmp_path / "eval.json"
    _run(["evaluate", "slides", "--slides", str(b), "--annotations",
          str(lab / "lab-b" / "truth.geojson"), "--models", f"pattern={ref}",
          "--tasks", "pattern,necrosis", "--device", "cpu", "--out", str(metrics)])  # fmt: skip
    ev = json.loads(metrics.read_text())
    assert ev["models"]["atc-pattern-v1"] == ref
    assert ev["slides"][0]["necrosis"]["evaluated_mm2"] > 0
    refused = CliRunner().invoke(
        app,
        ["evaluate", "slides", "--slides", str(a), "--annotations", str(edited),
         "--class-map", str(class_map), "--models", f"pattern={ref}"],
    )  # fmt: skip
    assert refused.exit_code == 2 and "trained on ['lab-a']" in refused.output

    _run(["analyze", str(b), "--out", str(tmp_path / "res-b"), "--device", "cpu",
          "--analyses", "pattern", "--models", f"pattern={ref}"])  # fmt: skip
    report = json.loads((tmp_path / "res-b" / "report.json").read_text())
    (used,) = report["provenance"]["models"]
    assert (used["name"], used["version"], used["sha256"]) == (
        "atc-pattern-v1",
        "1.2.0+lab.1",
        card["sha256"],
    )


def test_resumed_run_equals_an_uninterrupted_one(
    lab: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = pair_slides([lab / "lab-a" / "slide.tiff"], [lab / "lab-a" / "truth.geojson"])
    cfg = TrainConfig(
        task="necrosis", base="atc-necrosis-v1", steps=4, seed=2, device="cpu",
        batch_size=2, checkpoint_every=2,
    )  # fmt: skip
    finetune.train(cfg, items, [], tmp_path / "straight")

    save = finetune._save_checkpoint

    class Interrupted(Exception):
        pass

    def save_then_die(out: Path, c: TrainConfig, step: int, *rest: Any) -> None:
        save(out, c, step, *rest)
        if step == 2:
            raise Interrupted

    monkeypatch.setattr(finetune, "_save_checkpoint", save_then_die)
    with pytest.raises(Interrupted):
        finetune.train(cfg, items, [], tmp_path / "resumed")
    monkeypatch.setattr(finetune, "_save_checkpoint", save)
    finetune.train(cfg, items, [], tmp_path / "resumed", resume=True)
    log = (tmp_path / "resumed" / "train.log.jsonl").read_text()
    assert '"event": "resumed", "step": 2' in log
    one = torch.load(tmp_path / "straight" / "weights.pt", weights_only=True)
    two = torch.load(tmp_path / "resumed" / "weights.pt", weights_only=True)
    assert all(torch.equal(one[k], two[k]) for k in one)
    with pytest.raises(Exception, match="another run"):
        other = TrainConfig(task="necrosis", base="atc-necrosis-v1", steps=4, seed=3)
        finetune.train(other, items, [], tmp_path / "resumed", resume=True)


def test_mitosis_fine_tune_changes_only_the_classifier(lab: Path, tmp_path: Path) -> None:
    items = pair_slides(
        [lab / "lab-a" / "slide.tiff"], [lab / "lab-a" / "truth.geojson"], fully_annotated=True
    )
    assert len(items[0].ann.points_of("mitosis_typical", "mitosis_tripolar")) >= 1
    cfg = TrainConfig(task="mitosis", base="atc-mitosis-v1", steps=2, seed=0, device="cpu",
                      batch_size=8, lr=1e-3)  # fmt: skip
    card = json.loads(finetune.train(cfg, items, [], tmp_path / "mit").read_text())
    assert card["base"] == "atc-mitosis-v1" and card["training"]["samples"] > 1
    before = torch.load(get_spec("atc-mitosis-v1").weights_path, weights_only=True)
    after = torch.load(tmp_path / "mit" / "weights.pt", weights_only=True)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("classifier.") for k in changed)
    assert not any("running_" in k for k in changed)  # batch-norm statistics kept


def test_tam_targets_only_inside_fully_annotated_regions(lab: Path, tmp_path: Path) -> None:
    from models.training.annotated_cells import tam_tiles

    truth = json.loads((lab / "lab-a" / "truth.geojson").read_text())
    half = [[[0, 0], [1300, 0], [1300, 3072], [0, 3072], [0, 0]]]  # level-0 px
    truth["features"].append(
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": half},
         "properties": {"classification": {"name": "Fully annotated"}}}
    )  # fmt: skip
    path = tmp_path / "lab-a.geojson"
    path.write_text(json.dumps(truth))
    (item,) = pair_slides([lab / "lab-a" / "slide.tiff"], [path])
    spec = get_spec("atc-tam-v1")
    tiles = tam_tiles([item], spec)
    assert len(tiles) > 0 and tiles.targets.shape[1:] == (4, 128, 128)
    assert (tiles.targets[:, 1:2] == 0).all() and (tiles.targets[:, 3] == 0).all()
    weight = tiles.targets[:, 2]
    assert weight.min() == 0 and weight.max() == 1  # tiles crossing x = 1300 are cut
    peaks = int((tiles.targets[:, 0] >= 0.999).sum())
    in_half = item.ann.points_of("macrophage")[:, 0] < 1300
    assert 0 < peaks <= 2 * int(in_half.sum())


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--holdout", "lab-z"], "--holdout names ['lab-z'] are not slides given"),
        (["--holdout", "lab-a"], "every slide is held out"),
        (["--base", "atc-necrosis-v1"], "task pattern trains atc-pattern-v1"),
        (["--base", "atc-pattern-v1@0.9"], "unknown model 'atc-pattern-v1@0.9'"),
        (["--from-scratch", "--base", "atc-pattern-v1"], "not both"),
    ],
)
def test_train_refusals_are_one_line(
    lab: Path, tmp_path: Path, extra: list[str], message: str
) -> None:
    args = ["train", "pattern", "--slides", str(lab / "lab-a" / "slide.tiff"), "--annotations",
            str(lab / "lab-a" / "truth.geojson"), "--out", str(tmp_path / "m"), *extra]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(app, ["train", "grading", *args[2:]])
    assert res.exit_code == 2 and "trains pattern, necrosis, mitosis, tam" in res.output
