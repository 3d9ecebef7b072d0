"""Figures of the pattern classifier on real tissue tiles, per source, with intervals.

- tumour vs non-tumour: a tile is called tumour when its top class is a tumour pattern or
  necrosis; truth is tumour for the three pattern proxies, necrotic and viable osteosarcoma and
  papillary carcinoma; glass tiles (label 0) are left out.
- pattern macro-F1: tiles whose truth is spindle, pleomorphic or squamoid; the top class over all
  six classes must be right (a squamous carcinoma tile called non-tumour is an error).
- necrosis: share of necrotic tiles whose top class is necrosis, and of viable or non-tumour
  tiles whose top class is necrosis.

Intervals: Wilson 95% for proportions (tiles of one image are not independent: the tile ``n`` is
given beside the image and group counts), and a bootstrap over patients / slides (photographs for
the oral set) for macro-F1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from models.training.data import predict
from models.training.metrics import confusion, grouped_bootstrap, per_class_f1, wilson_interval
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


def _share(hit: NDArray[np.bool_]) -> dict[str, Any]:
    k, n = int(hit.sum()), int(hit.size)
    return {
        "k": k,
        "n": n,
        "value": round(k / n, 3) if n else None,
        "wilson95": wilson_interval(k, n) if n else None,
    }


def pattern_f1_of(cm: NDArray[np.int64]) -> float:
    """Macro-F1 over spindle, pleomorphic and squamoid (those in the truth) of a 6-class matrix."""
    f1 = per_class_f1(cm)[list(_PATTERNS)]
    present = cm.sum(axis=1)[list(_PATTERNS)] > 0
    return float(np.nan_to_num(f1)[present].mean()) if present.any() else float("nan")


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
            cm = confusion(y[pat], p[pat], len(PATTERN_CLASSES))
            groups = tiles.groups[sel][pat]
            row["pattern_macro_f1"] = {
                "value": round(pattern_f1_of(cm), 3),
                "n": int(pat.sum()),
                "groups": len(np.unique(groups)),
                "bootstrap95_by_group": grouped_bootstrap(
                    pattern_f1_of, y[pat], p[pat], groups, len(PATTERN_CLASSES)
                ),
                "confusion_rows_truth": cm.tolist(),
            }
        nec = y == NECROSIS
        not_nec = tissue & ~nec & (y != 0)
        if nec.any():
            row["necrosis_found_on_necrotic"] = _share(p[nec] == NECROSIS)
        if not_nec.any():
            row["necrosis_on_other_tissue"] = _share(p[not_nec] == NECROSIS)
        out[name] = row
    return out


def out_of_fold_figures(weights: dict[int, Path], tiles: RealTiles) -> dict[str, Any]:
    """Figures of every tile predicted by the model that did not train on its fold.

    Args:
        weights: fold → pattern weights trained with that fold held out.
        tiles: the real tiles at the pattern model's µm/px (``cut_tiles``).
    """
    from models.registry import get_spec

    spec = get_spec("atc-pattern-v1")
    probs = np.full((len(tiles), len(spec.classes)), np.nan, dtype=np.float32)
    for fold, path in weights.items():
        model = spec.arch()
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        sel = tiles.folds == fold
        probs[sel] = predict_tiles(model, tiles.subset(sel), spec.mean, spec.std)
    if np.isnan(probs).any():
        raise ValueError(
            f"folds {sorted(set(tiles.folds.tolist()) - set(weights))} have no weights"
        )
    top = probs.max(axis=1)[tiles.labels != 0]  # tissue tiles (glass left out)
    return {
        "max_softmax_tissue_percentiles": {
            str(q): round(float(np.percentile(top, q)), 3) for q in (1, 5, 10, 25, 50)
        },
        **tissue_figures(probs, tiles),
    }


def segmenter_tile_figures(
    tiles: RealTiles,
    threshold: float,
    min_share: float = 0.25,
    model: torch.nn.Module | None = None,
) -> dict[str, Any]:
    """Share of tiles on which the shipped necrosis segmenter marks ``min_share`` of the tissue.

    ``tiles`` are at the segmenter's µm/px (2 µm/px, 256 px); a tile counts as "necrosis found"
    when pixels at or above ``threshold`` cover at least ``min_share`` of its tissue pixels.
    ``model``: a segmenter being trained (default: the shipped one).
    """
    from models.registry import create_model, get_spec
    from models.training.real_tissue import tissue_fraction

    spec = get_spec("atc-necrosis-v1")
    model = model if model is not None else create_model(spec.name)
    found = np.zeros(len(tiles), dtype=bool)
    for i, t in enumerate(tiles.images):
        e = (min(t.shape[:2]) // 16) * 16
        if e < 32 or tissue_fraction(t) == 0:
            continue
        t = np.ascontiguousarray(t[:e, :e])
        p = predict(model, t[None], spec.mean, spec.std)[0, 1] >= threshold
        od = -np.log10(np.maximum(t.astype(np.float32), 1.0) / 255.0).sum(axis=-1) > 0.2
        found[i] = (p & od).sum() >= min_share * max(int(od.sum()), 1)
    y = tiles.labels
    nec, other = y == NECROSIS, (y != NECROSIS) & (y != 0)
    out: dict[str, Any] = {"threshold": threshold, "min_share_of_tissue": min_share}
    for name in ["all", *sorted(set(tiles.sources.tolist()))]:
        sel = np.ones(len(tiles), bool) if name == "all" else tiles.sources == name
        row = {}
        if (sel & nec).any():
            row["necrosis_found_on_necrotic"] = _share(found[sel & nec])
        if (sel & other).any():
            row["necrosis_on_other_tissue"] = _share(found[sel & other])
        out[name] = row
    return out
