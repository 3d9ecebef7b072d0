"""bf16 autocast changes only the trained layers: fixed arithmetic inside the models stays fp32.

On a CPU with AMX the engine's ``auto`` precision is bf16 (``models.device``); these tests check,
with the shipped weights, that the mitosis candidates and the IHC DAB map are bit-identical
under autocast and that the class probabilities move by far less than any operating point.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.cells.mitosis_net import MEAN, STD
from models.device import DeviceChoice
from models.engine import Engine
from models.registry import create_model, get_spec
from models.settings import EngineSettings


def _tiles(n: int, size: int, seed: int) -> np.ndarray:
    """Pale noisy tiles with dark chromatin-like blobs of several sizes (uint8 NHWC)."""
    rng = np.random.default_rng(seed)
    img = rng.normal(225, 12, (n, size, size, 3)).clip(0, 255)
    yy, xx = np.mgrid[:size, :size]
    for k in range(n):
        for _ in range(12):
            r, c, rad = rng.integers(8, size - 8), rng.integers(8, size - 8), rng.integers(3, 9)
            blob = (yy - r) ** 2 + (xx - c) ** 2 <= rad**2
            img[k][blob] = rng.normal((60, 40, 110), 15, (int(blob.sum()), 3))
    return img.clip(0, 255).astype(np.uint8)


def _norm(img: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(img).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    return x.contiguous(memory_format=torch.channels_last)


def test_mitosis_candidates_identical_and_scores_close_under_bf16() -> None:
    det = create_model("atc-mitosis-v1").eval()
    x = _norm(_tiles(4, 256, seed=3))
    with torch.inference_mode():
        full = det(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = det(x)
    assert low.dtype == torch.float32
    real = full[..., 2] >= 0
    assert int(real.sum()) > 10
    # rows, columns and candidate OD: the fixed stage is exact under autocast
    assert torch.equal(full[..., :3], low[..., :3])
    assert float((full[..., 3:] - low[..., 3:]).abs().max()) < 0.02


def test_ihc_dab_map_identical_under_bf16() -> None:
    det = create_model("atc-tam-ihc-v1").eval()
    det.with_dab = True
    x = _norm(_tiles(2, 128, seed=5))
    with torch.inference_mode():
        _, maps_full = det(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            _, maps_low = det(x)
    assert torch.equal(maps_full, maps_low)


@pytest.mark.parametrize("name", ["atc-pattern-v1", "atc-necrosis-v1"])
def test_engine_bf16_tile_outputs_match_fp32(name: str) -> None:
    spec = get_spec(name)
    model = create_model(name)
    images = torch.from_numpy(_tiles(4, spec.tile_px, seed=11))
    outs = []
    for amp in (None, torch.bfloat16):
        eng = Engine(DeviceChoice(torch.device("cpu"), amp, True), EngineSettings(num_workers=0))
        outs.append(eng.forward(eng.prepare(model), spec, images, _softmax))
    assert float(np.abs(outs[0]["p"] - outs[1]["p"]).max()) < 0.05


def _softmax(logits: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"p": torch.softmax(logits.float(), 1)}
