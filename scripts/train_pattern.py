"""Train the ATC pattern tile classifier (``atc-pattern-v1``) on synthetic patches.

Writes ``models/weights/atc-pattern-v1.pt``, its model card, and pins the new sha256 in
``models/zoo/pattern.py``. Fixed seeds; patches are cached so a rerun skips generation.

    nice -n 10 .venv/bin/python scripts/train_pattern.py --steps 1500
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from models.registry import file_sha256, get_spec
from models.training import (
    StainAugment,
    TrainLog,
    publish_weights,
    seed_everything,
    set_sha256_constant,
    train_steps,
    write_model_card,
)
from models.training.data import (
    PatchSet,
    batch_stream,
    generate_patches,
    majority_labels,
    predict,
)
from models.training.metrics import confusion, macro_f1, per_class_f1
from models.training.slide_tiles import concat, slide_patch_set

ROOT = Path(__file__).resolve().parent.parent
TRAIN_SEED = 1000  # sampler seeds TRAIN_SEED … TRAIN_SEED + calls
VAL_SEED = 9000  # evaluation slides use seeds ≥ 50000 (scripts/evaluate.py)


def tile_labels(data: PatchSet) -> np.ndarray:
    """Patch label = majority class of its label map (how slide tiles are scored), else label."""
    if data.masks is None:
        return data.labels
    return majority_labels(data.masks, int(max(data.masks.max(), data.labels.max())) + 1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n-train", type=int, default=6000)
    ap.add_argument("--n-val", type=int, default=600)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--crop", type=int, default=None, help="train on random crops of this size")
    ap.add_argument("--kind", default="pattern", help="sample_patches kind for pattern tiles")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2, help="processes generating patches")
    ap.add_argument("--time-budget-s", type=float, default=1500.0)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/atc-train"))
    ap.add_argument("--out", type=Path, default=None, help="weights path (default: registry's)")
    ap.add_argument("--no-pin", action="store_true", help="do not rewrite the registry sha256")
    ap.add_argument("--init", type=Path, default=None, help="continue from these weights")
    ap.add_argument(
        "--slides",
        type=Path,
        nargs="*",
        default=[],
        help="generated training-slide folders whose pyramid tiles join the patches",
    )
    ap.add_argument("--slide-repeat", type=int, default=3, help="oversampling of slide tiles")
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
    init: dict[str, object] = {}
    if args.init is not None:
        model.load_state_dict(torch.load(args.init, map_location="cpu", weights_only=True))
        card_path = args.init.with_suffix(".json")
        prev = json.loads(card_path.read_text()) if card_path.is_file() else {}
        init = {
            "from": str(args.init),
            "sha256": file_sha256(args.init),
            "previous_command": prev.get("training_command"),
            "previous_training": prev.get("training"),
        }
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
    out = args.out or spec.weights_path
    sha = publish_weights(model, out)
    metrics = {
        "val_patches_macro_f1": round(macro_f1(cm), 4),
        "val_patches_f1_per_class": {
            c: round(float(v), 4) for c, v in zip(spec.classes, f1, strict=True)
        },
        "val_confusion": cm.tolist(),
        "note": "slide-level figures: docs/model-quality.md (scripts/evaluate.py)",
    }
    write_model_card(
        spec,
        sha,
        command="nice -n 10 .venv/bin/python scripts/train_pattern.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
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
        path=out.with_suffix(".json"),
    )
    if not args.no_pin and args.out is None:
        set_sha256_constant(ROOT / "models" / "zoo" / "pattern.py", "PATTERN_V1_SHA256", sha)
    log(event="done", sha256=sha, **{k: v for k, v in metrics.items() if k != "val_confusion"})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
