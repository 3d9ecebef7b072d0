"""Train the ATC pattern tile classifier (``atc-pattern-v1``) on synthetic patches.

    nice -n 10 .venv/bin/python scripts/train_pattern.py --steps 1500

The weights go to ``models/weights/atc-pattern-v1.pt`` with their model card; the new sha256 is
pinned in ``models/zoo/pattern.py`` (shared steps: ``models/training/synthetic_run.py``). Seeds
are fixed and patches cached, so a rerun skips generation. A lab fine-tunes with ``atc-wsi
train pattern`` instead (docs/training.md).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from models.training import StainAugment
from models.training import synthetic_run as common
from models.training.data import (
    PatchSet,
    batch_stream,
    majority_labels,
    predict,
)
from models.training.metrics import confusion, macro_f1, per_class_f1
from models.training.slide_tiles import concat

TRAIN_SEED = 1000  # sampler seeds TRAIN_SEED … TRAIN_SEED + calls
VAL_SEED = 9000  # evaluation slides use seeds ≥ 50000 (scripts/evaluate.py)


def tile_labels(data: PatchSet) -> np.ndarray:
    """Patch label = majority class of its label map (how slide tiles are scored), else label."""
    if data.masks is None:
        return data.labels
    return majority_labels(data.masks, int(max(data.masks.max(), data.labels.max())) + 1)


def main(argv: list[str] | None = None) -> int:
    ap = common.synthetic_parser(
        __doc__, n_train=6000, n_val=600, steps=1500, batch_size=32, lr=3e-3, kind="pattern"
    )
    args = ap.parse_args(argv)

    run = common.start_run(args, "atc-pattern-v1", "train_pattern.log.jsonl")
    spec, gen, log = run.spec, run.gen, run.log
    train, val, slide_set = common.patch_sets(run, spec.tile_px, TRAIN_SEED, VAL_SEED)
    if slide_set is not None:
        train = concat(train, slide_set, repeat_last=args.slide_repeat)
    t_data = time.perf_counter() - run.t0
    train.labels, val.labels = tile_labels(train), tile_labels(val)
    log(
        event="data",
        train=len(train),
        val=len(val),
        seconds=round(t_data, 1),
        train_counts=np.bincount(train.labels, minlength=len(spec.classes)).tolist(),
    )

    model = spec.arch()
    init = common.continue_from(model, args.init)
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

    result = common.fit(run, model, batches, loss_fn, on_eval, eval_every=500)
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
    common.publish_run(
        model,
        spec,
        args,
        argv,
        script="train_pattern.py",
        pin=("pattern.py", "PATTERN_V1_SHA256"),
        log=log,
        seeds={
            "torch": args.seed,
            "train_sampler_first": TRAIN_SEED,
            "val_sampler_first": VAL_SEED,
        },
        training=common.training_record(
            run, result, data_seconds=t_data, patches=len(train), aug=aug, init=init
        ),
        metrics=metrics,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
