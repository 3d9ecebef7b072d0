"""Train the H&E cell-centre heat-map network (macrophages, all nucleated cells).

Patches of 256 × 256 at 0.5 µm/px come from ``sample_patches("macrophage", …)`` with point truth
(class 1 macrophage, 2 other nucleated cell). Targets are Gaussian blobs (σ = 1 µm) at the centres:
channel 0 macrophages, channel 1 every nucleated cell. Weights, model card and the registry sha256
are written at the end.

Usage:
    nice -n 10 .venv/bin/python scripts/train_macrophage.py --minutes 20
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from models.cells import zoo
from models.cells.heat_net import HEAT_STRIDE, MacrophageDetector
from models.cells.matching import match_points
from models.cells.mitosis_net import MEAN, STD
from models.registry import get_spec
from models.training.augment import StainAugment, augment_batch, geometric, normalise
from models.training.card import publish_weights, set_sha256_constant, write_model_card
from models.training.loop import TrainLog, seed_everything, train_steps
from wsi.synthetic import sample_patches

MPP = 0.5
SIGMA_PX = 1.0  # heat-map pixels (1 µm): the map is at half the input resolution
MATCH_PX = 8  # 4 µm


def heat_targets(points: list[np.ndarray], size_in: int) -> np.ndarray:
    """Return (n, 2, size/2, size/2) float32 Gaussian targets (max over overlapping blobs)."""
    size = size_in // HEAT_STRIDE
    out = np.zeros((len(points), 2, size, size), dtype=np.float32)
    r = int(3 * SIGMA_PX)
    g1 = np.arange(-r, r + 1)
    blob = np.exp(-(g1[:, None] ** 2 + g1[None, :] ** 2) / (2 * SIGMA_PX**2)).astype(np.float32)
    for i, pts in enumerate(points):
        for x, y, c in np.asarray(pts).reshape(-1, 3):
            cx, cy = int(x // HEAT_STRIDE), int(y // HEAT_STRIDE)
            y0, y1, x0, x1 = (
                max(cy - r, 0),
                min(cy + r + 1, size),
                max(cx - r, 0),
                min(cx + r + 1, size),
            )
            if y0 >= y1 or x0 >= x1:
                continue
            b = blob[y0 - cy + r : y1 - cy + r, x0 - cx + r : x1 - cx + r]
            chans = (0, 1) if int(c) == 1 else (1,)
            for ch in chans:
                np.maximum(out[i, ch, y0:y1, x0:x1], b, out=out[i, ch, y0:y1, x0:x1])
    return out


def load(n: int, seed: int, size: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Sample ``n`` patches; return images, heat targets and the raw points."""
    b = sample_patches("macrophage", n, size, MPP, seed)
    pts = [np.asarray(p).reshape(-1, 3) for p in (b.points or [])]
    return np.asarray(b.images), heat_targets(pts, size), pts


def batches(
    imgs: np.ndarray, tgt: np.ndarray, bs: int, gen: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield augmented (x, heat target) batches."""
    rng = np.random.default_rng(int(torch.randint(0, 2**31, (1,), generator=gen)))
    aug = StainAugment()
    while True:
        sel = rng.integers(0, len(imgs), bs)
        x = augment_batch(torch.from_numpy(imgs[sel]), aug, gen)
        x, y = geometric(x, torch.from_numpy(tgt[sel]), gen)
        assert y is not None
        yield normalise(x, MEAN, STD), y


def heat_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE against the soft Gaussian targets, up-weighted near the centres."""
    w = 1.0 + 20.0 * target
    return F.binary_cross_entropy_with_logits(logits, target, weight=w)


def evaluate(det: MacrophageDetector, imgs: np.ndarray, pts: list[np.ndarray]) -> dict[str, float]:
    """Point F1 (4 µm) and count ratio per channel on held-out patches."""
    det.eval()
    res: dict[str, float] = {}
    with torch.inference_mode():
        x = normalise(torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255.0, MEAN, STD)
        out = torch.cat([det(x[i : i + 16]) for i in range(0, len(x), 16)]).numpy()
    for ch, name in ((0, "macrophage"), (1, "nucleated")):
        tp = fp = fn = 0
        n_pred = n_true = 0
        for i, p in enumerate(pts):
            pk = out[i, ch]
            pk = pk[pk[:, 2] >= 0]
            truth = p[p[:, 2] == 1] if ch == 0 else p
            m = match_points(pk[:, [1, 0]], truth[:, :2], MATCH_PX)
            tp, fp, fn = tp + m.tp, fp + m.fp, fn + m.fn
            n_pred, n_true = n_pred + len(pk), n_true + len(truth)
        res[f"val_f1_{name}"] = round(2 * tp / max(2 * tp + fp + fn, 1), 4)
        res[f"val_count_ratio_{name}"] = round(n_pred / max(n_true, 1), 4)
    det.net.train()
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=701)
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--n-train", type=int, default=1200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="weights folder (default: registry's)")
    ap.add_argument("--init", type=Path, default=None, help="continue from these weights")
    ap.add_argument("--lr", type=float, default=3e-3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gen = seed_everything(args.seed)
    log = TrainLog(Path("out/train/macrophage.jsonl"))
    t0 = time.perf_counter()
    imgs, tgt, _ = load(args.n_train, args.seed, args.size)
    vimgs, _, vpts = load(64, args.seed + 1000, 256)
    log(
        event="data",
        train=len(imgs),
        seconds=round(time.perf_counter() - t0, 1),
        macrophages_per_patch=round(float(np.mean([(p[:, 2] == 1).sum() for p in vpts])), 2),
        cells_per_patch=round(float(np.mean([len(p) for p in vpts])), 2),
    )
    det = MacrophageDetector()
    if args.init is not None:
        det.load_state_dict(torch.load(args.init, map_location="cpu", weights_only=True))
    budget = args.minutes * 60 - (time.perf_counter() - t0)
    result = train_steps(
        det.net,
        batches(imgs, tgt, args.batch, gen),
        heat_loss,
        steps=args.steps,
        lr=args.lr,
        log=log,
        log_every=50,
        time_budget_s=budget,
        on_eval=lambda s: evaluate(det, vimgs, vpts),
        eval_every=500,
    )
    spec = get_spec("atc-tam-v1")
    path = (args.out or spec.weights_path.parent) / spec.weights_file
    sha = publish_weights(det, path)
    write_model_card(
        spec,
        sha,
        command="nice -n 10 .venv/bin/python " + shlex.join(sys.argv),
        seeds={"train": args.seed, "validation": args.seed + 1000},
        training={
            **{k: v for k, v in result.items() if not k.startswith("val_")},
            "total_seconds": round(time.perf_counter() - t0, 1),
            "data": f"wsi.synthetic.sample_patches('macrophage', {args.size} px, 0.5 µm/px)",
        },
        metrics={k: v for k, v in result.items() if k.startswith("val_")},
        notes="Slide-level density errors: docs/model-quality-cells.md",
        path=path.with_suffix(".json"),
    )
    if args.out is None:
        set_sha256_constant(Path(zoo.__file__), "TAM_V1_SHA256", sha)
    log(event="done", sha256=sha, **result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
