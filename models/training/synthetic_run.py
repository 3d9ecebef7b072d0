"""What the synthetic-data training scripts (``scripts/train_pattern.py``, ``train_necrosis.py``)
share: their common options, continuing from earlier weights, and publishing the result.

The lab-facing entry point is ``atc-wsi train`` (``models.training.finetune``); these scripts
made the shipped weights from the generator's patch sampler and stay reproducible as documented
in each model card's ``training_command``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.registry import ModelSpec, file_sha256, get_spec
from models.training.augment import StainAugment
from models.training.card import publish_weights, set_sha256_constant, write_model_card
from models.training.data import PatchSet, generate_patches
from models.training.loop import TrainLog, seed_everything, train_steps
from models.training.slide_tiles import concat, slide_patch_set

ROOT = Path(__file__).resolve().parents[2]


def synthetic_parser(
    doc: str | None,
    *,
    n_train: int,
    n_val: int,
    steps: int,
    batch_size: int,
    lr: float,
    kind: str,
) -> argparse.ArgumentParser:
    """Options every synthetic training script takes (defaults per script)."""
    ap = argparse.ArgumentParser(description=doc)
    ap.add_argument("--n-train", type=int, default=n_train)
    ap.add_argument("--n-val", type=int, default=n_val)
    ap.add_argument("--steps", type=int, default=steps)
    ap.add_argument("--batch-size", type=int, default=batch_size)
    ap.add_argument("--lr", type=float, default=lr)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--crop", type=int, default=None, help="train on random crops of this size")
    ap.add_argument("--kind", default=kind, help="sample_patches kind")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2, help="processes generating patches")
    ap.add_argument("--time-budget-s", type=float, default=1500.0)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/atc-train"))
    ap.add_argument("--out", type=Path, default=None, help="weights path (default: registry's)")
    ap.add_argument("--no-pin", action="store_true", help="do not rewrite the registry sha256")
    ap.add_argument("--init", type=Path, default=None, help="continue from these weights")
    ap.add_argument(
        "--slides",
        type=Path,
        nargs="*",
        default=[],
        help="generated training-slide folders whose pyramid tiles join the patches",
    )
    ap.add_argument("--slide-repeat", type=int, default=3, help="oversampling of slide tiles")
    return ap


def continue_from(model: nn.Module, init: Path | None) -> dict[str, Any]:
    """Load ``init`` into ``model`` (when given); return the card's ``continued_from`` record
    (the earlier run's command and training block, from the card beside the weights)."""
    if init is None:
        return {}
    model.load_state_dict(torch.load(init, map_location="cpu", weights_only=True))
    card_path = init.with_suffix(".json")
    prev = json.loads(card_path.read_text()) if card_path.is_file() else {}
    return {
        "from": str(init),
        "sha256": file_sha256(init),
        "previous_command": prev.get("training_command"),
        "previous_training": prev.get("training"),
    }


def publish_run(
    model: nn.Module,
    spec: ModelSpec,
    args: argparse.Namespace,
    argv: list[str] | None,
    *,
    script: str,
    seeds: dict[str, Any],
    training: dict[str, Any],
    metrics: dict[str, Any],
    pin: tuple[str, str],
    log: TrainLog,
) -> str:
    """Save the weights (``--out`` or the registry's path), write the model card beside them,
    pin the sha256 in the zoo module ``pin = (file under models/zoo, CONSTANT)`` unless
    ``--no-pin`` or ``--out``; return the sha256."""
    out = args.out or spec.weights_path
    sha = publish_weights(model, out)
    write_model_card(
        spec,
        sha,
        command=f"nice -n 10 .venv/bin/python scripts/{script} "
        + " ".join(sys.argv[1:] if argv is None else argv),
        seeds=seeds,
        training=training,
        metrics=metrics,
        path=out.with_suffix(".json"),
    )
    if not args.no_pin and args.out is None:
        set_sha256_constant(ROOT / "models" / "zoo" / pin[0], pin[1], sha)
    log(event="done", sha256=sha, **{k: v for k, v in metrics.items() if k != "val_confusion"})
    return sha


@dataclass
class Run:
    """One synthetic training run: its options, model spec, generator, log and start time."""

    args: argparse.Namespace
    spec: ModelSpec
    gen: torch.Generator
    log: TrainLog
    t0: float


def start_run(args: argparse.Namespace, model_name: str, log_name: str) -> Run:
    """Set the thread count, seed everything and open the JSON-lines log under ``--cache``."""
    torch.set_num_threads(args.threads)
    spec = get_spec(model_name)
    gen = seed_everything(args.seed)
    return Run(args, spec, gen, TrainLog(args.cache / log_name), time.perf_counter())


def patch_sets(
    run: Run, size: int, train_seed: int, val_seed: int
) -> tuple[PatchSet, PatchSet, PatchSet | None]:
    """(training patches, validation patches, tiles of the ``--slides`` folders or None), all
    ``size`` px at the model's µm/px (slide tiles half-overlapping)."""
    a, mpp = run.args, run.spec.input_mpp
    train = generate_patches(
        a.kind, a.n_train, size, mpp, train_seed, cache_dir=a.cache, workers=a.workers
    )
    val = generate_patches(
        a.kind, a.n_val, size, mpp, val_seed, cache_dir=a.cache, workers=a.workers
    )
    tiles = [slide_patch_set(f, mpp=mpp, size=size, stride=size // 2) for f in a.slides]
    return train, val, concat(*tiles) if tiles else None


def fit(
    run: Run,
    model: nn.Module,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    on_eval: Callable[[int], dict[str, float]],
    eval_every: int,
) -> dict[str, Any]:
    """``train_steps`` with the run's steps, learning rate, time budget and log."""
    a = run.args
    return train_steps(
        model,
        batches,
        loss_fn,
        steps=a.steps,
        lr=a.lr,
        log=run.log,
        time_budget_s=a.time_budget_s,
        on_eval=on_eval,
        eval_every=eval_every,
    )


def training_record(
    run: Run,
    result: dict[str, Any],
    *,
    data_seconds: float,
    patches: int,
    aug: StainAugment,
    init: dict[str, Any],
    **extra: Any,
) -> dict[str, Any]:
    """The card's ``training`` block: loop result, data, batch, learning rate, augmentation."""
    a = run.args
    return {
        **result,
        "data_seconds": round(data_seconds, 1),
        "patches": patches,
        "batch_size": a.batch_size,
        "lr": a.lr,
        "augmentation": vars(aug),
        "threads": a.threads,
        "total_seconds": round(time.perf_counter() - run.t0, 1),
        "continued_from": init or None,
        **extra,
    }
