"""Train the ATC pattern tile classifier (``atc-pattern-v1``) on synthetic patches.

Writes ``models/weights/atc-pattern-v1.pt``, its model card, and pins the new sha256 in
``models/zoo/pattern.py``. Fixed seeds; patches are cached so a rerun skips generation.

    nice -n 10 .venv/bin/python scripts/train_pattern.py --steps 1500
"""

from __future__ import annotations

import time

import numpy as np
import torch

from models.registry import get_spec
from models.training import StainAugment, TrainLog, seed_everything, train_steps
from models.training.data import (
    PatchSet,
    batch_stream,
    generate_patches,
    majority_labels,
    predict,
)
from models.training.metrics import confusion, macro_f1, per_class_f1
from models.training.slide_tiles import concat, slide_patch_set
from models.training.synthetic_run import continue_from, publish_run, synthetic_parser

TRAIN_SEED = 1000  # sampler seeds TRAIN_SEED … TRAIN_SEED + calls
VAL_SEED = 9000  # evaluation slides use seeds ≥ 50000 (scripts/evaluate.py)


def tile_labels(data: PatchSet) -> np.ndarray:
    """Patch label = majority class of its label map (how slide tiles are scored), else label."""
    if data.masks is None:
        return data.labels
    return majority_labels(data.masks, int(max(data.masks.max(), data.labels.max())) + 1)


def main(argv: list[str] | None = None) -> int:
    ap = synthetic_parser(
        __doc__, n_train=6000, n_val=600, steps=1500, batch_size=32, lr=3e-3, kind="pattern"
    )
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    spec = get_spec("atc-pattern-v1")
    gen = seed_everything(args.seed)
    log = TrainLog(args.cache / "train_pattern.log.jsonl")
    t0 = time.perf_counter()
    kw = dict(cache_dir=args.cache, workers=args.workers)
    train = generate_patches(
        args.kind, args.n_train, spec.tile_px, spec.input_mpp, TRAIN_SEED, **kw
    )  # type: ignore[arg-type]
    val = generate_patches(args.kind, args.n_val, spec.tile_px, spec.input_mpp, VAL_SEED, **kw)  # type: ignore[arg-type]
    if args.slides:
        tiles = [
            slide_patch_set(f, mpp=spec.input_mpp, size=spec.tile_px, stride=spec.tile_px // 2)
            for f in args.slides
        ]
        train = concat(train, concat(*tiles), repeat_last=args.slide_repeat)
    t_data = time.perf_counter() - t0
    train.labels, val.labels = tile_labels(train), tile_labels(val)
    log(
        event="data",
        train=len(train),
        val=len(val),
        seconds=round(t_data, 1),
        train_counts=np.bincount(train.labels, minlength=len(spec.classes)).tolist(),
    )

    model = spec.arch()
    init = continue_from(model, args.init)
    model = model.to(memory_format=torch.channels_last)
    aug = StainAugment()
    batches = batch_stream(
        train, args.batch_size, gen, mean=spec.mean, std=spec.std, aug=aug, crop=args.crop
    )
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.05)

    def on_eval(step: int) -> dict[str, float]:
        probs = predict(model, val.images, spec.mean, spec.std)
        cm = confusion(val.labels, probs.argmax(1), len(spec.classes))
        f1 = macro_f1(cm)
        log(step=step, val_macro_f1=round(f1, 4), val_acc=round(float(np.trace(cm) / cm.sum()), 4))
        return {"val_macro_f1": f1}

    result = train_steps(
        model,
        batches,
        loss_fn,
        steps=args.steps,
        lr=args.lr,
        log=log,
        time_budget_s=args.time_budget_s,
        on_eval=on_eval,
        eval_every=500,
    )
    probs = predict(model, val.images, spec.mean, spec.std)
    cm = confusion(val.labels, probs.argmax(1), len(spec.classes))
    f1 = per_class_f1(cm)
    metrics = {
        "val_patches_macro_f1": round(macro_f1(cm), 4),
        "val_patches_f1_per_class": {
            c: round(float(v), 4) for c, v in zip(spec.classes, f1, strict=True)
        },
        "val_confusion": cm.tolist(),
        "note": "slide-level figures: docs/model-quality.md (scripts/evaluate.py)",
    }
    publish_run(
        model,
        spec,
        args,
        argv,
        script="train_pattern.py",
        seeds={
            "torch": args.seed,
            "train_sampler_first": TRAIN_SEED,
            "val_sampler_first": VAL_SEED,
        },
        training={
            **result,
            "data_seconds": round(t_data, 1),
            "patches": len(train),
            "batch_size": args.batch_size,
            "lr": args.lr,
            "augmentation": vars(aug),
            "threads": args.threads,
            "total_seconds": round(time.perf_counter() - t0, 1),
            "continued_from": init or None,
        },
        metrics=metrics,
        pin=("pattern.py", "PATTERN_V1_SHA256"),
        log=log,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
