"""Batched inference of one model over a tile grid, streaming into accumulators.

The engine is generic: it knows a network, its normalisation, a ``head`` turning logits into the
arrays an analysis wants, and the accumulators those arrays go to. Tiles come from a DataLoader
whose worker processes each open their own slide handle (``wsi.tiling.TileReader`` reopens after a
fork); uint8 tiles are copied to the device (pinned, non-blocking on CUDA) and normalised there.

Crash-safe resume: with a ``work_dir`` the tiles are processed in chunks of ``chunk_tiles``; after
each chunk the accumulators' state for it is written to ``<work_dir>/<tag>-chunk-<k>.npz``
atomically and a line ``<tag> <k>`` is appended to ``<work_dir>/chunks.log``. A later run with the
same work directory loads those chunks instead of recomputing them.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn
from torch.utils.data import DataLoader, Dataset

from models.accumulate import Accumulator, BatchMeta
from models.device import DeviceChoice, bound_heap
from models.errors import AnalysisCancelled
from models.fusion import fold_batchnorm
from models.registry import ModelSpec
from models.settings import EngineSettings
from wsi.io import atomic_write
from wsi.tiling import TileReader, TileSample

ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], bool]
#: Maps the model's output (a tensor, or a tuple of tensors for a model with several outputs,
#: each cast to float32) to named arrays for the accumulators.
HeadFn = Callable[[Any], Mapping[str, torch.Tensor]]
#: Extra keyword inputs of the model's forward for one batch, from the batch's grid indices
#: (per-tile facts the pixels do not carry, e.g. which neighbouring tiles the pass scans).
TileInputsFn = Callable[[NDArray[np.int64]], Mapping[str, torch.Tensor]]


def softmax_head(logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """Default head: class probabilities over axis 1 (works for (B, C) and (B, C, H, W))."""
    return {"probs": torch.softmax(logits.float(), dim=1)}


@dataclass(frozen=True)
class EngineStats:
    """What one engine run did.

    Attributes:
        n_tiles: tiles in the run.
        n_unreadable: tiles whose pixels could not be read (counted, not fatal).
        chunks_loaded: chunks restored from checkpoints.
        chunks_computed: chunks computed in this run.
        seconds: wall time of the run.
        batch_size: tiles per forward pass.
        n_computed: tiles computed in this run (not restored from checkpoints).
    """

    n_tiles: int
    n_unreadable: int
    chunks_loaded: int
    chunks_computed: int
    seconds: float
    batch_size: int
    n_computed: int = -1

    @property
    def tiles_per_s(self) -> float:
        """Throughput of the tiles computed in this run (restored chunks are not work done)."""
        computed = self.n_tiles if self.n_computed < 0 else self.n_computed
        return computed / self.seconds if self.seconds > 0 else 0.0


class _TileDataset(Dataset[TileSample]):
    """Map-style dataset over a :class:`TileReader` (the reader is picklable, handle-free)."""

    def __init__(self, reader: TileReader) -> None:
        self.reader = reader

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, index: int) -> TileSample:
        sample = self.reader.read(index)
        if not sample["image"].flags.writeable:  # torch wants writable arrays to share
            sample["image"] = np.array(sample["image"])
        return sample


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # loaders decode; the main process computes


class Engine:
    """Runs models on one device with one set of engine settings.

    Args:
        device: from :func:`models.device.resolve_device`.
        settings: batch size, loader workers, compile flag, chunk size.
    """

    def __init__(self, device: DeviceChoice, settings: EngineSettings) -> None:
        self.device = device
        self.settings = settings
        if settings.bounded_heap:  # memory stays flat over many batches (models.device.bound_heap)
            bound_heap()
        self._prepared: dict[int, nn.Module] = {}

    def prepare(self, model: nn.Module) -> nn.Module:
        """Move ``model`` to the device in eval mode, BatchNorm folded (``models.fusion``),
        channels_last where the device wants it, compiled when asked."""
        key = id(model)
        if key not in self._prepared:
            m = fold_batchnorm(model.eval()).to(self.device.device)
            if self.device.channels_last:
                m = m.to(memory_format=torch.channels_last)
            if self.settings.compile:
                m = torch.compile(m)  # type: ignore[assignment]
            self._prepared[key] = m
        return self._prepared[key]

    def _loader(self, reader: TileReader, batches: list[list[int]]) -> DataLoader[Any]:
        workers = self.settings.resolved_workers()
        if workers > 0 and multiprocessing.current_process().daemon:
            # A daemonic process (a Celery prefork child) may not start children: read the
            # tiles in this process instead.
            workers = 0
        kwargs: dict[str, Any] = {}
        if workers > 0:
            # a process holding CUDA must not fork: spawn the loaders then
            ctx = "spawn" if self.device.is_cuda else "fork"
            kwargs = {
                "multiprocessing_context": ctx,
                "worker_init_fn": _worker_init,
                "prefetch_factor": self.settings.prefetch_factor,
                "persistent_workers": False,
            }
        return DataLoader(
            _TileDataset(reader),
            batch_sampler=batches,
            num_workers=workers,
            pin_memory=self.device.is_cuda,
            **kwargs,
        )

    def _to_input(self, images: torch.Tensor, spec: ModelSpec) -> torch.Tensor:
        dev = self.device.device
        # (x / 255 − mean) / std as one multiply-add in place on the one float copy; the permuted
        # NHWC bytes give a channels_last float tensor directly
        x = images.to(dev, non_blocking=True).permute(0, 3, 1, 2).float()
        std = torch.tensor(spec.std, device=dev, dtype=torch.float32).view(1, 3, 1, 1)
        mean = torch.tensor(spec.mean, device=dev, dtype=torch.float32).view(1, 3, 1, 1)
        x.mul_(1.0 / (255.0 * std)).sub_(mean / std)
        if self.device.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def forward(
        self,
        model: nn.Module,
        spec: ModelSpec,
        images: torch.Tensor,
        head: HeadFn,
        *,
        tile_stats: bool = False,
        tile_inputs: Mapping[str, torch.Tensor] | None = None,
    ) -> dict[str, NDArray[np.float32]]:
        """Run one batch of (B, H, W, 3) uint8 tiles through ``model`` and ``head``.

        With ``tile_stats`` the outputs also hold ``focus``: the variance of the Laplacian of
        each tile's grey image (0–255 scale; low = blurred). ``tile_inputs`` are passed to the
        model's forward as keyword arguments (on the device).
        """
        dev = self.device
        extra = {k: v.to(dev.device) for k, v in (tile_inputs or {}).items()}
        with torch.inference_mode():
            with torch.autocast(
                dev.device.type, dtype=dev.amp_dtype, enabled=dev.amp_dtype is not None
            ):
                x = self._to_input(images, spec)
                raw = model(x, **extra)
                if isinstance(raw, torch.Tensor):
                    out = dict(head(raw.float()))
                else:  # several outputs (e.g. peaks and a stain map)
                    out = dict(head(tuple(t.float() for t in raw)))
            if tile_stats:
                out["focus"] = _focus(images.to(dev.device, non_blocking=True))
        return {k: v.float().cpu().numpy() for k, v in out.items()}

    def run(
        self,
        model: nn.Module,
        spec: ModelSpec,
        reader: TileReader,
        accumulators: Sequence[Accumulator],
        *,
        indices: NDArray[np.int64] | None = None,
        head: HeadFn = softmax_head,
        progress: ProgressFn | None = None,
        cancel: CancelFn | None = None,
        work_dir: Path | None = None,
        tag: str = "model",
        tile_stats: bool = False,
        tile_inputs: TileInputsFn | None = None,
    ) -> EngineStats:
        """Run ``model`` over the tiles of ``reader`` and stream outputs into ``accumulators``.

        Args:
            model: the network (built by ``models.registry.create_model``).
            spec: its spec (normalisation; its sha256 keys the checkpoints).
            reader: tile reader over the grid (its ``grid.tile_px`` is the input size).
            accumulators: receive ``add(outputs, meta)`` per batch.
            indices: grid tile indices to process (default: all), in this order.
            head: maps fp32 logits to named per-tile arrays (on the device).
            progress: called with (tiles done, tiles total) after each batch and chunk.
            cancel: polled before each batch; True raises :class:`AnalysisCancelled`.
            work_dir: folder for chunk checkpoints (none: no checkpoints).
            tag: checkpoint name prefix, unique per engine run of an analysis.
            tile_stats: add per-tile ``focus`` (Laplacian variance) to the outputs.
            tile_inputs: extra keyword inputs of the model per batch (see ``TileInputsFn``).

        Raises:
            AnalysisCancelled: ``cancel()`` returned True.
        """
        t0 = time.perf_counter()
        order = np.arange(len(reader), dtype=np.int64) if indices is None else indices
        order = np.asarray(order, dtype=np.int64)
        chunks = _split(order, self.settings.chunk_tiles)
        ckpt = _Checkpoints(work_dir, tag, _run_key(spec, reader, order)) if work_dir else None
        ok_all = np.ones(len(order), dtype=bool)
        done, total, loaded = 0, len(order), 0
        todo: list[int] = []
        for k, chunk in enumerate(chunks):
            state = ckpt.load(k, chunk) if ckpt else None
            if state is None:
                todo.append(k)
                continue
            try:
                for j, acc in enumerate(accumulators):
                    acc.load_state(chunk, _strip(state, f"a{j}/"))
            except (KeyError, ValueError):  # saved by other accumulators: recompute
                todo.append(k)
                continue
            ok_all[self._span(k)] = state["__ok"]
            done, loaded = done + len(chunk), loaded + 1
        if progress:
            progress(done, total)
        net = self.prepare(model) if todo else model
        bs = self.settings.batch_size
        stream = self._compute(
            net, spec, reader, chunks, todo, accumulators, head, cancel, tile_stats, tile_inputs
        )
        for k, meta_ok in stream:
            chunk = chunks[k]
            ok_all[self._span(k)] = meta_ok
            if ckpt:
                ckpt.save(k, chunk, accumulators, meta_ok)
            done += len(chunk)
            if progress:
                progress(done, total)
        return EngineStats(
            n_tiles=total,
            n_unreadable=int((~ok_all).sum()),
            chunks_loaded=loaded,
            chunks_computed=len(todo),
            seconds=time.perf_counter() - t0,
            batch_size=bs,
            n_computed=sum(len(chunks[k]) for k in todo),
        )

    def _span(self, k: int) -> slice:
        c = self.settings.chunk_tiles
        return slice(k * c, (k + 1) * c)

    def _compute(
        self,
        net: nn.Module,
        spec: ModelSpec,
        reader: TileReader,
        chunks: list[NDArray[np.int64]],
        todo: list[int],
        accumulators: Sequence[Accumulator],
        head: HeadFn,
        cancel: CancelFn | None,
        tile_stats: bool,
        tile_inputs: TileInputsFn | None,
    ) -> Iterator[tuple[int, NDArray[np.bool_]]]:
        """Compute the chunks ``todo``; yield (k, per-tile ok flags) as each chunk completes."""
        if not todo:
            return
        bs = self.settings.batch_size
        batches: list[list[int]] = []
        owner: list[int] = []
        for k in todo:
            idx = chunks[k].tolist()
            for s in range(0, len(idx), bs):
                batches.append(idx[s : s + bs])
                owner.append(k)
        remaining = {k: len(chunks[k]) for k in todo}
        oks: dict[int, list[NDArray[np.bool_]]] = {k: [] for k in todo}
        for b, batch in enumerate(self._loader(reader, batches)):
            if cancel is not None and cancel():
                raise AnalysisCancelled("analysis cancelled between batches")
            meta = BatchMeta(
                index=batch["index"].numpy().astype(np.int64),
                l0_xy=torch.stack([batch["l0_x"], batch["l0_y"]], 1).numpy().astype(np.int64),
                ok=batch["ok"].numpy().astype(bool),
            )
            extra = tile_inputs(meta.index) if tile_inputs is not None else None
            outputs = self.forward(
                net, spec, batch["image"], head, tile_stats=tile_stats, tile_inputs=extra
            )
            for acc in accumulators:
                acc.add(outputs, meta)
            k = owner[b]
            oks[k].append(meta.ok)
            remaining[k] -= len(meta.index)
            if remaining[k] == 0:
                yield k, np.concatenate(oks.pop(k))


def _focus(images: torch.Tensor) -> torch.Tensor:
    """Variance of the 4-neighbour Laplacian of the grey image, per tile: (B,)."""
    # grey by three adds of the uint8 channels into one float plane (same integer values as a
    # sum over the 3-wide last axis, ~1.6× cheaper, and no float copy of all three channels)
    g = images[..., 0].float().add_(images[..., 1]).add_(images[..., 2]).div_(3.0)
    lap = g[:, :-2, 1:-1] + g[:, 2:, 1:-1]
    lap += g[:, 1:-1, :-2]
    lap += g[:, 1:-1, 2:]
    lap -= 4 * g[:, 1:-1, 1:-1]
    return lap.flatten(1).var(dim=1)


def _strip(state: Mapping[str, NDArray[Any]], prefix: str) -> dict[str, NDArray[Any]]:
    return {n[len(prefix) :]: v for n, v in state.items() if n.startswith(prefix)}


def _split(order: NDArray[np.int64], size: int) -> list[NDArray[np.int64]]:
    return [order[s : s + size] for s in range(0, len(order), size)] or []


def _run_key(spec: ModelSpec, reader: TileReader, order: NDArray[np.int64]) -> str:
    """A digest of what makes a checkpoint valid: weights, grid geometry and tile order."""
    g = reader.grid
    h = hashlib.sha256()
    h.update(f"{spec.name}|{spec.sha256}|{g.target_mpp}|{g.tile_px}|{g.overlap_px}|".encode())
    h.update(np.ascontiguousarray(g.l0_xy).tobytes())
    h.update(np.ascontiguousarray(order).tobytes())
    return h.hexdigest()[:32]


class _Checkpoints:
    """Per-chunk npz files and the append-only ``chunks.log`` of one engine run."""

    def __init__(self, work_dir: Path, tag: str, key: str) -> None:
        self.dir = Path(work_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.tag = tag
        self.key = key

    def path(self, k: int) -> Path:
        return self.dir / f"{self.tag}-chunk-{k}.npz"

    def load(self, k: int, chunk: NDArray[np.int64]) -> dict[str, NDArray[Any]] | None:
        """Return the saved arrays of chunk ``k``, or None when absent, stale or unreadable."""
        path = self.path(k)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {n: z[n] for n in z.files}
        except (OSError, ValueError, EOFError):
            return None
        index = data.get("__index")
        if str(data.get("__key")) != self.key or index is None or not np.array_equal(index, chunk):
            return None
        return data

    def save(
        self,
        k: int,
        chunk: NDArray[np.int64],
        accumulators: Sequence[Accumulator],
        ok: NDArray[np.bool_],
    ) -> None:
        arrays: dict[str, NDArray[Any]] = {
            "__key": np.array(self.key),
            "__index": chunk,
            "__ok": ok,
        }
        for j, acc in enumerate(accumulators):
            for name, arr in acc.state(chunk).items():
                arrays[f"a{j}/{name}"] = np.asarray(arr)
        with atomic_write(self.path(k), "wb") as fh:
            np.savez(fh, **arrays)  # type: ignore[arg-type]
        with (self.dir / "chunks.log").open("a", encoding="ascii") as log:
            log.write(f"{self.tag} {k}\n")
            log.flush()
            os.fsync(log.fileno())
