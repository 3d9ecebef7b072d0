"""``atc-wsi train``: fine-tune a shipped model on a lab's annotated slides (docs/training.md).

    atc-wsi train pattern --slides S1.svs --slides S2.svs --slides S3.svs \\
        --annotations annotations/ --holdout S3 --out models/atc-pattern-v1/1.1.0+lab.1

Writes a versioned model folder (weights.pt, card.json with data, metrics on the held-out slides,
base model, code version, sha256) that ``--models pattern=FOLDER``, ``pattern.model: FOLDER`` or
``name@version`` (with the folder under ``$ATC_MODELS_DIR``) selects.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from workers.cli_common import handle_errors

if TYPE_CHECKING:
    from models.training.annotated import AnnotatedSlide


def register(app: typer.Typer) -> None:
    """Add the ``train`` command to ``app``."""
    app.command("train")(train)


def split_names(values: list[str]) -> list[str]:
    """Names from repeated and comma-separated option values."""
    return [n.strip() for v in values for n in v.split(",") if n.strip()]


def train(
    task: str = typer.Argument(..., help="pattern | necrosis | mitosis | tam"),
    slides: list[Path] = typer.Option(..., "--slides", help="slide file or folder (repeatable)"),
    annotations: list[Path] = typer.Option(
        ..., "--annotations", help="GeoJSON/CSV file or folder, one file per slide (repeatable)"
    ),
    out: Path = typer.Option(..., "--out", help="model folder to write (weights.pt, card.json)"),
    base: str | None = typer.Option(
        None, "--base", help="start from NAME, NAME@VERSION or a model folder (default: shipped)"
    ),
    from_scratch: bool = typer.Option(
        False, "--from-scratch", help="random initialisation (the base's architecture)"
    ),
    steps: int = typer.Option(200, "--steps", min=1, help="optimiser steps"),
    seed: int = typer.Option(0, "--seed", help="seed of data order, augmentation, init"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    resume: bool = typer.Option(False, "--resume", help="continue from OUT/checkpoint.pt"),
    holdout: list[str] = typer.Option(
        [], "--holdout", help="slide names held out for the card's metrics (repeatable, a,b)"
    ),
    class_map: Path | None = typer.Option(
        None, "--class-map", help="YAML/JSON {your name: class} or CSV name,class"
    ),
    fully_annotated: bool = typer.Option(
        False, "--fully-annotated", help="every annotation file covers its whole slide"
    ),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="tiles per step"),
    lr: float = typer.Option(3e-4, "--lr", help="peak learning rate"),
    checkpoint_every: int = typer.Option(50, "--checkpoint-every", min=0, help="steps"),
    name: str | None = typer.Option(None, "--name", help="registry name (default: the base's)"),
    version: str | None = typer.Option(
        None, "--version", help="version (default: <base version>+ft.<UTC time>)"
    ),
    mpp: float | None = typer.Option(None, "--mpp", help="µm/px of slides that state none"),
    config: Path | None = typer.Option(None, "--config", help="YAML config (held-out analysis)"),
) -> None:
    """Fine-tune on annotated slides; write a versioned model folder with held-out metrics."""
    with handle_errors():
        from models.training.annotated import load_annotated, split_holdout
        from models.training.finetune import TASKS, TrainConfig, default_base
        from models.training.finetune import train as run_training
        from models.training.slide_eval import evaluate_slides, with_models
        from workers.cli_analyze import load_pipeline_settings

        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; `atc-wsi train` trains {', '.join(TASKS)}")
        if from_scratch and base is not None:
            raise ValueError("give --base or --from-scratch, not both")
        items = load_annotated(slides, annotations, class_map, fully_annotated, mpp)
        train_items, held = split_holdout(items, split_names(holdout))
        cfg = TrainConfig(
            task=task,
            base=base or default_base(task),
            from_scratch=from_scratch,
            steps=steps,
            seed=seed,
            device=device,
            batch_size=batch_size,
            lr=lr,
            checkpoint_every=checkpoint_every,
            name=name,
            version=version,
            command=shlex.join(["atc-wsi", *sys.argv[1:]]),
        )
        settings = load_pipeline_settings(config, {"engine": {"device": device}})

        def evaluate(folder: str, items_held: Sequence[AnnotatedSlide]) -> dict[str, Any]:
            run = with_models(settings, {task: folder})
            return evaluate_slides(items_held, run, [task])

        card = run_training(cfg, train_items, held, out, resume=resume, evaluate=evaluate)
    typer.echo(f"model folder {out} (card {card})")
