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
