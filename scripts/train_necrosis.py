"""Train the necrosis segmenter (``atc-necrosis-v1``) on synthetic patches with label maps.

Writes ``models/weights/atc-necrosis-v1.pt``, its model card, and pins the new sha256 in
``models/zoo/necrosis.py``. Fixed seeds; patches are cached so a rerun skips generation. A lab
fine-tunes with ``atc-wsi train necrosis`` instead (docs/training.md).

    nice -n 10 .venv/bin/python scripts/train_necrosis.py --steps 1200
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

from models.registry import get_spec
from models.training import (
    StainAugment,
)
from models.training.data import PatchSet, batch_stream, generate_patches, predict
from models.training.metrics import dice
from models.training.real_eval import segmenter_tile_figures
from models.training.real_tissue import necrosis_patch_set, training_sets_card
from models.training.slide_tiles import concat
from models.training.synthetic_run import (
    continue_from,
    fit,
    patch_sets,
    publish_run,
    start_run,
    synthetic_parser,
    training_record,
)
from wsi.synthetic.classes import pattern_index

TRAIN_SEED = 2000
EXTRA_SEED = 3000  # --extra-kind patches
VAL_SEED = 9500
NECROSIS = pattern_index("necrosis")


def necrosis_target(masks: NDArray[np.uint8]) -> NDArray[np.int64]:
    """Binary target: 1 where the label map says necrosis."""
    return np.asarray(masks == NECROSIS, dtype=np.int64)


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy plus soft Dice on the necrosis channel."""
    ce = F.cross_entropy(logits, target)
    p = torch.softmax(logits, dim=1)[:, 1]
    t = target.float()
    inter = (p * t).sum()
    soft_dice = 1 - (2 * inter + 1) / (p.sum() + t.sum() + 1)
    return ce + soft_dice


def hardest_tiles(
    model: torch.nn.Module, data: PatchSet, fraction: float, spec_name: str
) -> PatchSet:
    """The ``fraction`` of ``data`` on which ``model`` gets the most pixels wrong (at 0.5)."""
    assert data.masks is not None, "hard-tile mining needs label maps"
    spec = get_spec(spec_name)
    pred = predict(model, data.images, spec.mean, spec.std, batch_size=16)[:, 1] >= 0.5
    wrong = (pred != (data.masks == NECROSIS)).reshape(len(data), -1).sum(axis=1)
    idx = np.sort(np.argsort(-wrong, kind="stable")[: max(1, round(fraction * len(data)))])
    return PatchSet(data.images[idx], data.labels[idx], data.masks[idx])


