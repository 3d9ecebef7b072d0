"""The tasks ``atc-wsi evaluate`` knows: how each reads its truth labels and scores a model.

mitosis: crops centred on a candidate (a real mitotic figure, or a non-mitotic nucleus or
look-alike). Truth classes ``negative``, ``typical``, ``atypical`` (tri/multipolar figures are
atypical; the model's tripolar class is a subtype of it). A crop is called a mitosis when
P(mitosis) = 1 − P(negative) reaches the operating point ``min_score`` (the analysis's own
``mitosis.min_score``); a called mitosis is atypical when the atypical classes outweigh typical.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from models.training.crop_eval import EvalTask, Predictor
from models.training.labelled import centre_crop
from models.training.metrics import balanced_accuracy, confusion, per_class_f1, wilson_interval

MITOSIS_TRUTH = ("negative", "typical", "atypical")
MITOSIS_SYNONYMS = {
    "normal": "typical",
    "nmf": "typical",
    "typical mitosis": "typical",
    "mitosis": "typical",
    "mitosis: typical": "typical",
    "mitosis_typical": "typical",
    "amf": "atypical",
    "abnormal": "atypical",
    "atypical mitosis": "atypical",
    "mitosis: atypical": "atypical",
    "mitosis_atypical": "atypical",
    "tripolar": "atypical",
    "multipolar": "atypical",
    "mitosis_tripolar": "atypical",
    "mitosis: atypical: tripolar": "atypical",
    "non-mitosis": "negative",
    "nonmitosis": "negative",
    "non_mitosis": "negative",
    "imposter": "negative",
    "hard negative": "negative",
    "no": "negative",
    "other": "negative",
}
#: Model classes that are atypical forms (the shipped model's tripolar class is one).
ATYPICAL_MODEL_CLASSES = ("mitosis_atypical", "mitosis_tripolar")


def mitosis_scores(probs: NDArray[np.float32], model_classes: tuple[str, ...]) -> NDArray[Any]:
    """(N, 3) P(mitosis), P(atypical | mitosis) and P(tripolar | mitosis) from model softmax."""
    neg = model_classes.index("negative")
    atyp = [i for i, c in enumerate(model_classes) if c in ATYPICAL_MODEL_CLASSES]
    tri = [i for i, c in enumerate(model_classes) if c == "mitosis_tripolar"]
    p_mit = 1.0 - probs[:, neg]
    denom = np.maximum(p_mit, 1e-9)
    p_atyp = probs[:, atyp].sum(1) / denom
    p_tri = probs[:, tri].sum(1) / denom if tri else np.zeros(len(probs))
    return np.stack([p_mit, p_atyp, p_tri], axis=1).astype(np.float32)


def mitosis_task(min_score: float) -> EvalTask:
    """Crop evaluation of a mitosis classifier at the operating point ``min_score``.

    The predictor must return :func:`mitosis_scores` columns.
    """

    def to_truth(s: NDArray[np.float32]) -> NDArray[np.int64]:
        out = np.where(s[:, 1] > 0.5, 2, 1)
        return np.where(s[:, 0] >= min_score, out, 0).astype(np.int64)

    def extras(s: NDArray[np.float32], y: NDArray[np.int64]) -> dict[str, Any]:
        mit = y > 0
        called = s[:, 0] >= min_score
        out: dict[str, Any] = {"operating_point": {"min_score": min_score}}
        if mit.any():
            k, n = int(called[mit].sum()), int(mit.sum())
            out["mitoses_called_mitosis"] = {
                "share": round(k / n, 4),
                "ci95": list(wilson_interval(k, n)),
                "n": n,
                "at_threshold": {
                    f"{t:.2f}": round(float((s[mit, 0] >= t).mean()), 4)
                    for t in (0.5, 0.7, 0.8, 0.85, 0.9, 0.95)
                },
            }
            sub_true = (y[mit] == 2).astype(np.int64)
            sub_pred = (s[mit, 1] > 0.5).astype(np.int64)
            cm = confusion(sub_true, sub_pred, 2)
            out["typical_vs_atypical"] = {
                "balanced_accuracy": round(balanced_accuracy(cm), 4),
                "confusion_typical_atypical": cm.tolist(),
                "called_tripolar": int((s[mit, 2] > 0.5).sum()),
                "note": "over every true mitosis, whether or not it reached min_score",
            }
        neg = y == 0
        if neg.any():
            k, n = int(called[neg].sum()), int(neg.sum())
            out["negatives_called_mitosis"] = {
                "share": round(k / n, 4),
                "ci95": list(wilson_interval(k, n)),
                "n": n,
            }
        return out

    return EvalTask("mitosis", MITOSIS_TRUTH, MITOSIS_SYNONYMS, to_truth, extras)


def mitosis_predictor(model_name: str = "atc-mitosis-v1", *, tta: bool = False) -> Predictor:
    """Wrap a registered mitosis detector's crop classifier as a crop predictor.

    Each image (already at the model's µm/px) is centre-cropped to the classifier's crop size;
    the predictor returns :func:`mitosis_scores` columns. ``tta`` averages the 8 flips/rotations.
    """
    from models.cells.mitosis_net import MEAN, STD, MitosisTileDetector
    from models.registry import create_model, get_spec
    from models.training.augment import normalise

    spec = get_spec(model_name)
    det = create_model(model_name)
    if not isinstance(det, MitosisTileDetector):
        raise TypeError(f"{model_name} is not a mitosis detector")
    det.eval()

    def predict(images: list[NDArray[np.uint8]]) -> NDArray[np.float32]:
        crops = np.stack([centre_crop(im, det.crop_px) for im in images])
        x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255.0
        x = normalise(x, MEAN, STD).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            if tta:
                views = [torch.rot90(v, r, dims=(2, 3)) for v in (x, x.flip(3)) for r in range(4)]
                p = torch.stack([det.classify(v) for v in views]).mean(0)
            else:
                p = det.classify(x)
        return mitosis_scores(p.numpy(), tuple(spec.classes))

    return predict


# --- tissue patches (issue 16) ---------------------------------------------------------------

#: Truth classes of tissue patches: the pattern classifier's tissue classes plus ``tumour``
#: (tumour of none of the three patterns, e.g. another carcinoma: scored as tumour vs non-tumour).
TISSUE_TRUTH = ("spindle", "pleomorphic", "squamoid", "necrosis", "non_tumour", "tumour")
TISSUE_SYNONYMS = {
    "lms": "spindle",
    "leiomyosarcoma": "spindle",
    "ss": "spindle",
    "synovial sarcoma": "spindle",
    "spindle cell": "spindle",
    "ups": "pleomorphic",
    "pleomorphic giant cell": "pleomorphic",
    "giant cell": "pleomorphic",
    "oscc": "squamoid",
    "scc": "squamoid",
    "squamous": "squamoid",
    "squamous cell carcinoma": "squamoid",
    "non-viable-tumor": "necrosis",
    "necrotic": "necrosis",
    "normal": "non_tumour",
    "benign": "non_tumour",
    "non-tumor": "non_tumour",
    "non-tumour": "non_tumour",
    "non_tumor": "non_tumour",
    "stroma": "non_tumour",
    "viable": "tumour",
    "tumor": "tumour",
    "carcinoma": "tumour",
}
_TISSUE_CALLS = ("background", "spindle", "pleomorphic", "squamoid", "necrosis", "non_tumour")


def tissue_task() -> EvalTask:
    """Patch evaluation of the pattern classifier; scores are its softmax over its classes.

    A patch called background counts as non-tumour. Besides the per-class figures: tumour vs
    non-tumour accuracy (tumour = the three patterns, necrosis and ``tumour``), the macro-F1 of
    spindle / pleomorphic / squamoid over patches of those truths, and the share of necrotic and
    of other patches called necrosis.
    """
    to_idx = {
        c: TISSUE_TRUTH.index(c if c != "background" else "non_tumour") for c in _TISSUE_CALLS
    }
    lookup = np.array([to_idx[c] for c in _TISSUE_CALLS], dtype=np.int64)

    def to_truth(s: NDArray[np.float32]) -> NDArray[np.int64]:
        return np.asarray(lookup[s.argmax(axis=1)], dtype=np.int64)

    def extras(s: NDArray[np.float32], y: NDArray[np.int64]) -> dict[str, Any]:
        pred = to_truth(s)
        non = TISSUE_TRUTH.index("non_tumour")
        truth_t, call_t = y != non, pred != non
        k = int((truth_t == call_t).sum())
        out: dict[str, Any] = {
            "tumour_vs_non_tumour": {
                "accuracy": round(k / len(y), 4) if len(y) else None,
                "ci95": list(wilson_interval(k, len(y))),
                "n": len(y),
            }
        }
        pat = y < 3
        if pat.any():
            cm = confusion(y[pat], pred[pat], len(TISSUE_TRUTH))
            f1 = per_class_f1(cm)[:3]
            present = cm.sum(axis=1)[:3] > 0
            out["pattern_macro_f1"] = {
                "value": round(float(np.nan_to_num(f1)[present].mean()), 4),
                "n": int(pat.sum()),
                "classes": [c for c, p in zip(TISSUE_TRUTH[:3], present, strict=True) if p],
            }
        nec = TISSUE_TRUTH.index("necrosis")
        for name, sel in (
            ("necrotic_called_necrosis", y == nec),
            ("other_called_necrosis", y != nec),
        ):
            if sel.any():
                k, n = int((pred[sel] == nec).sum()), int(sel.sum())
                out[name] = {"share": round(k / n, 4), "ci95": list(wilson_interval(k, n)), "n": n}
        return out

    return EvalTask("tissue", TISSUE_TRUTH, TISSUE_SYNONYMS, to_truth, extras)


def tissue_predictor(model_name: str = "atc-pattern-v1") -> Predictor:
    """Wrap a registered pattern classifier as a patch predictor (images at its µm/px).

    A patch larger than the model's tile is cut into tiles spread evenly over it and their
    softmax outputs are averaged; a smaller one is classified whole (the network pools globally).
    """
    from models.registry import create_model, get_spec
    from models.training.data import predict

    spec = get_spec(model_name)
    if spec.task != "classify" or tuple(spec.classes) != _TISSUE_CALLS:
        raise TypeError(f"{model_name} is not a tissue-pattern classifier")
    model = create_model(model_name)
    edge = spec.tile_px

    def tiles(im: NDArray[np.uint8]) -> NDArray[np.uint8]:
        h, w = im.shape[:2]
        if min(h, w) < edge:
            s = min(h, w)
            r, c = (h - s) // 2, (w - s) // 2
            return im[None, r : r + s, c : c + s]
        ys = np.linspace(0, h - edge, max(1, -(-h // edge))).round().astype(int)
        xs = np.linspace(0, w - edge, max(1, -(-w // edge))).round().astype(int)
        return np.stack([im[y : y + edge, x : x + edge] for y in ys for x in xs])

    def run(images: list[NDArray[np.uint8]]) -> NDArray[np.float32]:
        out = [predict(model, tiles(im), spec.mean, spec.std).mean(axis=0) for im in images]
        return np.asarray(out, dtype=np.float32)

    return run
