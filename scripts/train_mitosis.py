"""Train the mitosis crop classifier (negative / typical / tripolar) on the synthetic sampler.

Two kinds of training crops, both 64 × 64 at 0.25 µm/px:
  * centred crops of mitotic figures, look-alikes (apoptotic, pyknotic, lymphocyte, karyorrhectic,
    tangential) and ordinary nuclei from ``sample_patches("mitosis", …)``, jittered by ±3 µm;
  * crops mined exactly as at inference: the detector's haematoxylin candidates on larger patches,
    labelled by the figure within 6 µm (else negative).
Weights, model card and the registry sha256 are written at the end.

Usage:
    nice -n 10 .venv/bin/python scripts/train_mitosis.py --minutes 20
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from models.cells import zoo
from models.cells.mitosis_net import CROP_PX, MitosisTileDetector
from models.registry import get_spec
from models.training.augment import StainAugment, augment_batch, geometric, normalise
from models.training.card import publish_weights, set_sha256_constant, write_model_card
from models.training.loop import TrainLog, seed_everything, train_steps
from wsi.synthetic.patches import sample_patches

MPP = 0.25
MATCH_PX = 24  # 6 µm


def _sample(n: int, size: int, seed: int) -> Any:
    """One sampler call; a failing chunk is logged and skipped (returns None)."""
    try:
        return sample_patches("mitosis", n, size, MPP, seed)
    except ValueError as exc:  # a sampler bug on one scene must not end a 20-minute run
        print(json.dumps({"event": "sampler error skipped", "seed": seed, "error": str(exc)}))
        return None


def centred(n: int, seed: int, chunk: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Centred crops (size 96, cropped later) and their class labels."""
    imgs, labels = [], []
    for k, start in enumerate(range(0, n, chunk)):
        b = _sample(min(chunk, n - start), 96, seed * 1000 + k)
        if b is not None:
            imgs.append(np.asarray(b.images))
            labels.append(np.asarray(b.labels, dtype=np.int64))
    return np.concatenate(imgs), np.concatenate(labels)


