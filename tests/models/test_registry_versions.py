"""Versioned models: model folders, name@version, $ATC_MODELS_DIR, `atc-wsi models`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from models.errors import UnknownModelError, WeightsError
from models.registry import create_model, file_sha256, get_spec
from models.training.card import write_model_folder
from workers.cli import app


def _folder(root: Path, version: str, seed: int = 1) -> Path:
    base = get_spec("atc-necrosis-v1")
    torch.manual_seed(seed)
    model = base.arch()  # other weights than the shipped ones
    folder = root / base.name / version
    write_model_folder(
        model,
        base,
        folder,
        name=base.name,
        version=version,
        command="test",
        training={"steps": 0},
        data={"train_slides": [{"name": "lab-slide-1"}]},
        metrics={},
    )
    return folder


def test_a_folder_loads_by_path_with_its_own_version_and_sha(tmp_path: Path) -> None:
    folder = _folder(tmp_path, "1.1.0+lab.1")
    spec = get_spec(str(folder))
    card = json.loads((folder / "card.json").read_text())
    assert spec.version == "1.1.0+lab.1" and spec.base == "atc-necrosis-v1"
    assert spec.sha256 == card["sha256"] == file_sha256(folder / "weights.pt")
    assert (
        card["code_version"]["package"] and card["started_from"]["ref"] == "atc-necrosis-v1@1.1.0"
    )
    assert spec.provenance()["version"] == "1.1.0+lab.1"
    shipped = create_model("atc-necrosis-v1").state_dict()
    loaded = create_model(str(folder)).state_dict()
    assert any(not torch.equal(shipped[k], loaded[k]) for k in shipped)


def test_name_at_version_is_found_under_the_models_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _folder(tmp_path, "1.1.0+lab.1", seed=1)
    newer = _folder(tmp_path, "1.1.0+lab.2", seed=2)
    monkeypatch.setenv("ATC_MODELS_DIR", str(tmp_path))
    assert get_spec("atc-necrosis-v1@1.1.0+lab.2").folder == newer.resolve()
    assert get_spec("atc-necrosis-v1@1.1.0").folder is None  # the shipped version
    assert get_spec("atc-necrosis-v1").folder is None  # a bare shipped name stays shipped
    with pytest.raises(UnknownModelError) as err:
        get_spec("atc-necrosis-v1@9.9.9")
    assert "atc-necrosis-v1@1.1.0+lab.1" in str(err.value)
    assert "atc-pattern-v1@1.2.0" in str(err.value)


def test_a_replaced_weights_file_is_refused(tmp_path: Path) -> None:
    folder = _folder(tmp_path, "1.1.0+lab.1")
    torch.save(get_spec("atc-necrosis-v1").arch().state_dict(), folder / "weights.pt")
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        create_model(str(folder))


def test_a_folder_without_card_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="not a model folder"):
        get_spec(str(tmp_path))
    with pytest.raises(UnknownModelError, match="model folder"):
        get_spec(str(tmp_path / "missing"))


def test_models_list_and_show(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _folder(tmp_path, "1.1.0+lab.1")
    monkeypatch.setenv("ATC_MODELS_DIR", str(tmp_path))
    res = CliRunner().invoke(app, ["models", "list", "atc-necrosis-*"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].startswith("atc-necrosis-v1@1.1.0 ") and "shipped" in lines[0]
    assert lines[1].startswith("atc-necrosis-v1@1.1.0+lab.1") and str(folder.resolve()) in lines[1]
    res = CliRunner().invoke(app, ["models", "show", "atc-necrosis-v1@1.1.0+lab.1"])
    assert res.exit_code == 0, res.output
    shown = json.loads(res.output)
    assert shown["ref"] == "atc-necrosis-v1@1.1.0+lab.1"
    assert shown["card"]["data"]["train_slides"] == [{"name": "lab-slide-1"}]
    res = CliRunner().invoke(app, ["models", "show", "atc-necrosis-v1@0.0.1"])
    assert res.exit_code == 2 and "known models" in res.output


def test_config_hash_follows_the_weights_of_a_versioned_reference(tmp_path: Path) -> None:
    from models.settings import PipelineSettings

    default = PipelineSettings()
    folder = _folder(tmp_path, "1.1.0+lab.1", seed=1)
    chosen = default.model_copy(
        update={"necrosis": default.necrosis.model_copy(update={"model": str(folder)})}
    )
    first = chosen.config_hash()
    assert first != default.config_hash()
    _folder(tmp_path, "1.1.0+lab.1", seed=2)  # retrained into the same folder
    assert chosen.config_hash() != first
    assert default.pinned_weights() == {}  # shipped names: pinned by the code version
