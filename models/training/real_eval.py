"""Figures of the pattern classifier on real tissue tiles, per source, with intervals.

- tumour vs non-tumour: a tile is called tumour when its top class is a tumour pattern or
  necrosis; truth is tumour for the three pattern proxies, necrotic and viable osteosarcoma and
  papillary carcinoma; glass tiles (label 0) are left out.
- pattern macro-F1: tiles whose truth is spindle, pleomorphic or squamoid; the top class over all
  six classes must be right (a squamous carcinoma tile called non-tumour is an error).
- necrosis: share of necrotic tiles whose top class is necrosis, and of viable or non-tumour
  tiles whose top class is necrosis.

Intervals: Wilson 95% for proportions (tiles of one image are not independent: the tile ``n`` is
given beside the image and group counts), and a bootstrap over images for macro-F1.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from models.training.data import predict
from models.training.metrics import confusion, per_class_f1
from models.training.real_tissue import TUMOUR_ANY, RealTiles
from wsi.synthetic.classes import PATTERN_CLASSES, TUMOUR_PATTERNS, pattern_index

_TUMOUR_CALL = tuple(pattern_index(c) for c in (*TUMOUR_PATTERNS, "necrosis"))
_PATTERNS = tuple(pattern_index(c) for c in TUMOUR_PATTERNS)
NECROSIS = pattern_index("necrosis")


def predict_tiles(
    model: torch.nn.Module,
    tiles: RealTiles,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
) -> NDArray[np.float32]:
    """Softmax outputs (n, C) for tiles of mixed sizes (one pass per size, no augmentation)."""
    out = np.full((len(tiles), len(PATTERN_CLASSES)), np.nan, dtype=np.float32)
    shapes = [t.shape for t in tiles.images]
    for shape in sorted(set(shapes)):
        idx = [i for i, s in enumerate(shapes) if s == shape]
        out[idx] = predict(model, np.stack([tiles.images[i] for i in idx]), mean, std)
    return out


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float] | None:
    """Wilson score interval of k successes in n trials (None when n is 0)."""
    if n == 0:
        return None
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (round(max(0.0, c - h), 3), round(min(1.0, c + h), 3))


def _share(hit: NDArray[np.bool_]) -> dict[str, Any]:
    k, n = int(hit.sum()), int(hit.size)
    return {"k": k, "n": n, "value": round(k / n, 3) if n else None, "wilson95": wilson(k, n)}


def pattern_f1(truth: NDArray[np.int64], pred: NDArray[np.int64]) -> float:
    """Macro-F1 over spindle, pleomorphic and squamoid (present in the truth) of 6-class calls."""
    cm = confusion(truth, pred, len(PATTERN_CLASSES))
    f1 = per_class_f1(cm)[list(_PATTERNS)]
    present = cm.sum(axis=1)[list(_PATTERNS)] > 0
    return float(np.nanmean(np.where(np.isnan(f1), 0.0, f1)[present])) if present.any() else 0.0


def _bootstrap_f1(
    truth: NDArray[np.int64], pred: NDArray[np.int64], ids: NDArray[np.int64], n_boot: int = 1000
) -> tuple[float, float] | None:
    uniq = np.unique(ids)
    if len(uniq) < 2:
        return None
    rng = np.random.default_rng(0)
    rows = {u: np.flatnonzero(ids == u) for u in uniq.tolist()}
    vals = []
    for _ in range(n_boot):
        pick = np.concatenate([rows[u] for u in rng.choice(uniq, len(uniq)).tolist()])
        vals.append(pattern_f1(truth[pick], pred[pick]))
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return (round(float(lo), 3), round(float(hi), 3))


def tissue_figures(probs: NDArray[np.float32], tiles: RealTiles) -> dict[str, Any]:
    """Tumour-vs-non-tumour, pattern and necrosis figures, overall and per source."""
    pred = probs.argmax(axis=1)
    out: dict[str, Any] = {}
    for name in ["all", *sorted(set(tiles.sources.tolist()))]:
        sel = np.ones(len(tiles), bool) if name == "all" else tiles.sources == name
        y, p = tiles.labels[sel], pred[sel]
        tissue = y != 0
        truth_t = np.isin(y, (*_TUMOUR_CALL, TUMOUR_ANY))
        call_t = np.isin(p, _TUMOUR_CALL)
        pat = np.isin(y, _PATTERNS)
        row: dict[str, Any] = {
            "tiles": int(sel.sum()),
            "images": len(np.unique(tiles.image_ids[sel])),
            "groups": len(np.unique(tiles.groups[sel])),
            "tumour_vs_non_tumour_accuracy": _share((truth_t == call_t)[tissue]),
            "tumour_recall": _share(call_t[tissue & truth_t]),
            "non_tumour_specificity": _share(~call_t[tissue & ~truth_t]),
        }
        if pat.any():
            row["pattern_macro_f1"] = {
                "value": round(pattern_f1(y[pat], p[pat]), 3),
                "n": int(pat.sum()),
                "bootstrap95_by_image": _bootstrap_f1(y[pat], p[pat], tiles.image_ids[sel][pat]),
                "confusion_rows_truth": confusion(y[pat], p[pat], len(PATTERN_CLASSES)).tolist(),
            }
        nec = y == NECROSIS
        not_nec = tissue & ~nec & (y != 0)
        if nec.any():
            row["necrosis_found_on_necrotic"] = _share(p[nec] == NECROSIS)
        if not_nec.any():
            row["necrosis_on_other_tissue"] = _share(p[not_nec] == NECROSIS)
        out[name] = row
    return out
