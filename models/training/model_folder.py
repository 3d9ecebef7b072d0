"""The model folder ``atc-wsi train`` writes: weights, then a card with data and held-out metrics.

Shared by the generic loop (``models.training.finetune``) and the pattern patch recipe
(``models.training.pattern_mix``); the files themselves are written by
:func:`models.training.card.write_model_folder`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import nn

from models.registry import ModelSpec
from models.training.card import write_model_folder
from wsi.io import atomic_write_json

if TYPE_CHECKING:
    from models.training.annotated import AnnotatedSlide
    from models.training.finetune import TrainConfig


def publish_folder(
    cfg: TrainConfig,
    spec: ModelSpec,
    model: nn.Module,
    out: Path,
    training: dict[str, Any],
    train_items: Sequence[AnnotatedSlide],
    held_items: Sequence[AnnotatedSlide],
    evaluate: Callable[[str, Sequence[AnnotatedSlide]], dict[str, Any]] | None,
    *,
    sets: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Write the model folder, then the held-out metrics into its card; return the card path.

    ``sets`` joins the card's ``data`` (labelled and real sets); ``metrics`` are figures already
    computed on held-out data, to which ``evaluate``'s are added.
    """
    version = cfg.version or f"{spec.version.split('+')[0]}+ft.{_stamp()}"
    data_info = {
        "train_slides": [slide_row(i) for i in train_items],
        "heldout_slides": [slide_row(i) for i in held_items],
        **(sets or {}),
    }
    held_sets = bool((sets or {}).get("heldout_sets"))
    known = dict(metrics or {})
    card = write_model_folder(
        model,
        spec,
        out,
        name=cfg.name or (spec.base or spec.name),
        version=version,
        command=cfg.command,
        training=training,
        data=data_info,
        metrics=_finite(known)
        or ({"note": "nothing held out"} if not (held_items or held_sets) else {"pending": True}),
    )
    if (held_items or held_sets) and evaluate is not None:
        found = evaluate(str(out), held_items)
        body = json.loads(card.read_text(encoding="utf-8"))
        body["metrics"] = _finite({**known, **found}) or {"note": "nothing held out"}
        atomic_write_json(card, body)
    return card


def slide_row(item: AnnotatedSlide) -> dict[str, Any]:
    return {
        "name": item.name,
        "path": str(item.path),
        "annotations": item.ann.source,
        **item.ann.counts(),
    }


def _stamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")


def _finite(obj: Any) -> Any:
    """Replace NaN/inf by None so the card stays strict JSON."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if isinstance(obj, float | np.floating) and not np.isfinite(obj):
        return None
    return obj
