"""Held-out synthetic slides: generate (cached), analyse, and score patterns and necrosis.

Slides use seeds from ``seed0`` upward (≥ 50,000: the training sampler never uses them), so their
layouts and their per-slide stain perturbations are unseen in training.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from models.training.evaluation import resample_nearest, tile_majority_labels
from models.training.metrics import confusion, dice, macro_f1, per_class_f1
from wsi.synthetic.classes import PATTERN_CLASSES, pattern_index


def heldout_slide(seed: int, size_px: tuple[int, int], cache: Path) -> Path:
    """Return the folder of the synthetic slide ``seed`` (generated once, then reused)."""
    from wsi.synthetic.slide import generate_slide
    from wsi.synthetic.spec import SynthSpec

    out = cache / f"heldout-{seed}-{size_px[0]}x{size_px[1]}"
    if not (out / "slide.tiff").is_file() or not (out / "labels.tiff").is_file():
        spec = SynthSpec(seed=seed, width=size_px[0], height=size_px[1])
        generate_slide(spec, out)
    return out


def read_labels(folder: Path) -> tuple[NDArray[np.uint8], float]:
    """Truth label map of a generated slide and its level-0 px per label px."""
    from wsi.synthetic.truth import load_truth

    truth = load_truth(folder)
    return truth.label_map, truth.label_l0_per_px


def score_slide(
    result: Any, labels: NDArray[np.uint8], l0_per_label: float, mpp: float
) -> dict[str, Any]:
    """Pattern tile confusion and necrosis Dice/area of one analysed slide."""
    n = len(PATTERN_CLASSES)
    pat = result.analyses["pattern"].data
    probs = pat["probs"]
    ok = np.isfinite(probs).all(axis=1)
    truth_tiles = tile_majority_labels(pat["grid"], labels, l0_per_label, n)
    cm = confusion(truth_tiles[ok], probs[ok].argmax(axis=1), n)
    nec = result.analyses["necrosis"].data
    pred = nec["mask"]
    truth_nec = labels == pattern_index("necrosis")
    truth_on_pred = np.asarray(
        resample_nearest(truth_nec, l0_per_label, pred.shape, nec["l0_per_px"]), dtype=bool
    )
    true_mm2 = float(truth_nec.sum()) * (l0_per_label * mpp / 1000) ** 2
    pred_mm2 = float(nec["area_mm2"])
    return {
        "tiles": int(ok.sum()),
        "pattern_macro_f1": round(macro_f1(cm), 4),
        "confusion": cm,
        "necrosis_dice": round(dice(pred, truth_on_pred), 4),
        "necrosis_true_mm2": round(true_mm2, 4),
        "necrosis_pred_mm2": round(pred_mm2, 4),
        "necrosis_area_error": round(abs(pred_mm2 - true_mm2) / true_mm2, 4) if true_mm2 else None,
    }


def evaluate_heldout(
    *, n_slides: int, seed0: int, size_px: tuple[int, int], cache: Path, batch_size: int = 32
) -> dict[str, Any]:
    """Analyse ``n_slides`` held-out slides and return per-slide and pooled figures."""
    from models.analysis import analyze_slide
    from models.settings import EngineSettings, PipelineSettings

    settings = PipelineSettings(
        analyses=("pattern", "necrosis"), engine=EngineSettings(device="cpu", batch_size=batch_size)
    )
    per_slide: list[dict[str, Any]] = []
    pooled = np.zeros((len(PATTERN_CLASSES),) * 2, dtype=np.int64)
    inter = total = 0.0
    for k in range(n_slides):
        seed = seed0 + k
        t0 = time.perf_counter()
        folder = heldout_slide(seed, size_px, cache)
        t_gen = time.perf_counter() - t0
        result = analyze_slide(folder / "slide.tiff", settings)
        labels, l0_per_label = read_labels(folder)
        s = score_slide(result, labels, l0_per_label, result.outputs.mpp)
        pooled += s.pop("confusion")
        d = s["necrosis_dice"]
        p, t = s["necrosis_pred_mm2"], s["necrosis_true_mm2"]
        inter += d * (p + t) / 2
        total += (p + t) / 2
        per_slide.append(
            {
                "seed": seed,
                **s,
                "generate_s": round(t_gen, 1),
                "analyse_s": round(result.timings["total"], 1),
            }
        )
        print(per_slide[-1], flush=True)
    f1 = per_class_f1(pooled)
    return {
        "slides": per_slide,
        "size_px": list(size_px),
        "pattern_macro_f1_pooled": round(macro_f1(pooled), 4),
        "pattern_f1_per_class": {
            c: round(float(v), 4) for c, v in zip(PATTERN_CLASSES, f1, strict=True)
        },
        "pattern_confusion_pooled": pooled.tolist(),
        "pattern_macro_f1_min_slide": min(s["pattern_macro_f1"] for s in per_slide),
        "necrosis_dice_pooled": round(inter / total, 4) if total else None,
        "necrosis_dice_min_slide": min(s["necrosis_dice"] for s in per_slide),
        "necrosis_area_error_max": max(
            (s["necrosis_area_error"] for s in per_slide if s["necrosis_area_error"] is not None),
            default=None,
        ),
    }
