"""Evaluate the pattern classifier and the necrosis segmenter; print and save the figures.

Subcommands (each an evaluator in ``EVALUATORS``; ``scripts/evaluate_cells.py`` adds the cell
analyses the same way, reusing ``models.training.evaluation``):

- ``slides``: held-out synthetic slides (seeds ≥ 50,000 and stain perturbations never used in
  training): pattern macro-F1 at tile level against the truth label map, necrosis Dice and area
  error, through the full ``analyze_slide`` pipeline.
- ``real``: the pattern model on the real H&E patches in ``../shared/data/patches/kather`` and the
  whole analysis of ``CMU-1-Small-Region.svs``; no target, reported as is.
- ``tissue``: real tissue tiles (``../shared/data/real/tissue``): out-of-fold pattern figures per
  source from two fold models (``--fold-weights``) and the necrosis segmenter's tile calls.
- ``all``: all of them.

    nice -n 10 .venv/bin/python scripts/evaluate.py all --json out/eval/pattern_necrosis.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from models.registry import create_model, get_spec
from models.training.data import predict

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
HELD_OUT_SEED0 = 50_000


def eval_real(args: argparse.Namespace) -> dict[str, Any]:
    """Pattern model on real Kather patches (0.5 µm/px, resized to 1 µm/px) and a real slide."""
    spec = get_spec("atc-pattern-v1")
    model = create_model(spec.name)
    rows = []
    for path in sorted((SHARED / "patches" / "kather").glob("*/*.png")):
        img = Image.open(path).convert("RGB")
        scale = 0.5 / spec.input_mpp  # Kather patches are 0.5 µm/px
        size = round(img.width * scale)
        arr = np.asarray(img.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)
        p = predict(model, arr[None], spec.mean, spec.std)[0]
        rows.append(
            {
                "patch": path.name,
                "truth": path.parent.name,
                "predicted": spec.classes[int(p.argmax())],
                "p_tumour": round(float(p[1:4].sum()), 3),
                "probs": {c: round(float(v), 3) for c, v in zip(spec.classes, p, strict=True)},
            }
        )
    out: dict[str, Any] = {"kather_patches": rows}
    slide = SHARED / "slides" / "CMU-1-Small-Region.svs"
    if slide.is_file():
        from models.analysis import analyze_slide
        from models.settings import PipelineSettings

        settings = PipelineSettings(analyses=("pattern", "scope", "necrosis", "grading"))
        res = analyze_slide(slide, settings)
        rep = res.report
        out["cmu_small_region"] = {
            "scope": {k: rep["scope"][k] for k in ("verdict", "rule", "reason")},
            "uncertain_tile_fraction": rep["scope"]["uncertain_tile_fraction"],
            "criteria_met": sum(1 for f in rep["grading"]["flags"] if f["met"] is True),
            "necrosis_segmented_mm2": rep["necrosis"]["segmented_mm2"],
            "tissue_mm2": rep["tissue"]["area_mm2"],
            "pattern_tissue_classes": {
                c: v["area_mm2"] for c, v in rep["pattern"]["tissue_classes"].items()
            },
            "predominant": rep["pattern"]["predominant"],
            "necrosis_mm2": rep["necrosis"]["area_mm2"],
            "seconds": res.timings["total"],
        }
    return out


def eval_slides(args: argparse.Namespace) -> dict[str, Any]:
    """Pattern and necrosis figures on held-out synthetic slides through ``analyze_slide``."""
    from models.training.heldout import evaluate_heldout

    return evaluate_heldout(
        n_slides=args.slides,
        seed0=args.seed0,
        size_px=(args.width, args.height),
        cache=args.cache,
        batch_size=args.batch_size,
    )


def eval_tissue(args: argparse.Namespace) -> dict[str, Any]:
    """Real tissue tiles: out-of-fold pattern figures per source, and the necrosis segmenter.

    ``--fold-weights P0 P1``: pattern weights trained with fold 0 / fold 1 held out
    (``atc-wsi train pattern --real tissue --holdout-fold k``: ``OUT/weights.pt``); each tile is
    scored by the model that did not see its patient or slide.
    """
    from models.settings import NecrosisSettings
    from models.training.real_eval import out_of_fold_figures, segmenter_tile_figures
    from models.training.real_tissue import cut_tiles, list_real_tissue

    images = list_real_tissue()
    out: dict[str, Any] = {}
    if args.fold_weights:
        tiles = cut_tiles(images, mpp=1.0, size=224)
        weights = dict(enumerate(args.fold_weights))
        out["pattern_out_of_fold"] = out_of_fold_figures(weights, tiles)
    seg_tiles = cut_tiles(images, mpp=2.0, size=256)
    out["necrosis_segmenter_tiles"] = segmenter_tile_figures(
        seg_tiles, NecrosisSettings().threshold
    )
    return out


EVALUATORS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "slides": eval_slides,
    "real": eval_real,
    "tissue": eval_tissue,
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("what", choices=[*EVALUATORS, "all"])
    ap.add_argument("--slides", type=int, default=5, help="held-out synthetic slides")
    ap.add_argument("--seed0", type=int, default=HELD_OUT_SEED0)
    ap.add_argument("--width", type=int, default=10_240, help="slide width, level-0 px")
    ap.add_argument("--height", type=int, default=10_240, help="slide height, level-0 px")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/atc-eval"))
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    ap.add_argument(
        "--fold-weights",
        type=Path,
        nargs=2,
        default=None,
        help="tissue: pattern weights trained with fold 0 and fold 1 held out",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = list(EVALUATORS) if args.what == "all" else [args.what]
    results: dict[str, Any] = {}
    for name in names:
        t0 = time.perf_counter()
        results[name] = EVALUATORS[name](args)
        results[name]["seconds"] = round(time.perf_counter() - t0, 1)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
