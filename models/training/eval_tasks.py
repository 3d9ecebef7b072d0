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
from models.training.metrics import balanced_accuracy, confusion, wilson_interval

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
