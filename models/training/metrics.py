"""Metrics used by training and evaluation: confusion matrix, macro-F1, Dice."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray


def confusion(y_true: NDArray[Any], y_pred: NDArray[Any], n_classes: int) -> NDArray[np.int64]:
    """(n_classes, n_classes) counts; rows = truth, columns = prediction."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, int), np.asarray(y_pred, int)), 1)
    return cm


def per_class_f1(cm: NDArray[np.int64]) -> NDArray[np.float64]:
    """F1 per class from a confusion matrix (NaN for classes absent from truth and prediction)."""
    tp = np.diag(cm).astype(np.float64)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    denom = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2 * tp / denom, np.nan)


def macro_f1(cm: NDArray[np.int64], present_only: bool = True) -> float:
    """Mean F1 over classes (by default over classes present in the truth)."""
    f1 = per_class_f1(cm)
    if present_only:
        f1 = f1[cm.sum(axis=1) > 0]
    return float(np.nanmean(f1)) if f1.size else float("nan")


def dice(pred: NDArray[np.bool_], truth: NDArray[np.bool_]) -> float:
    """Dice coefficient of two boolean masks (1.0 when both are empty)."""
    inter = float(np.logical_and(pred, truth).sum())
    total = float(pred.sum() + truth.sum())
    return 1.0 if total == 0 else 2 * inter / total


def recall_per_class(cm: NDArray[np.int64]) -> NDArray[np.float64]:
    """Recall (sensitivity) per class from a confusion matrix (NaN for classes absent in truth)."""
    n = cm.sum(axis=1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.diag(cm) / n, np.nan)


def balanced_accuracy(cm: NDArray[np.int64]) -> float:
    """Mean recall over the classes present in the truth."""
    r = recall_per_class(cm)
    r = r[~np.isnan(r)]
    return float(r.mean()) if r.size else float("nan")


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion k / n ((nan, nan) for n = 0)."""
    if n <= 0:
        return (float("nan"), float("nan"))
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (round(float(c - h), 4), round(float(c + h), 4))


def grouped_bootstrap(
    stat: Any,
    y_true: NDArray[np.int64],
    y_pred: NDArray[np.int64],
    groups: NDArray[Any],
    n_classes: int,
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """95 % percentile interval of ``stat(confusion)`` resampling whole groups (slides, patients).

    Items of one slide are not independent; resampling slides keeps that dependence in the
    interval. With a single group the interval is (nan, nan).
    """
    uniq, inv = np.unique(np.asarray(groups), return_inverse=True)
    if len(uniq) < 2:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(inv == g) for g in range(len(uniq))]
    vals = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(uniq), len(uniq))
        idx = np.concatenate([members[g] for g in pick])
        v = float(stat(confusion(y_true[idx], y_pred[idx], n_classes)))
        if not np.isnan(v):
            vals.append(v)
    if not vals:
        return (float("nan"), float("nan"))
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return (round(float(lo), 4), round(float(hi), 4))
