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


def _set_option(flag: str, task: str) -> Any:
    """A repeatable option naming labelled sets (class folders or a CSV) of ``task``."""
    return typer.Option([], flag, help=f"{task}: class folders or file,label[,slide] CSV (repeat)")


def _mpp_option(flag: str, sets: str) -> Any:
    """The µm/px option of the sets option ``sets``."""
    return typer.Option([], flag, help=f"µm/px of the {sets} images (one for all, or one per set)")


def train(
    task: str = typer.Argument(..., help="pattern | necrosis | mitosis | tam"),
    slides: list[Path] = typer.Option([], "--slides", help="slide file or folder (repeatable)"),
    annotations: list[Path] = typer.Option(
        [], "--annotations", help="GeoJSON/CSV file or folder, one file per slide (repeatable)"
    ),
    patches: list[Path] = _set_option("--patches", "pattern"),
    patch_mpp: list[float] = _mpp_option("--patch-mpp", "--patches"),
    crops: list[Path] = _set_option("--crops", "mitosis"),
    crop_mpp: list[float] = _mpp_option("--crop-mpp", "--crops"),
    real: list[str] = typer.Option(
        [],
        "--real",
        help="the project's real sets: pattern tissue; mitosis mitosis, nuclei; tam cells",
    ),
    label_map: Path | None = typer.Option(
        None, "--label-map", help="JSON/YAML/CSV: your patch/crop label → class"
    ),
    holdout_fold: int | None = typer.Option(
        None, "--holdout-fold", min=0, max=1, help="hold out fold k of the patch/crop groups"
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
    synthetic: int | None = typer.Option(
        None, "--synthetic", min=0, help="pattern patches: synthetic sampler patches (default 3000)"
    ),
    synthetic_val: int | None = typer.Option(
        None,
        "--synthetic-val",
        min=0,
        help="pattern patches: their validation patches (default 480)",
    ),
    generated_slides: list[Path] = typer.Option(
        [], "--generated-slides", help="pattern patches: generator slide folders mixed in"
    ),
    slide_repeat: int | None = typer.Option(
        None, "--slide-repeat", min=1, help="pattern patches: oversampling of those (default 2)"
    ),
    views_real: int | None = typer.Option(
        None, "--views-real", min=1, help="pattern patches: cached views per patch tile (default 6)"
    ),
    views_synthetic: int | None = typer.Option(
        None, "--views-synthetic", min=1, help="pattern patches: views per uniform tile (default 2)"
    ),
    real_weight: float | None = typer.Option(
        None, "--real-weight", help="pattern patches: loss weight of the patch batch (default 1)"
    ),
    non_tumour_share: float | None = typer.Option(
        None, "--non-tumour-share", help="pattern patches: non-tumour share of its sampling"
    ),
    frozen: int | None = typer.Option(
        None, "--frozen", min=1, help="pattern patches: trunk stages frozen and cached (default 3)"
    ),
    cache: Path | None = typer.Option(
        None, "--cache", help="pattern patches: synthetic patch cache (default /tmp/atc-train)"
    ),
) -> None:
    """Fine-tune on annotated slides; write a versioned model folder with held-out metrics."""
    with handle_errors():
        from models.training.annotated import load_annotated, split_holdout
        from models.training.finetune import TASKS, TrainConfig, default_base
        from models.training.patch_sources import LabelledSets
        from workers.cli_analyze import load_pipeline_settings

        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; `atc-wsi train` trains {', '.join(TASKS)}")
        if from_scratch and base is not None:
            raise ValueError("give --base or --from-scratch, not both")
        sets = LabelledSets(patches, patch_mpp, crops, crop_mpp, real, label_map, holdout_fold)
        sets.check(task)
        options = {
            "synthetic": synthetic,
            "synthetic_val": synthetic_val,
            "generated_slides": tuple(generated_slides) or None,
            "slide_repeat": slide_repeat,
            "views_real": views_real,
            "views_synthetic": views_synthetic,
            "real_weight": real_weight,
            "non_tumour_share": non_tumour_share,
            "frozen": frozen,
            "cache": cache,
        }
        recipe = _recipe(task, sets.given, resume, options)
        if not slides and not sets.given:
            raise ValueError("nothing to train on: give --slides/--annotations, or labelled sets")
        if bool(slides) != bool(annotations):
            raise ValueError("--slides and --annotations go together")
        items = (
            load_annotated(slides, annotations, class_map, fully_annotated, mpp) if slides else []
        )
        names = split_names(holdout)
        # with labelled sets, a held-out name that is no slide names a group of the sets
        slide_names = {i.name for i in items} if sets.given else set(names)
        groups = [n for n in names if n not in slide_names]
        held_slides = [n for n in names if n in slide_names]
        train_items, held = split_holdout(items, held_slides) if items else ([], [])
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

        card = _run(cfg, sets, recipe, groups, train_items, held, out, resume, settings)
    typer.echo(f"model folder {out} (card {card})")


def _recipe(task: str, given_sets: bool, resume: bool, options: dict[str, Any]) -> Any:
    """The pattern patch recipe from the options given (None for other tasks and data).

    Raises:
        ValueError: a recipe option given where the recipe does not run, or ``--resume`` with it.
    """
    from models.training.pattern_mix import MixRecipe

    given = {k: v for k, v in options.items() if v is not None}
    patch_recipe = given_sets and task == "pattern"
    if given and not patch_recipe:
        names = ", ".join("--" + k.replace("_", "-") for k in given)
        raise ValueError(f"{names}: options of pattern training on --patches/--real only")
    if patch_recipe and resume:
        raise ValueError("--resume: pattern training on patches keeps no checkpoint")
    return MixRecipe(**given) if patch_recipe else None


def _run(
    cfg: Any,
    sets: Any,
    recipe: Any,
    groups: list[str],
    train_items: Sequence[AnnotatedSlide],
    held: Sequence[AnnotatedSlide],
    out: Path,
    resume: bool,
    settings: Any,
) -> Path:
    """Train by the path the data choose; held-out figures by ``atc-wsi evaluate``'s code."""
    from models.training.cell_sources import cell_figures
    from models.training.finetune import train as run_training
    from models.training.patch_sources import crop_figures
    from models.training.pattern_mix import train_pattern_patches
    from models.training.slide_eval import evaluate_slides, with_models

    task = cfg.task

    def evaluate(folder: str, items_held: Sequence[AnnotatedSlide]) -> dict[str, Any]:
        if not items_held:
            return {}
        run = with_models(settings, {task: folder})
        return evaluate_slides(items_held, run, [task])

    if recipe is not None:
        tiles, held_tiles, rows = sets.tissue(cfg.base, groups)
        return train_pattern_patches(
            cfg, recipe, tiles, held_tiles, rows, out,
            train_items=train_items, held_items=held, evaluate=evaluate,
        )  # fmt: skip
    extra, held_sets, data = sets.cells(groups) if task == "tam" else sets.mitosis(groups)

    def evaluate_all(folder: str, items_held: Sequence[AnnotatedSlide]) -> dict[str, Any]:
        found = evaluate(folder, items_held)
        if held_sets is not None and task == "tam":
            found["heldout_cells"] = cell_figures(folder, held_sets)
        elif held_sets is not None:
            threshold = settings.mitosis.min_score
            found["heldout_crops"] = crop_figures(folder, held_sets, threshold)
        return found

    return run_training(
        cfg, train_items, held, out, resume=resume, evaluate=evaluate_all,
        extra=extra, sets=data,
    )  # fmt: skip
