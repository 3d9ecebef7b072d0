"""``atc-wsi train`` on labelled patch and crop sets (class folders, file,label,slide CSVs).

A handful of real patches and crops from ``../shared/data`` (thyroid patches, AMi-Br crops), a few
steps on the CPU: the refusals, and tiny fine-tunes that write model folders the registry loads
by path, whose cards list the sets and carry figures on the held-out slide only.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from models.registry import create_model, get_spec
from workers.cli import app


def _invoke(args: list[str]) -> Any:
    return CliRunner().invoke(app, ["train", *args])


def _shared(rel: str) -> Path:
    root = Path(__file__).resolve().parents[2].parent / "shared" / "data" / rel
    if not root.is_dir():
        pytest.skip(f"shared data not found at {root}")
    return root


@pytest.fixture(scope="module")
def thyroid_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six ThyHisTer patches of three slides as a file,label,slide CSV (paths relative)."""
    root = _shared("real/tissue/thyhister_thyroid")
    out = tmp_path_factory.mktemp("thyroid")
    rows = list(csv.DictReader((root / "labels.csv").open(encoding="utf-8")))
    picked: list[dict[str, str]] = []
    for slide, label in (("PTC_1", "tumor"), ("BN_1", "normal"), ("BN_31", "normal")):
        picked += [r for r in rows if r["slide"] == slide and r["patch_label"] == label][:2]
    with (out / "patches.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "label", "slide"])
        for r in picked:
            name = Path(r["path"]).name
            shutil.copy(root / r["path"], out / name)
            w.writerow(
                [name, "benign" if r["patch_label"] == "normal" else "carcinoma", r["slide"]]
            )
    return out / "patches.csv"


@pytest.fixture(scope="module")
def ami_crops(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Class folders with three AMi-Br crops each of ``atypical/`` and ``normal/``."""
    root = _shared("mitosis/ami-br/patches")
    out = tmp_path_factory.mktemp("crops")
    for cls in ("atypical", "normal"):
        (out / cls).mkdir()
        for f in sorted((root / cls).glob("*.png"))[:3]:
            shutil.copy(f, out / cls / f.name)
    return out


def test_help_lists_the_set_options() -> None:
    res = _invoke(["--help"])
    assert res.exit_code == 0, res.output
    for flag in ("--patches", "--patch-mpp", "--crops", "--real", "--holdout-fold"):
        assert flag in res.output


def test_unknown_real_set_is_refused(tmp_path: Path) -> None:
    res = _invoke(["pattern", "--real", "cells", "--out", str(tmp_path / "m")])
    assert res.exit_code == 2
    assert "unknown for task pattern" in res.output and "tissue" in res.output
    res = _invoke(["tam", "--real", "tissue", "--out", str(tmp_path / "m")])
    assert res.exit_code == 2 and "unknown for task tam" in res.output


def test_patch_set_with_an_unknown_label_is_refused(tmp_path: Path, thyroid_csv: Path) -> None:
    bad = tmp_path / "bad"
    (bad / "fibrosis").mkdir(parents=True)
    shutil.copy(next(thyroid_csv.parent.glob("*.png")), bad / "fibrosis" / "a.png")
    res = _invoke(["pattern", "--patches", str(bad), "--patch-mpp", "0.5", "--out", str(bad / "m")])
    assert res.exit_code == 2
    assert "'fibrosis'" in res.output and "non_tumour" in res.output and "--label-map" in res.output
    assert not (bad / "m").exists()


def test_patches_without_their_mpp_are_refused(tmp_path: Path, thyroid_csv: Path) -> None:
    res = _invoke(["pattern", "--patches", str(thyroid_csv), "--out", str(tmp_path / "m")])
    assert res.exit_code == 2 and "--patch-mpp" in res.output
    res = _invoke(
        ["pattern", "--patches", str(thyroid_csv), "--patch-mpp", "50", "--out", str(tmp_path)]
    )
    assert res.exit_code == 2 and "not a plausible pixel size" in res.output
    res = _invoke(
        ["necrosis", "--patches", str(thyroid_csv), "--patch-mpp", "0.5", "--out", str(tmp_path)]
    )
    assert res.exit_code == 2 and "trains the pattern task" in res.output
    res = _invoke(["pattern", "--out", str(tmp_path / "m")])
    assert res.exit_code == 2 and "nothing to train on" in res.output
    res = _invoke(
        ["mitosis", "--crops", str(thyroid_csv), "--crop-mpp", "0.25", "--views-real", "2",
         "--out", str(tmp_path / "m")]
    )  # fmt: skip
    assert res.exit_code == 2 and "--views-real: options of pattern training" in res.output
    res = _invoke(
        ["pattern", "--patches", str(thyroid_csv), "--patch-mpp", "0.5", "--base",
         "atc-necrosis-v1", "--out", str(tmp_path / "m")]
    )  # fmt: skip
    assert res.exit_code == 2 and "task pattern trains atc-pattern-v1" in res.output
    res = _invoke(
        ["pattern", "--patches", str(thyroid_csv), "--patch-mpp", "0.5", "--holdout", "BN_9",
         "--out", str(tmp_path / "m")]
    )  # fmt: skip
    assert res.exit_code == 2 and "BN_9" in res.output and "BN_31" in res.output


def test_pattern_fine_tune_on_patches_writes_a_loadable_folder(
    tmp_path: Path, thyroid_csv: Path
) -> None:
    out = tmp_path / "atc-pattern-v1" / "1.2.0+lab.t"
    res = _invoke(
        ["pattern", "--patches", str(thyroid_csv), "--patch-mpp", "0.5", "--holdout", "BN_31",
         "--synthetic", "4", "--synthetic-val", "0", "--views-real", "1", "--views-synthetic", "1",
         "--steps", "2", "--batch-size", "2", "--cache", str(tmp_path / "cache"),
         "--out", str(out), "--version", "1.2.0+lab.t"]
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    card = json.loads((out / "card.json").read_text())
    lab = [s for s in card["data"]["training_sets"] if s.get("name") == "lab:patches"]
    assert len(lab) == 1 and lab[0]["mpp"] == 0.5 and lab[0]["licence"]
    assert lab[0]["labels"]["carcinoma"]["class"] == "tumour"
    assert lab[0]["labels"]["benign"]["class"] == "non_tumour"
    folds = card["data"]["patch_folds"]["lab:patches"]
    assert folds["held_out_groups"] == ["BN_31"]
    assert sorted(folds["trained_groups"]) == ["BN_1", "PTC_1"]
    held = card["metrics"]["held_out_patches"]["all"]
    assert held["groups"] == 1 and held["non_tumour_specificity"]["n"] >= 2
    assert card["training"]["steps"] == 2
    spec = get_spec(str(out))
    assert spec.version == "1.2.0+lab.t" and spec.sha256 == card["sha256"]
    create_model(str(out))  # the sha256 is checked against the card on load


def test_mitosis_fine_tune_on_crops_scores_the_held_out_fold(
    tmp_path: Path, ami_crops: Path
) -> None:
    out = tmp_path / "mit"
    res = _invoke(
        ["mitosis", "--crops", str(ami_crops), "--crop-mpp", "0.25", "--holdout-fold", "0",
         "--steps", "2", "--batch-size", "4", "--out", str(out), "--version", "2.1.0+lab.t"]
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    card = json.loads((out / "card.json").read_text())
    (row,) = card["data"]["training_sets"]
    assert row["name"] == f"lab:{ami_crops.name}" and row["labels"]["normal"]["class"] == "typical"
    n_held = card["data"]["heldout_crops"]
    assert 0 < n_held < 6 and card["data"]["crops_trained"] == 6 - n_held
    held = card["metrics"]["heldout_crops"]["all"]
    assert held["n"] == n_held and "mitoses_called_mitosis" in held
    assert get_spec(str(out)).version == "2.1.0+lab.t"


@pytest.fixture(scope="module")
def few_cells() -> list[Any]:
    """Two MoNuSAC images with macrophages (one per patient fold) and two CoNSeP patches."""
    _shared("real/cells")
    from models.training import real_cells as rc

    mon = [m for m in rc.load_monusac() if len(m.of("macrophage"))]
    picked = [next(m for m in mon if m.split == f) for f in ("fold0", "fold1")]
    return [*picked, *rc.load_consep(split="train")[:1], *rc.load_consep(split="test")[:1]]


def test_tam_fine_tune_on_real_cells_scores_the_held_out_patients(
    tmp_path: Path, few_cells: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from models.training import cell_sources

    monkeypatch.setattr(cell_sources, "load_cells", lambda: few_cells)
    out = tmp_path / "tam"
    res = _invoke(
        ["tam", "--real", "cells", "--holdout-fold", "1", "--steps", "2", "--batch-size", "2",
         "--out", str(out), "--version", "1.3.0+lab.t"]
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    card = json.loads((out / "card.json").read_text())
    licences = {s["set"].split("/")[-1]: s["licence"] for s in card["data"]["training_sets"]}
    assert "non-commercial" in licences["monusac_test_colormask"]
    assert card["data"]["images_trained"] == 2
    assert card["data"]["heldout_groups"] == sorted({few_cells[1].group, few_cells[3].group})
    held = card["metrics"]["heldout_cells"]
    assert held["monusac_macrophages"]["all"]["images"] == 1
    assert held["nuclei"]["images"] == 1
    create_model(str(out))