@torch.no_grad()
def mined(
    det: MitosisTileDetector, n: int, seed: int, size: int = 256, chunk: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """Crops at the detector's candidates on ``n`` patches, labelled by the nearest figure."""
    imgs_out, labels_out = [], []
    for k, start in enumerate(range(0, n, chunk)):
        b = _sample(min(chunk, n - start), size, seed * 1000 + k)
        if b is None:
            continue
        x = normalise(
            torch.from_numpy(b.images).permute(0, 3, 1, 2).float() / 255.0, det_mean, det_std
        )
        rc, val = det.candidates(x)
        labels = np.zeros(rc.shape[:2], dtype=np.int64)
        for i, pts in enumerate(b.points or []):
            pts = np.asarray(pts).reshape(-1, 3)
            if not len(pts):
                continue
            cand = rc[i].numpy()[:, ::-1].astype(np.float64)  # (x, y)
            d = np.hypot(cand[:, None, 0] - pts[None, :, 0], cand[:, None, 1] - pts[None, :, 1])
            near = d.min(axis=1) <= MATCH_PX
            labels[i, near] = pts[d.argmin(axis=1)[near], 2].astype(np.int64)
        keep = (val >= 0).numpy().ravel()
        crops = det.crops(x, rc)[torch.from_numpy(keep)]
        # back to uint8 so both kinds of crop share one augmentation path
        rgb = (crops * det.std + det.mean).clamp(0, 1).mul(255).round().byte()
        imgs_out.append(rgb.permute(0, 2, 3, 1).numpy())
        labels_out.append(labels.ravel()[keep])
    return np.concatenate(imgs_out), np.concatenate(labels_out)


@torch.no_grad()
def necrosis_negatives(
    det: MitosisTileDetector, n: int, seed: int, size: int = 256, chunk: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """Candidates on necrosis pixels of ``necrosis`` patches: karyorrhectic debris, negatives."""
    from wsi.synthetic.classes import PATTERN_CLASSES

    necro = PATTERN_CLASSES.index("necrosis")
    out = []
    for k, start in enumerate(range(0, n, chunk)):
        try:
            b = sample_patches("necrosis", min(chunk, n - start), size, MPP, seed * 1000 + k)
        except ValueError as exc:
            print(json.dumps({"event": "sampler error skipped", "error": str(exc)}))
            continue
        assert b.masks is not None
        x = normalise(
            torch.from_numpy(b.images).permute(0, 3, 1, 2).float() / 255.0, det_mean, det_std
        )
        rc, val = det.candidates(x)
        lab = np.take_along_axis(
            b.masks.reshape(len(b.masks), -1),
            (rc[..., 0] * size + rc[..., 1]).numpy(),
            axis=1,
        )
        keep = ((val >= 0).numpy() & (lab == necro)).ravel()
        crops = det.crops(x, rc)[torch.from_numpy(keep)]
        rgb = (crops * det.std + det.mean).clamp(0, 1).mul(255).round().byte()
        out.append(rgb.permute(0, 2, 3, 1).numpy())
    imgs = np.concatenate(out) if out else np.zeros((0, CROP_PX, CROP_PX, 3), np.uint8)
    return imgs, np.zeros(len(imgs), dtype=np.int64)


@torch.no_grad()
def slide_pool(
    det: MitosisTileDetector, seeds: list[int], folder: Path, size: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    """Candidates on whole generated training slides, labelled from their truth.

    Slides render figures in their full context (neighbours, halos, JPEG), which the centred
    patches alone do not teach; seeds here are disjoint from every evaluation seed.
    """
    from wsi.slide import open_slide
    from wsi.synthetic.slide import generate_slide
    from wsi.synthetic.spec import SynthSpec
    from wsi.synthetic.truth import load_truth

    imgs, labels = [], []
    for seed in seeds:
        out = folder / f"train-slide-{seed}"
        if not (out / "truth.json").is_file():
            spec = SynthSpec(
                seed=seed,
                width=size,
                height=size,
                mitoses_per_2mm2=200.0,
                tam_fraction=0.35,
                workers=1,
            )
            generate_slide(spec, out)
        truth = load_truth(out)
        cls = np.array([1 if c == "mitosis_typical" else 2 for c in truth.mitosis_classes])
        with open_slide(out / "slide.tiff") as slide:
            rgb = slide.read_region((0, 0), 0, (size, size))
        x = normalise(
            torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0, det_mean, det_std
        )
        det.max_candidates = 4000
        rc, val = det.candidates(x)
        det.max_candidates = 128
        keep = (val[0] >= 0).numpy()
        cand = rc[0].numpy()[keep][:, ::-1].astype(np.float64)
        lab = np.zeros(len(cand), dtype=np.int64)
        if len(truth.mitoses):
            d = np.hypot(
                cand[:, None, 0] - truth.mitoses[None, :, 0],
                cand[:, None, 1] - truth.mitoses[None, :, 1],
            )
            near = d.min(axis=1) <= MATCH_PX
            lab[near] = cls[d.argmin(axis=1)[near]]
        crops = det.crops(x, rc[:, torch.from_numpy(keep)])
        rgb_c = (crops * det.std + det.mean).clamp(0, 1).mul(255).round().byte()
        imgs.append(rgb_c.permute(0, 2, 3, 1).numpy())
        labels.append(lab)
        print(
            json.dumps(
                {
                    "event": "slide mined",
                    "seed": seed,
                    "candidates": len(lab),
                    "per_class": np.bincount(lab, minlength=3).tolist(),
                }
            ),
            flush=True,
        )
    return np.concatenate(imgs), np.concatenate(labels)


det_mean = (0.5, 0.5, 0.5)
det_std = (0.25, 0.25, 0.25)


@torch.no_grad()
def hard_examples(det: MitosisTileDetector, pool: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Mined crops the current classifier gets most wrong: negatives with P(mitosis) ≥ 0.2 and
    figures with P(own class) < 0.9 (the ones near the slide-level threshold)."""
    imgs, y = pool
    probs = []
    for i in range(0, len(imgs), 512):
        x = torch.from_numpy(np.ascontiguousarray(imgs[i : i + 512])).permute(0, 3, 1, 2)
        xn = normalise(x.float() / 255.0, det_mean, det_std)
        probs.append(torch.softmax(det.classifier.eval()(xn), 1).numpy())
    p = np.concatenate(probs)
    hard = np.where(y == 0, p[:, 1] + p[:, 2] >= 0.2, p[np.arange(len(y)), y] < 0.9)
    return np.flatnonzero(hard)


def batches(
    pool_c: tuple[np.ndarray, np.ndarray],
    pool_m: tuple[np.ndarray, np.ndarray],
    bs: int,
    gen: torch.Generator,
    hard: np.ndarray | None = None,
    hard_share: float = 0.0,
    hard_figures: float | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield balanced, augmented (x, y) batches mixing centred and mined crops.

    With ``hard`` (indices into the mined pool), ``hard_share`` of the mined crops of every batch
    are drawn from those hard examples (with their own labels); with ``hard_figures``, that share
    of the hard draws comes from the hard mitotic figures (missed figures are rarer than hard
    negatives, 231 against 2 065 for stage 5) and the rest from the hard negatives.
    """
    rng = np.random.default_rng(int(torch.randint(0, 2**31, (1,), generator=gen)))
    aug = StainAugment()
    ci, cl = pool_c
    mi, ml = pool_m
    by_class = [np.flatnonzero(ml == k) for k in range(3)]
    n_hard = round(hard_share * (bs - bs // 2)) if hard is not None and len(hard) else 0
    hard_fig = hard[ml[hard] > 0] if hard is not None else np.zeros(0, dtype=np.int64)
    hard_neg = hard[ml[hard] == 0] if hard is not None else np.zeros(0, dtype=np.int64)
    while True:
        half = bs // 2
        sel_c = rng.integers(0, len(ci), half)
        off = rng.integers(0, 96 - CROP_PX + 1, size=(half, 2))
        crops_c = np.stack(
            [
                ci[j, o[0] : o[0] + CROP_PX, o[1] : o[1] + CROP_PX]
                for j, o in zip(sel_c, off, strict=True)
            ]
        )
        # mined: oversample the rare mitosis classes to a third each
        sel_m = np.concatenate(
            [
                rng.choice(idx, bs - half - 2 * (half // 3) if k == 0 else half // 3)
                for k, idx in enumerate(by_class)
                if len(idx)
            ]
        )
        if n_hard:  # replace the first mined crops by hard examples
            assert hard is not None
            if hard_figures is not None and len(hard_fig) and len(hard_neg):
                n_fig = round(hard_figures * n_hard)
                sel_m[:n_fig] = rng.choice(hard_fig, n_fig)
                sel_m[n_fig:n_hard] = rng.choice(hard_neg, n_hard - n_fig)
            else:
                sel_m[:n_hard] = rng.choice(hard, n_hard)
        imgs = np.concatenate([crops_c, mi[sel_m]])
        y = torch.from_numpy(np.concatenate([cl[sel_c], ml[sel_m]]))
        x = augment_batch(torch.from_numpy(imgs), aug, gen)
        x, _ = geometric(x, None, gen)
        yield normalise(x, det_mean, det_std), y


def evaluate(det: MitosisTileDetector, pool: tuple[np.ndarray, np.ndarray]) -> dict[str, float]:
    """Balanced accuracy, per-class recall and the confusion matrix on held-out centred crops."""
    imgs, y = pool
    c = (imgs.shape[1] - CROP_PX) // 2
    x = torch.from_numpy(np.ascontiguousarray(imgs[:, c : c + CROP_PX, c : c + CROP_PX]))
    with torch.inference_mode():
        xn = normalise(x.permute(0, 3, 1, 2).float() / 255.0, det_mean, det_std)
        pred = torch.cat(
            [det.classifier.eval()(xn[i : i + 256]).argmax(1) for i in range(0, len(xn), 256)]
        ).numpy()
    conf = np.zeros((3, 3), dtype=int)
    np.add.at(conf, (y, pred), 1)
    rec = conf.diagonal() / np.maximum(conf.sum(1), 1)
    return {
        "val_balanced_accuracy": round(float(rec.mean()), 4),
        "val_recall_negative": round(float(rec[0]), 4),
        "val_recall_typical": round(float(rec[1]), 4),
        "val_recall_tripolar": round(float(rec[2]), 4),
        "val_confusion": conf.tolist(),  # type: ignore[dict-item]
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=601)
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--steps", type=int, default=2500)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--n-centred", type=int, default=2400)
    ap.add_argument("--n-mined", type=int, default=800)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-necrosis", type=int, default=160, help="necrosis patches (debris)")
    ap.add_argument("--slides", type=int, default=12, help="2048² training slides to mine")
    ap.add_argument("--init", type=Path, default=None, help="start from these weights")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--cache", type=Path, default=None, help="npz of the sampled crops (reused)")
    ap.add_argument("--out", type=Path, default=None, help="weights folder (default: registry's)")
    ap.add_argument(
        "--hard-share", type=float, default=0.0, help="share of mined crops drawn from hard ones"
    )
    ap.add_argument("--slide-seed", type=int, default=None, help="first training slide seed")
    ap.add_argument(
        "--hard-figures",
        type=float,
        default=None,
        help="share of the hard draws taken from hard figures (default: as they come)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gen = seed_everything(args.seed)
    log = TrainLog(Path("out/train/mitosis.jsonl"))
    t0 = time.perf_counter()
    det = MitosisTileDetector()
    if args.init is not None:
        det.load_state_dict(torch.load(args.init, map_location="cpu", weights_only=True))
    if args.slides:
        first = args.seed if args.slide_seed is None else args.slide_seed
        sp = slide_pool(det, list(range(first, first + args.slides)), Path("out/train"))
    if args.cache is not None and args.cache.is_file():
        with np.load(args.cache) as z:
            pool_c, pool_m = (z["ci"], z["cl"]), (z["mi"], z["ml"])
            val = (z["vi"], z["vl"])
    else:
        pool_c = centred(args.n_centred, args.seed)
        pool_m = mined(det, args.n_mined, args.seed + 1)
        if args.n_necrosis:
            neg = necrosis_negatives(det, args.n_necrosis, args.seed + 2)
            pool_m = (np.concatenate([pool_m[0], neg[0]]), np.concatenate([pool_m[1], neg[1]]))
        val = centred(600, args.seed + 1000)
        if args.cache is not None:
            args.cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez(
                args.cache,
                ci=pool_c[0],
                cl=pool_c[1],
                mi=pool_m[0],
                ml=pool_m[1],
                vi=val[0],
                vl=val[1],
            )
    if args.slides:
        pool_m = (np.concatenate([pool_m[0], sp[0]]), np.concatenate([pool_m[1], sp[1]]))
    hard = hard_examples(det, pool_m) if args.hard_share > 0 else None
    log(
        event="data",
        hard_per_class=np.bincount(pool_m[1][hard], minlength=3).tolist()
        if hard is not None
        else None,
        centred=len(pool_c[1]),
        mined=len(pool_m[1]),
        mined_per_class=np.bincount(pool_m[1], minlength=3).tolist(),
        centred_per_class=np.bincount(pool_c[1], minlength=3).tolist(),
        seconds=round(time.perf_counter() - t0, 1),
    )
    budget = args.minutes * 60 - (time.perf_counter() - t0)
    result = train_steps(
        det.classifier,
        batches(pool_c, pool_m, args.batch, gen, hard, args.hard_share, args.hard_figures),
        lambda o, y: F.cross_entropy(o, y, label_smoothing=0.05),
        steps=args.steps,
        lr=args.lr,
        log=log,
        log_every=50,
        time_budget_s=budget,
        on_eval=lambda s: evaluate(det, val),
        eval_every=500,
    )
    spec = get_spec("atc-mitosis-v1")
    path = (args.out or spec.weights_path.parent) / spec.weights_file
    sha = publish_weights(det, path)
    write_model_card(
        spec,
        sha,
        command="nice -n 10 .venv/bin/python " + shlex.join(sys.argv),
        seeds={
            "train": args.seed,
            "mined": args.seed + 1,
            "necrosis": args.seed + 2,
            "validation": args.seed + 1000,
            "init": str(args.init) if args.init else None,
        },
        training={
            **{k: v for k, v in result.items() if not k.startswith("val_")},
            "total_seconds": round(time.perf_counter() - t0, 1),
            "data": "wsi.synthetic.sample_patches('mitosis', 96 px centred + 256 px mined)",
        },
        metrics={k: v for k, v in result.items() if k.startswith("val_")},
        notes="Slide-level detection metrics: docs/model-quality-cells.md",
        path=path.with_suffix(".json"),
    )
    if args.out is None:
        set_sha256_constant(Path(zoo.__file__), "MITOSIS_V1_SHA256", sha)
    log(event="done", sha256=sha, **{k: v for k, v in result.items() if k != "val_confusion"})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
