"""Fine-tune ``atc-pattern-v1`` on real tissue tiles + synthetic patches (frozen, cached trunk).

Writes the weights, their model card (every training set with its licence and the class it stands
for) and, unless ``--no-pin`` or ``--out``, pins the new sha256 in ``models/zoo/pattern.py``.
``--runs k`` trains on the other patients/slides and reports figures on fold k.

    nice -n 10 .venv/bin/python scripts/train_pattern_real.py --runs 0 1 all

One process caches the views once and trains three times from the same start: with fold 0 held
out, with fold 1 held out (figures on the held-out fold; weights under ``--cache``), and on every
real tile (the shipped weights).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.archs import PatternNet
from models.registry import file_sha256, get_spec
from models.training import (
    StainAugment,
    TrainLog,
    publish_weights,
    seed_everything,
    set_sha256_constant,
    write_model_card,
)
from models.training.data import generate_patches, majority_labels, predict
from models.training.metrics import confusion, macro_f1
from models.training.pattern_real import FROZEN_STAGES, cache_views, train_upper
from models.training.real_eval import predict_tiles, tissue_figures
from models.training.real_mix import balanced_weights
from models.training.real_tissue import RealTiles, real_split, training_sets_card
from models.training.slide_tiles import concat, slide_patch_set

ROOT = Path(__file__).resolve().parent.parent
TRAIN_SEED, VAL_SEED = 1000, 9000  # the synthetic sampler seeds of scripts/train_pattern.py


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--init", type=Path, default=None, help="start weights (default: shipped)")
    ap.add_argument(
        "--runs",
        nargs="+",
        default=["all"],
        choices=("0", "1", "all"),
        help="k: train with fold k held out (figures on it); all: every real tile",
    )
    ap.add_argument("--out-dir", type=Path, default=None, help="weights folder (all: registry's)")
    ap.add_argument("--no-pin", action="store_true")
    ap.add_argument("--n-syn", type=int, default=3000, help="synthetic training patches")
    ap.add_argument("--n-val", type=int, default=480, help="synthetic validation patches")
    ap.add_argument("--views-syn", type=int, default=2, help="cached views per synthetic patch")
    ap.add_argument("--views-real", type=int, default=6, help="cached views per real tile")
    ap.add_argument("--crop", type=int, default=144, help="view edge, px at the model's µm/px")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=48, help="synthetic and real views per step")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--real-weight", type=float, default=1.0)
    ap.add_argument(
        "--non-tumour-share",
        type=float,
        default=None,
        help="share of the real sampling weight given to non-tumour tiles (default: 1/classes)",
    )
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument(
        "--slides",
        type=Path,
        nargs="*",
        default=[],
        help="generated training slide folders: their tiles (production reader) join the "
        "synthetic views, so the fine-tune also sees pyramid reads, not only rendered patches",
    )
    ap.add_argument("--slide-repeat", type=int, default=2, help="oversampling of slide tiles")
    ap.add_argument(
        "--frozen",
        type=int,
        default=FROZEN_STAGES,
        help="feature stages kept frozen and cached (1 = the stem only)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/atc-train"))
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    spec = get_spec("atc-pattern-v1")
    gen = seed_everything(args.seed)
    log = TrainLog(args.cache / "train_pattern_real.log.jsonl")
    t0 = time.perf_counter()
    init = args.init or spec.weights_path
    start = torch.load(init, map_location="cpu", weights_only=True)
    init_sha = file_sha256(init)  # before the shipped file is overwritten
    model = spec.arch()
    assert isinstance(model, PatternNet)
    model.load_state_dict(start)
    syn = generate_patches("pattern", args.n_syn, spec.tile_px, spec.input_mpp, TRAIN_SEED,
                           cache_dir=args.cache)  # fmt: skip
    val = generate_patches("pattern", args.n_val, spec.tile_px, spec.input_mpp, VAL_SEED,
                           cache_dir=args.cache)  # fmt: skip
    n_cls = len(spec.classes)
    n_patches = len(syn)
    if args.slides:
        slide_sets = [
            slide_patch_set(f, mpp=spec.input_mpp, size=spec.tile_px, stride=spec.tile_px // 2)
            for f in args.slides
        ]
        syn = concat(syn, *(slide_sets * max(1, args.slide_repeat)))
    syn_y = majority_labels(syn.masks, n_cls) if syn.masks is not None else syn.labels
    val_y = majority_labels(val.masks, n_cls) if val.masks is not None else val.labels
    tiles, _ = real_split(spec.input_mpp, spec.tile_px, None)
    log(event="data", synthetic=len(syn), real=len(tiles))
    kw: dict[str, Any] = {"crop": args.crop, "gen": gen, "mean": spec.mean, "std": spec.std,
                          "frozen": args.frozen}  # fmt: skip
    syn_aug, real_aug = StainAugment(), StainAugment.real()
    syn_views = cache_views(model, list(syn.images), syn_y, views=args.views_syn, aug=syn_aug,
                            log=log, **kw)  # fmt: skip
    real_views = cache_views(model, tiles.images, tiles.labels, views=args.views_real,
                             aug=real_aug, log=log, **kw)  # fmt: skip
    log(event="cached", synthetic=len(syn_views), real=len(real_views),
        seconds=round(time.perf_counter() - t0, 1))  # fmt: skip
    for run in args.runs:
        fold = None if run == "all" else int(run)
        model.load_state_dict(start)
        train = tiles.folds != fold if fold is not None else np.ones(len(tiles), bool)
        held = tiles.subset(~train) if fold is not None else None
        views = real_views.of_images(train)
        w = np.zeros(len(tiles))
        w[train] = balanced_weights(
            tiles.labels[train], tiles.sources[train], args.non_tumour_share
        )

        def on_eval(step: int, held: RealTiles | None = held, run: str = run) -> dict[str, Any]:
            cm = confusion(val_y, predict(model, val.images, spec.mean, spec.std).argmax(1), n_cls)
            out: dict[str, Any] = {"val_macro_f1": round(macro_f1(cm), 4)}
            if held is not None:
                fig = tissue_figures(predict_tiles(model, held, spec.mean, spec.std), held)["all"]
                out["held_tumour_acc"] = fig["tumour_vs_non_tumour_accuracy"]["value"]
                out["held_pattern_f1"] = fig.get("pattern_macro_f1", {}).get("value")
                out["held_necrosis_found"] = fig["necrosis_found_on_necrotic"]["value"]
                out["held_necrosis_other"] = fig["necrosis_on_other_tissue"]["value"]
            log(run=run, step=step, **out)
            return out

        t1 = time.perf_counter()
        result = train_upper(model, syn_views, views, views.weights(w), steps=args.steps,
                             batch=args.batch, lr=args.lr, real_weight=args.real_weight,
                             gen=gen, log=log, on_eval=on_eval,
                             eval_every=args.eval_every, frozen=args.frozen)  # fmt: skip
        result["seconds"] = round(time.perf_counter() - t1, 1)
        name = f"pattern-hold{run}.pt" if fold is not None else spec.weights_file
        out_path = (args.out_dir / name) if args.out_dir else (
            spec.weights_path if fold is None else args.cache / name
        )  # fmt: skip
        _publish(args, argv, spec, model, out_path, (init, init_sha), result, held, n_patches, fold)
        if fold is None and not args.no_pin and args.out_dir is None:
            sha = file_sha256(out_path)
            set_sha256_constant(ROOT / "models" / "zoo" / "pattern.py", "PATTERN_V1_SHA256", sha)
        log(event="done", run=run, path=str(out_path), seconds=round(time.perf_counter() - t0))
    return 0


def _publish(
    args: argparse.Namespace,
    argv: list[str] | None,
    spec: Any,
    model: PatternNet,
    out: Path,
    init: tuple[Path, str],
    result: dict[str, Any],
    held: RealTiles | None,
    n_syn: int,
    fold: int | None,
) -> None:
    sha = publish_weights(model, out)
    metrics: dict[str, Any] = {"synthetic_val_patches_macro_f1": result.get("val_macro_f1")}
    if held is not None:
        figs = tissue_figures(predict_tiles(model, held, spec.mean, spec.std), held)
        metrics["real_held_out_fold"] = {"fold": fold, **figs}
    metrics["note"] = "figures: docs/model-quality.md (scripts/evaluate.py slides, real, tissue)"
    real_aug = StainAugment.real()
    write_model_card(
        spec,
        sha,
        command="nice -n 10 .venv/bin/python scripts/train_pattern_real.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        seeds={"torch": args.seed, "synthetic_sampler_first": TRAIN_SEED, "val": VAL_SEED},
        training={
            **result,
            "continued_from": {"from": str(init[0]), "sha256": init[1]},
            "frozen": f"stem and the first {args.frozen - 1} residual stages (cached trunk)",
            "views": {"synthetic": args.views_syn, "real": args.views_real, "crop": args.crop},
            "batch": {"synthetic": args.batch, "real": args.batch},
            "lr": args.lr,
            "real_loss_weight": args.real_weight,
            "augmentation": {"synthetic": vars(StainAugment()), "real": vars(real_aug)},
            "real_sampling": "classes equal, sources equal inside a class"
            + (
                f"; non-tumour {args.non_tumour_share:.2f} of the weight"
                if args.non_tumour_share is not None
                else ""
            ),
            "real_folds_trained": "all" if fold is None else [1 - fold],
            "training_sets": [
                {
                    "set": "synthetic sampler (wsi.synthetic.sample_patches, kind pattern)",
                    "licence": "generated by this project",
                    "patches": n_syn,
                },
                *(
                    [
                        {
                            "set": "generated training slides read through TileReader",
                            "licence": "generated by this project",
                            "slides": [Path(f).name for f in args.slides],
                            "repeat": args.slide_repeat,
                        }
                    ]
                    if args.slides
                    else []
                ),
                *training_sets_card(),
            ],
        },
        metrics=metrics,
        path=out.with_suffix(".json"),
    )


if __name__ == "__main__":
    raise SystemExit(main())