def main(argv: list[str] | None = None) -> int:
    ap = synthetic_parser(
        __doc__, n_train=3000, n_val=300, steps=1200, batch_size=16, lr=3e-3, kind="necrosis"
    )
    ap.add_argument("--size", type=int, default=192, help="patch edge at 2 µm/px")
    ap.add_argument(
        "--extra-kind",
        default=None,
        help="a second sample_patches kind mixed in (pattern: every class and slide artefacts)",
    )
    ap.add_argument("--n-extra", type=int, default=0, help="patches of --extra-kind")
    ap.add_argument(
        "--hard-repeat",
        type=int,
        default=0,
        help="extra copies of the slide tiles the --init model gets most wrong (0: none)",
    )
    ap.add_argument("--hard-fraction", type=float, default=0.2, help="share of slide tiles mined")
    ap.add_argument(
        "--real", action="store_true", help="add ../shared/data/real/tissue tiles (weak masks)"
    )
    ap.add_argument("--holdout-fold", type=int, default=None, choices=(0, 1))
    ap.add_argument("--real-repeat", type=int, default=3, help="oversampling of real tiles")
    args = ap.parse_args(argv)

    run = start_run(args, "atc-necrosis-v1", "train_necrosis.log.jsonl")
    spec, gen, log = run.spec, run.gen, run.log
    train, val, slide_set = patch_sets(run, args.size, TRAIN_SEED, VAL_SEED)
    if args.extra_kind and args.n_extra:
        extra = generate_patches(
            args.extra_kind,
            args.n_extra,
            args.size,
            spec.input_mpp,
            EXTRA_SEED,
            cache_dir=args.cache,
            workers=args.workers,
        )
        train = concat(train, extra)
    if slide_set is not None:
        train = concat(train, slide_set, repeat_last=args.slide_repeat)
    real_held = None
    if args.real:
        real_set, real_held = necrosis_patch_set(spec.input_mpp, args.size, args.holdout_fold)
        train = concat(train, real_set, repeat_last=args.real_repeat)
    t_data = time.perf_counter() - run.t0
    assert train.masks is not None and val.masks is not None, "necrosis training needs masks"
    frac = float((train.masks == NECROSIS).mean())
    log(
        event="data",
        train=len(train),
        val=len(val),
        necrosis_pixel_fraction=round(frac, 3),
        seconds=round(t_data, 1),
    )

    model = spec.arch()
    init = continue_from(model, args.init)
    model = model.to(memory_format=torch.channels_last)
    if args.hard_repeat and slide_set is not None:
        # Hard-tile mining: slide tiles the starting model gets most wrong (false necrosis on
        # folds, pen and dense stroma; missed necrosis edges) are seen more often.
        hard = hardest_tiles(model, slide_set, args.hard_fraction, spec.name)
        train = concat(train, hard, repeat_last=args.hard_repeat)
        log(event="hard tiles", tiles=len(hard), repeat=args.hard_repeat, train=len(train))
    aug = StainAugment.real() if args.real else StainAugment()
    batches = batch_stream(
        train,
        args.batch_size,
        gen,
        mean=spec.mean,
        std=spec.std,
        aug=aug,
        crop=args.crop,
        target="mask",
        mask_fn=necrosis_target,
    )
    truth = val.masks == NECROSIS

    def on_eval(step: int) -> dict[str, float]:
        pred = predict(model, val.images, spec.mean, spec.std, batch_size=16)[:, 1] >= 0.5
        d = dice(pred, truth)
        err = abs(float(pred.sum()) - float(truth.sum())) / max(float(truth.sum()), 1.0)
        out = {"val_dice": d, "val_area_error": err}
        if real_held is not None:
            fig = segmenter_tile_figures(real_held, 0.85, model=model)["all"]
            out["real_found"] = fig["necrosis_found_on_necrotic"]["value"]
            out["real_other"] = fig["necrosis_on_other_tissue"]["value"]
        log(step=step, **{k: round(v, 4) for k, v in out.items()})
        model.train()
        return out

    result = fit(run, model, batches, dice_loss, on_eval, eval_every=400)
    metrics = {
        "val_patches_dice": round(float(result["val_dice"]), 4),
        "val_patches_area_error": round(float(result["val_area_error"]), 4),
        "note": "slide-level figures: docs/model-quality.md (scripts/evaluate.py)",
    }
    publish_run(
        model,
        spec,
        args,
        argv,
        script="train_necrosis.py",
        seeds={
            "torch": args.seed,
            "train_sampler_first": TRAIN_SEED,
            "extra_sampler_first": EXTRA_SEED if args.extra_kind and args.n_extra else None,
            "val_sampler_first": VAL_SEED,
        },
        training=training_record(
            run,
            result,
            data_seconds=t_data,
            patches=len(train),
            aug=aug,
            init=init,
            patch_px=args.size,
            hard_tiles={"fraction": args.hard_fraction, "repeat": args.hard_repeat}
            if args.hard_repeat
            else None,
            real={
                "sets": training_sets_card(),
                "weak_masks": "necrotic-osteosarcoma tiles: every tissue pixel necrosis; "
                "every other real tile: none",
                "repeat": args.real_repeat,
                "holdout_fold": args.holdout_fold,
            }
            if args.real
            else None,
        ),
        metrics=metrics,
        pin=("necrosis.py", "NECROSIS_V1_SHA256"),
        log=log,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
