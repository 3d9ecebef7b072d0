"""``atc-wsi train``: fine-tune (or train from scratch) a model on a lab's annotated slides.

One loop for every task (``models.training.loop.train_steps``), one data layer
(``models.training.annotated``), one card writer (``models.training.card.write_model_folder``).
Checkpoints every ``checkpoint_every`` steps; ``resume`` continues from the last one and replays
the seeded data stream to that step, so a resumed run ends with the same weights as an
uninterrupted one on the same device.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.cells.heat_net import MacrophageDetector
from models.cells.mitosis_net import MitosisTileDetector
from models.errors import InvalidSettingsError
from models.registry import ModelSpec, create_model, get_spec
from models.training.annotated import (
    AnnotatedSlide,
    pattern_tiles,
    segmentation_tiles,
)
from models.training.annotated_cells import (
    HeatTiles,
    PointCrops,
    crop_stream,
    heat_stream,
    mitosis_crops,
    tam_tiles,
)
from models.training.augment import StainAugment
from models.training.data import PatchSet, batch_stream
from models.training.heat_cells import HeatLogits, focal_loss
from models.training.loop import TrainLog, seed_everything, train_steps
from wsi.annotations import UNANNOTATED
from wsi.io import atomic_write

CHECKPOINT_FILE = "checkpoint.pt"
Batch = tuple[torch.Tensor, torch.Tensor]
StreamFn = Callable[["TrainConfig", ModelSpec, Any, torch.Generator], Iterator[Batch]]


@dataclass(frozen=True)
class TrainConfig:
    """What one training run does.

    Attributes:
        task: ``pattern``, ``necrosis``, ``mitosis`` or ``tam`` (see :data:`TASKS`).
        base: reference of the starting model (name, name@version or folder).
        from_scratch: random initialisation with the base's architecture.
        steps: optimiser steps.
        seed: seeds data order, augmentation and initialisation.
        device: ``auto``, ``cpu`` or ``cuda``.
        batch_size: tiles per step.
        lr: peak learning rate (fine-tuning wants a small one).
        checkpoint_every: steps between checkpoints (0 = only at the end).
        name: registry name of the new version (default: the base's).
        version: its version (default: ``<base version>+ft.<UTC timestamp>``).
        command: the command line, for the card.
    """

    task: str
    base: str
    from_scratch: bool = False
    steps: int = 200
    seed: int = 0
    device: str = "auto"
    batch_size: int = 16
    lr: float = 3e-4
    checkpoint_every: int = 50
    name: str | None = None
    version: str | None = None
    command: str = ""

    def identity(self) -> dict[str, Any]:
        """The fields a checkpoint must agree with to be resumed."""
        return {k: getattr(self, k) for k in ("task", "base", "from_scratch", "seed", "batch_size")}


def default_base(task: str) -> str:
    """Shipped model a task fine-tunes by default (the configured one of its analysis)."""
    from models.settings import PipelineSettings

    if task not in TASKS:
        raise InvalidSettingsError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    return str(getattr(PipelineSettings(), TASKS[task].analysis).model)


def _pattern_data(
    cfg: TrainConfig,
    spec: ModelSpec,
    items: Sequence[AnnotatedSlide],
    model: nn.Module,
    extra: Any,
) -> PatchSet:
    return pattern_tiles(items, spec, seed=cfg.seed)[0]


def _necrosis_data(
    cfg: TrainConfig,
    spec: ModelSpec,
    items: Sequence[AnnotatedSlide],
    model: nn.Module,
    extra: Any,
) -> PatchSet:
    return segmentation_tiles(items, spec, "necrosis", seed=cfg.seed)[0]


def _mitosis_data(
    cfg: TrainConfig,
    spec: ModelSpec,
    items: Sequence[AnnotatedSlide],
    model: nn.Module,
    extra: Any,
) -> PointCrops:
    """Crops of the annotated slides' points and, when given, labelled crops (``extra``)."""
    assert isinstance(model, MitosisTileDetector), "the mitosis task trains a tile detector"
    parts = [mitosis_crops(items, spec, model, seed=cfg.seed)] if items else []
    if extra is not None:
        parts.append(PointCrops(extra.images, extra.labels, extra.groups))
    if not parts:
        raise InvalidSettingsError("no mitosis training data: give --slides or --crops/--real")
    return PointCrops(
        np.concatenate([p.images for p in parts]),
        np.concatenate([p.labels for p in parts]),
        np.concatenate([p.slides for p in parts]),
    )


def _patch_stream(target: str) -> StreamFn:
    def stream(
        cfg: TrainConfig, spec: ModelSpec, data: Any, gen: torch.Generator
    ) -> Iterator[Batch]:
        bs = min(cfg.batch_size, len(data))
        aug = StainAugment()
        return batch_stream(data, bs, gen, mean=spec.mean, std=spec.std, aug=aug, target=target)

    return stream


def _crop_stream(
    cfg: TrainConfig, spec: ModelSpec, data: Any, gen: torch.Generator
) -> Iterator[Batch]:
    return crop_stream(data, cfg.batch_size, gen, spec)


class FrozenNorm(nn.Module):
    """Train ``module`` with its batch-norm layers in eval mode (statistics kept).

    Fine-tuning on a few slides with class-balanced batches would otherwise replace the running
    statistics the shipped model learnt on far more data, and shift every prediction.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def train(self, mode: bool = True) -> FrozenNorm:
        super().train(mode)
        for m in self.module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.module(x)
        return out


def _tam_data(
    cfg: TrainConfig,
    spec: ModelSpec,
    items: Sequence[AnnotatedSlide],
    model: nn.Module,
    extra: Any,
) -> HeatTiles:
    """Tiles of the annotated slides and, when given, real cell tiles (``extra``; slide tiles
    are then cut to the cell tiles' size: the detector is fully convolutional)."""
    from models.training.cell_sources import quarters

    if extra is None:
        return tam_tiles(items, spec, seed=cfg.seed)
    if not items:
        return extra  # type: ignore[no-any-return]
    slide = quarters(tam_tiles(items, spec, seed=cfg.seed), extra.images.shape[1])
    return HeatTiles(
        np.concatenate([slide.images, extra.images]),
        np.concatenate([slide.targets, extra.targets]),
    )


def _heat_stream(
    cfg: TrainConfig, spec: ModelSpec, data: Any, gen: torch.Generator
) -> Iterator[Batch]:
    return heat_stream(data, min(cfg.batch_size, len(data)), gen, spec)


def _heat_logits(model: nn.Module) -> nn.Module:
    """The macrophage detector's heat-map logits (what the focal loss fits)."""
    assert isinstance(model, MacrophageDetector), "the tam task trains the H&E heat-map detector"
    return HeatLogits(model)


def _classifier(model: nn.Module) -> nn.Module:
    """The part of the mitosis detector that learns (the candidate stage is fixed)."""
    assert isinstance(model, MitosisTileDetector)
    return model.classifier


@dataclass(frozen=True)
class TaskDef:
    """How one task trains: its data, batches, loss and the module whose weights change.

    Attributes:
        analysis: the config section whose ``model`` this task trains (``pattern.model`` …).
        data: (config, base spec, training slides, model, extra crops) → a sized data set.
        stream: (config, spec, data, generator) → endless (inputs, targets) batches.
        loss: (outputs, targets) → scalar loss.
        trained: the module optimised (the whole model, or the mitosis crop classifier).
    """

    analysis: str
    data: Callable[[TrainConfig, ModelSpec, Sequence[AnnotatedSlide], nn.Module, Any], Any]
    stream: StreamFn
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    trained: Callable[[nn.Module], nn.Module] = lambda m: m


#: Tasks ``atc-wsi train`` knows.
TASKS: dict[str, TaskDef] = {
    "pattern": TaskDef("pattern", _pattern_data, _patch_stream("label"), nn.CrossEntropyLoss()),
    "necrosis": TaskDef(
        "necrosis",
        _necrosis_data,
        _patch_stream("mask"),
        nn.CrossEntropyLoss(ignore_index=UNANNOTATED),
    ),
    "mitosis": TaskDef("mitosis", _mitosis_data, _crop_stream, nn.CrossEntropyLoss(), _classifier),
    "tam": TaskDef("tam", _tam_data, _heat_stream, focal_loss, _heat_logits),
}


def _save_checkpoint(
    out: Path, cfg: TrainConfig, step: int, model: nn.Module, opt: torch.optim.Optimizer
) -> None:
    state = {
        "identity": cfg.identity(),
        "step": step,
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
    }
    with atomic_write(out / CHECKPOINT_FILE, "wb") as fh:
        torch.save(state, fh)


def _load_checkpoint(out: Path, cfg: TrainConfig) -> dict[str, Any] | None:
    path = out / CHECKPOINT_FILE
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("identity") != cfg.identity():
        raise InvalidSettingsError(
            f"{path} was written by another run ({state.get('identity')}); resume with the same "
            "task, base, seed and batch size, or use a new --out"
        )
    return dict(state)


def train(
    cfg: TrainConfig,
    train_items: Sequence[AnnotatedSlide],
    held_items: Sequence[AnnotatedSlide],
    out: Path,
    *,
    resume: bool = False,
    evaluate: Callable[[str, Sequence[AnnotatedSlide]], dict[str, Any]] | None = None,
    extra: Any = None,
    sets: dict[str, Any] | None = None,
) -> Path:
    """Train, write the model folder ``out`` and return its card path.

    Args:
        cfg: the run.
        train_items: slides trained on.
        held_items: held-out slides (never trained on); metrics are computed on these only.
        out: the model folder (also holds the checkpoint and the JSON-lines log).
        resume: continue from ``out/checkpoint.pt`` when present.
        evaluate: ``(model folder, held-out slides) -> metrics``; None = no metrics. It is also
            called without held-out slides when ``sets`` names held-out sets (crops); an empty
            result means nothing was held out.
        extra: labelled crops (mitosis, ``mitosis_data.Crops``) or real cell tiles (tam,
            ``HeatTiles``) trained beside the slides' data.
        sets: the labelled and real sets trained on and held out, for the card's ``data``.

    Raises:
        InvalidSettingsError: unknown task, or a checkpoint of another run.
        AnnotationError: no usable annotated tile.
    """
    from models.device import resolve_device

    spec = check_run(cfg, train_items, held_items)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device, "fp32")
    gen = seed_everything(cfg.seed)
    task = TASKS[cfg.task]
    model = create_model(cfg.base, pretrained=not cfg.from_scratch)
    data = task.data(cfg, spec, train_items, model, extra)
    log = TrainLog(out / "train.log.jsonl")
    log(event="data", task=cfg.task, samples=len(data), slides=[i.name for i in train_items])
    stream = task.stream(cfg, spec, data, gen)
    model.to(device.device)
    trained = task.trained(model) if cfg.from_scratch else FrozenNorm(task.trained(model))
    opt = torch.optim.AdamW(trained.parameters(), lr=cfg.lr, weight_decay=1e-4)
    start = 0
    state = _load_checkpoint(out, cfg) if resume else None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start = int(state["step"])
        for _ in range(start):  # replay the seeded stream to where the checkpoint was taken
            next(stream)
        log(event="resumed", step=start)

    def on_step(step: int, o: torch.optim.Optimizer) -> None:
        if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or step == cfg.steps:
            _save_checkpoint(out, cfg, step, model, o)

    result = train_steps(
        trained,
        stream,
        task.loss,
        steps=cfg.steps,
        lr=cfg.lr,
        log=log,
        log_every=max(1, min(25, cfg.steps // 10)),
        warmup=min(50, max(1, cfg.steps // 10)),
        device=device.device,
        optimizer=opt,
        start_step=start,
        on_step=on_step,
    )
    model.to("cpu").eval()
    training = {**result, **dataclasses.asdict(cfg), "samples": len(data), "resumed_at": start}
    training.pop("command")
    from models.training.model_folder import publish_folder

    return publish_folder(
        cfg, spec, model, out, training, train_items, held_items, evaluate, sets=sets
    )


def check_run(
    cfg: TrainConfig, train_items: Sequence[AnnotatedSlide], held_items: Sequence[AnnotatedSlide]
) -> ModelSpec:
    """Refuse an unknown task, a slide both trained on and held out, a base of another task."""
    if cfg.task not in TASKS:
        raise InvalidSettingsError(f"unknown task {cfg.task!r}; known: {', '.join(TASKS)}")
    overlap = {i.name for i in train_items} & {i.name for i in held_items}
    if overlap:
        raise InvalidSettingsError(f"slides both trained on and held out: {sorted(overlap)}")
    spec = get_spec(cfg.base)
    wanted = get_spec(default_base(cfg.task)).base or default_base(cfg.task)
    if (spec.base or spec.name) != wanted:
        raise InvalidSettingsError(
            f"--base {cfg.base} is a {spec.base or spec.name} model; task {cfg.task} trains "
            f"{wanted} or a version of it"
        )
    return spec
