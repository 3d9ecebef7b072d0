"""Evaluate a classifier on a labelled set of crops or patches: one core for every task.

``atc-wsi evaluate`` (mitosis crops, tissue patches) and the real-data validation in training all
call :func:`evaluate_set`: read the set (:mod:`models.training.labelled`), map its labels to the
task's truth classes, run the task's predictor in batches, and score. The scores a lab needs
before trusting a model on its own material: balanced accuracy, per-class recall with 95 % Wilson
intervals, macro-F1, the confusion matrix, and intervals resampled by slide where the set names
its slides.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from models.training.labelled import LabelledImages, load_rgb, map_labels
from models.training.metrics import (
    balanced_accuracy,
    confusion,
    grouped_bootstrap,
    macro_f1,
    per_class_f1,
    recall_per_class,
    wilson_interval,
)

#: (N, H, W, 3) uint8 images at the set's own µm/px → (N, K) class scores over ``pred_classes``.
Predictor = Callable[[list[NDArray[np.uint8]]], NDArray[np.float32]]


@dataclass(frozen=True)
class EvalTask:
    """What a task predicts and how its truth labels read.

    Attributes:
        name: task name (``mitosis``, ``tissue``).
        classes: truth classes (a set's labels map onto these).
        synonyms: raw label (lower case) → truth class.
        to_truth: maps the (N, K) predictor scores to (N,) predicted truth-class indices.
        extras: adds task metrics from (scores, truth indices) to the report.
    """

    name: str
    classes: tuple[str, ...]
    synonyms: Mapping[str, str]
    to_truth: Callable[[NDArray[np.float32]], NDArray[np.int64]]
    extras: Callable[[NDArray[np.float32], NDArray[np.int64]], dict[str, Any]] = field(
        default=lambda s, y: {}
    )


def classification_metrics(
    y_true: NDArray[np.int64],
    y_pred: NDArray[np.int64],
    classes: Sequence[str],
    groups: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Balanced accuracy, macro-F1, per-class recall (Wilson 95 %), confusion (rows = truth).

    Intervals of the balanced accuracy and macro-F1 resample whole groups (slides) when more than
    one group is given.
    """
    k = len(classes)
    cm = confusion(y_true, y_pred, k)
    rec = recall_per_class(cm)
    f1 = per_class_f1(cm)
    present = [i for i in range(k) if cm[i].sum() > 0]
    out: dict[str, Any] = {
        "n": int(cm.sum()),
        "balanced_accuracy": round(balanced_accuracy(cm), 4),
        "macro_f1": round(macro_f1(cm), 4),
        "accuracy": round(float(np.trace(cm) / max(cm.sum(), 1)), 4),
        "per_class": {
            classes[i]: {
                "n": int(cm[i].sum()),
                "recall": round(float(rec[i]), 4),
                "recall_ci95": list(wilson_interval(int(cm[i, i]), int(cm[i].sum()))),
                "f1": round(float(f1[i]), 4),
            }
            for i in present
        },
        "confusion": {"classes": list(classes), "rows_truth_cols_prediction": cm.tolist()},
    }
    if groups is not None:
        g = np.asarray(groups)
        out["n_groups"] = len(set(groups))
        out["balanced_accuracy_ci95"] = list(
            grouped_bootstrap(balanced_accuracy, y_true, y_pred, g, k)
        )
        out["macro_f1_ci95"] = list(grouped_bootstrap(macro_f1, y_true, y_pred, g, k))
    return out


def predict_set(
    data: LabelledImages, predictor: Predictor, *, scale: float = 1.0, batch: int = 64
) -> NDArray[np.float32]:
    """Run ``predictor`` over every image of ``data`` (resized by ``scale``) in batches."""
    outs = []
    for s in range(0, len(data), batch):
        imgs = [load_rgb(f, scale=scale) for f in data.files[s : s + batch]]
        outs.append(np.asarray(predictor(imgs), dtype=np.float32))
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


def evaluate_set(
    data: LabelledImages,
    task: EvalTask,
    predictor: Predictor,
    *,
    scale: float = 1.0,
    label_map: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Score ``predictor`` on a labelled set for ``task``.

    Args:
        data: the labelled images.
        task: truth classes, label synonyms and the task's own extra metrics.
        predictor: the model, wrapped to take RGB images and return class scores.
        scale: resize factor bringing the set's µm/px to the model's (set mpp / model mpp).
        label_map: the user's raw-label → class map (before the task's synonyms).

    Raises:
        LabelError: unreadable set or unknown labels (checked before any image is run).
    """
    y = map_labels(data.labels, task.classes, task.synonyms, label_map)
    scores = predict_set(data, predictor, scale=scale)
    return {
        "task": task.name,
        "source": str(data.source),
        **score_set(scores, y, data.groups, task),
    }


def score_set(
    scores: NDArray[np.float32], y: NDArray[np.int64], groups: Sequence[str], task: EvalTask
) -> dict[str, Any]:
    """The task's figures from predictor ``scores`` and truth indices ``y`` (groups: slides)."""
    report = classification_metrics(y, task.to_truth(scores), task.classes, list(groups))
    report.update(task.extras(scores, y))
    return report
