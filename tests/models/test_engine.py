"""The inference engine: batch-size invariance, determinism, checkpoints, cancel, bad tiles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.accumulate import TileArrayAccumulator
from models.device import resolve_device
from models.engine import Engine
from models.errors import AnalysisCancelled
from models.registry import create_model, get_spec
from models.settings import EngineSettings
from wsi import TileGrid, TileReader, compute_tissue_mask, open_slide

CMU = Path(__file__).resolve().parents[3] / "shared" / "data" / "slides" / "CMU-1-Small-Region.svs"
UNREADABLE = CMU.parent / "openslide-fixtures" / "unreadable.svs"

pytestmark = pytest.mark.skipif(not CMU.is_file(), reason="shared data not present")


@pytest.fixture(scope="module")
def grid() -> TileGrid:
    with open_slide(CMU) as slide:
        mask = compute_tissue_mask(slide)
        return TileGrid.for_slide(slide, target_mpp=1.0, tile_px=96, mask=mask, min_tissue=0.2)


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("atc-pattern-v1", pretrained=False)


def _run(net: torch.nn.Module, grid: TileGrid, **kw: object) -> tuple[np.ndarray, object]:
    settings = EngineSettings(
        batch_size=int(kw.pop("batch_size", 16)),  # type: ignore[call-overload]
        num_workers=int(kw.pop("num_workers", 0)),  # type: ignore[call-overload]
        chunk_tiles=int(kw.pop("chunk_tiles", 2000)),  # type: ignore[call-overload]
    )
    engine = Engine(resolve_device("cpu", "fp32"), settings)
    acc = TileArrayAccumulator(len(grid), "probs", (6,))
    stats = engine.run(net, get_spec("atc-pattern-v1"), TileReader(CMU, grid), [acc], **kw)  # type: ignore[arg-type]
    return acc.finalize(), stats


def test_batch_size_does_not_change_outputs(net: torch.nn.Module, grid: TileGrid) -> None:
    assert len(grid) >= 40
    one, _ = _run(net, grid, batch_size=1)
    many, stats = _run(net, grid, batch_size=64, num_workers=1)
    assert np.isfinite(one).all()
    assert np.abs(one - many).max() < 1e-3
    assert stats.n_tiles == len(grid) and stats.n_unreadable == 0  # type: ignore[attr-defined]


def test_cpu_output_is_deterministic(net: torch.nn.Module, grid: TileGrid) -> None:
    a, _ = _run(net, grid, batch_size=8)
    b, _ = _run(net, grid, batch_size=8)
    assert np.array_equal(a, b)


def test_progress_and_subset(net: torch.nn.Module, grid: TileGrid) -> None:
    calls: list[tuple[int, int]] = []
    subset = np.arange(len(grid))[::3]
    probs, _ = _run(net, grid, indices=subset, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (len(subset), len(subset))
    assert np.isfinite(probs[subset]).all()
    assert np.isnan(np.delete(probs, subset, axis=0)).all()


def test_chunks_are_checkpointed_and_resumed(
    net: torch.nn.Module, grid: TileGrid, tmp_path: Path
) -> None:
    full, _ = _run(net, grid, chunk_tiles=10, work_dir=tmp_path, tag="pattern")
    n_chunks = -(-len(grid) // 10)
    log = (tmp_path / "chunks.log").read_text().splitlines()
    assert log == [f"pattern {k}" for k in range(n_chunks)]
    (tmp_path / "pattern-chunk-1.npz").unlink()
    again, stats = _run(net, grid, chunk_tiles=10, work_dir=tmp_path, tag="pattern")
    assert np.array_equal(full, again)
    assert stats.chunks_loaded == n_chunks - 1 and stats.chunks_computed == 1  # type: ignore[attr-defined]
    assert (tmp_path / "chunks.log").read_text().splitlines()[-1] == "pattern 1"
    # throughput counts the computed chunk only (a resumed job once reported 41,124 tiles/s)
    assert stats.n_computed == 10  # type: ignore[attr-defined]
    assert stats.tiles_per_s == pytest.approx(10 / stats.seconds)  # type: ignore[attr-defined]


def test_cancel_stops_between_batches_and_keeps_finished_chunks(
    net: torch.nn.Module, grid: TileGrid, tmp_path: Path
) -> None:
    polls = {"n": 0}

    def cancel() -> bool:
        polls["n"] += 1
        return polls["n"] > 3  # two chunks of two batches: the first chunk completes

    with pytest.raises(AnalysisCancelled):
        _run(net, grid, batch_size=5, chunk_tiles=10, work_dir=tmp_path, tag="t", cancel=cancel)
    assert (tmp_path / "chunks.log").read_text().splitlines() == ["t 0"]
    _, stats = _run(net, grid, batch_size=5, chunk_tiles=10, work_dir=tmp_path, tag="t")
    assert stats.chunks_loaded == 1  # type: ignore[attr-defined]


def test_unreadable_tiles_are_counted_not_fatal(net: torch.nn.Module) -> None:
    with open_slide(UNREADABLE) as slide:
        bad = TileGrid.for_slide(slide, target_mpp=slide.mpp, tile_px=8)
    engine = Engine(resolve_device("cpu", "fp32"), EngineSettings(num_workers=0))
    acc = TileArrayAccumulator(len(bad), "probs", (6,))
    stats = engine.run(net, get_spec("atc-pattern-v1"), TileReader(UNREADABLE, bad), [acc])
    assert stats.n_unreadable == len(bad) == 4
    assert np.isnan(acc.finalize()).all()


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / 1e6


def test_memory_stays_flat_over_many_tiles() -> None:
    """RSS after 740 tiles is what it was after 185: nothing holds all tiles."""
    import dataclasses

    with open_slide(CMU) as slide:
        big = TileGrid.for_slide(slide, target_mpp=0.5, tile_px=96)
    assert len(big) > 700
    tiny = torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 3, stride=4), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    ).eval()
    spec = dataclasses.replace(get_spec("atc-pattern-v1"), arch=lambda: tiny)
    samples: list[tuple[int, float]] = []
    engine = Engine(resolve_device("cpu", "fp32"), EngineSettings(num_workers=0, batch_size=64))
    acc = TileArrayAccumulator(len(big), "probs", (6,))
    engine.run(
        tiny,
        spec,
        TileReader(CMU, big),
        [acc],
        progress=lambda d, t: samples.append((d, _rss_mb())),
    )
    quarter = next(rss for done, rss in samples if done >= len(big) // 4)
    assert samples[-1][1] - quarter < 25.0, samples[::5]


class _TwoOutputs(torch.nn.Module):
    """A model with two outputs of different shapes (as the IHC detector: peaks and a map)."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.mean(dim=(2, 3)), x[:, :1, ::8, ::8]


def test_models_with_several_outputs_reach_their_accumulators(grid: TileGrid) -> None:
    engine = Engine(resolve_device("cpu", "fp32"), EngineSettings(batch_size=8, num_workers=0))
    means = TileArrayAccumulator(len(grid), "means", (3,))
    stats = engine.run(
        _TwoOutputs(),
        get_spec("atc-pattern-v1"),
        TileReader(CMU, grid),
        [means],
        head=lambda o: {"means": o[0], "maps": o[1]},
    )
    out = means.finalize()
    assert stats.n_tiles == len(grid)
    assert np.isfinite(out).all() and out.shape == (len(grid), 3)
