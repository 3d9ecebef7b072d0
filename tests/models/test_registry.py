"""Model registry: names, specs, checksummed weights, clear errors."""

from __future__ import annotations

import dataclasses
import datetime
import shutil
from pathlib import Path

import pytest
import torch

from models import _registry
from models.errors import UnknownModelError, WeightsError
from models.registry import (
    ModelSpec,
    create_model,
    file_sha256,
    get_spec,
    list_models,
    register_model,
)


def test_builtin_models_are_listed() -> None:
    names = list_models("atc-*")
    assert {"atc-pattern-v1", "atc-necrosis-v1"} <= set(names)
    assert list_models("atc-pattern-*") == ["atc-pattern-v1"]


def test_unknown_model_names_the_known_ones() -> None:
    with pytest.raises(UnknownModelError) as err:
        get_spec("atc-patern-v1")
    msg = str(err.value)
    assert "atc-patern-v1" in msg and "atc-pattern-v1" in msg and "atc-necrosis-v1" in msg


@pytest.mark.parametrize("name", ["atc-pattern-v1", "atc-necrosis-v1"])
def test_shipped_weights_load_and_match_their_card(name: str) -> None:
    spec = get_spec(name)
    model = create_model(name)
    assert not model.training
    card = spec.card()
    assert card["sha256"] == spec.sha256 == file_sha256(spec.weights_path)
    assert card["classes"] == list(spec.classes) and card["input_mpp"] == spec.input_mpp
    x = torch.zeros(1, 3, spec.tile_px, spec.tile_px)
    with torch.inference_mode():
        out = model(x)
    assert out.shape[1] == len(spec.classes)


def test_all_weights_stay_under_60_mb() -> None:
    total = sum(p.stat().st_size for p in _registry.weights_dir().glob("*.pt"))
    assert total < 60e6


def _isolated(spec: ModelSpec, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATC_WEIGHTS_DIR", str(folder))
    monkeypatch.setitem(_registry._SPECS, spec.name, spec)


def test_checksum_mismatch_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = get_spec("atc-pattern-v1")
    torch.manual_seed(1)
    torch.save(spec.arch().state_dict(), tmp_path / spec.weights_file)  # other weights
    _isolated(spec, tmp_path, monkeypatch)
    with pytest.raises(WeightsError) as err:
        create_model(spec.name)
    msg = str(err.value)
    assert "sha256 mismatch" in msg and "retrain" in msg and spec.weights_file in msg


def test_missing_weights_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _isolated(get_spec("atc-necrosis-v1"), tmp_path, monkeypatch)
    with pytest.raises(WeightsError, match="not found"):
        create_model("atc-necrosis-v1")


def test_weights_that_run_code_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = get_spec("atc-pattern-v1")
    path = tmp_path / spec.weights_file
    torch.save({"x": datetime.date(2020, 1, 1)}, path)  # an object weights_only must refuse
    _isolated(dataclasses.replace(spec, sha256=file_sha256(path)), tmp_path, monkeypatch)
    with pytest.raises(WeightsError, match="cannot read weights"):
        create_model(spec.name)


def test_architecture_mismatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = get_spec("atc-pattern-v1")
    path = tmp_path / spec.weights_file
    shutil.copy(get_spec("atc-necrosis-v1").weights_path, path)
    _isolated(dataclasses.replace(spec, sha256=file_sha256(path)), tmp_path, monkeypatch)
    with pytest.raises(WeightsError, match="do not fit"):
        create_model(spec.name)


def test_a_name_cannot_be_taken_twice() -> None:
    with pytest.raises(ValueError, match="already registered"):

        @register_model("atc-pattern-v1")
        def other() -> ModelSpec:
            raise AssertionError
