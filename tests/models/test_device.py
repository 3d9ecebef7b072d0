"""Device and precision choice."""

from __future__ import annotations

import pytest
import torch

from models import device as device_mod
from models.device import exact, resolve_device


def test_cpu_auto_is_bf16_only_with_amx(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ATC_PRECISION", raising=False)
    monkeypatch.setattr(device_mod, "cpu_has_amx", lambda: False)
    d = resolve_device("cpu", "auto")
    assert d.device.type == "cpu" and d.amp_dtype is None and d.precision == "fp32"
    assert d.channels_last
    monkeypatch.setattr(device_mod, "cpu_has_amx", lambda: True)
    assert resolve_device("cpu", "auto").precision == "bf16"
    assert resolve_device("cpu", "fp32").precision == "fp32"  # an explicit choice stays


def test_precision_environment_overrides_auto_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATC_PRECISION", "fp32")
    monkeypatch.setattr(device_mod, "cpu_has_amx", lambda: True)
    assert resolve_device("cpu", "auto").precision == "fp32"
    assert resolve_device("cpu", "bf16").precision == "bf16"
    monkeypatch.setenv("ATC_PRECISION", "fp8")
    with pytest.raises(ValueError, match="precision must be"):
        resolve_device("cpu", "auto")


def test_cpu_flags_are_read_from_the_flags_line() -> None:
    flags = device_mod._cpu_flags()
    assert device_mod.cpu_has_amx() == ("amx_bf16" in flags)


def test_exact_runs_fixed_arithmetic_in_fp32_under_autocast() -> None:
    a, b = torch.rand(64, 3), torch.rand(3, 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = a @ b
        with exact(a):
            full = a @ b
    assert low.dtype == torch.bfloat16
    assert full.dtype == torch.float32 and torch.equal(full, a @ b)


def test_bf16_can_be_asked_for_on_cpu() -> None:
    assert resolve_device("cpu", "bf16").amp_dtype == torch.bfloat16


@pytest.mark.parametrize(
    ("device", "precision", "match"),
    [
        ("tpu", "auto", "device must be"),
        ("cpu", "fp8", "precision must be"),
        ("cpu", "fp16", "GPU-only"),
    ],
)
def test_bad_choices_are_rejected(device: str, precision: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        resolve_device(device, precision)


def test_environment_overrides_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATC_DEVICE", "cpu")
    assert resolve_device("auto").device.type == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_a_gpu_says_what_to_do() -> None:
    with pytest.raises(ValueError, match="--device cpu"):
        resolve_device("cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_autocast_matches_cpu() -> None:
    from models.engine import Engine
    from models.registry import create_model, get_spec
    from models.settings import EngineSettings

    spec = get_spec("atc-pattern-v1")
    model = create_model(spec.name)
    images = torch.randint(0, 256, (8, spec.tile_px, spec.tile_px, 3), dtype=torch.uint8)
    cpu = Engine(resolve_device("cpu"), EngineSettings()).forward(model, spec, images, _head)
    gpu_dev = resolve_device("cuda")
    assert gpu_dev.amp_dtype in (torch.bfloat16, torch.float16)
    gpu_model = create_model(spec.name)
    eng = Engine(gpu_dev, EngineSettings())
    gpu = eng.forward(eng.prepare(gpu_model), spec, images, _head)
    assert abs(cpu["probs"] - gpu["probs"]).max() < 0.05


def _head(logits: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"probs": torch.softmax(logits.float(), 1)}
