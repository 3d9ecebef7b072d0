"""Train and score the second H&E macrophage stage (issue 17) on MoNuSAC patient folds.

For each fold k a ``MacrophageCropNet`` is trained on MoNuSAC fold k (plus CoNSeP / NuCLS train
and synthetic patches) over the shipped ``atc-tam-v1`` heat net's candidates, and scored on the
other fold; each fold's threshold is chosen on the other fold's scores (cross-fitted), as in
``scripts/evaluate_real_cells.py``.

Usage:
    nice -n 10 .venv/bin/python scripts/train_macrophage_stage.py train --fold 0 --steps 3000
    nice -n 10 .venv/bin/python scripts/train_macrophage_stage.py score
Writes ``out/stage/fold{k}.pt`` and ``out/stage/real-stage.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.cells import zoo  # noqa: F401  (registers the cell models)
from models.cells.heat_net import MacrophageDetector
from models.cells.macrophage_stage import MacrophageCropNet
from models.registry import create_model
from models.training import macrophage_stage as ms
from models.training import real_cells as rc
from models.training.heat_cells import MPP
from models.training.real_scoring import score_macrophages
from wsi.io import atomic_write_json
from wsi.synthetic import sample_patches

GRID = tuple(float(t) for t in np.round(np.arange(0.1, 0.96, 0.05), 2))


def _heat() -> MacrophageDetector:
    det = create_model("atc-tam-v1")
    assert isinstance(det, MacrophageDetector)
    return det


def train(args: argparse.Namespace) -> None:
    det = ms.candidate_detector(_heat())
    data = ms.StageData()
    t0 = time.monotonic()
    for img in rc.load_monusac():
        if img.split == f"fold{args.fold}":
            data.add_monusac(*ms.candidates(det, img))
    for img in rc.load_consep(split="train") + rc.load_nucls(split="train"):
        data.add_complete(*ms.candidates(det, img))
    for k in range(args.synthetic // 100):
        b = sample_patches("macrophage", 100, 96, MPP, 9_170_000 + k)
        for im, pts in zip(b.images, b.points or [], strict=True):
            data.add_synthetic(np.asarray(im), np.asarray(pts))
    print(f"data {data.counts()} in {time.monotonic() - t0:.0f} s", flush=True)
    net = ms.train_stage(
        data,
        steps=args.steps,
        batch=args.batch,
        seed=args.seed,
        max_minutes=args.max_minutes,
        log=lambda s: print(s, flush=True),
    )
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), args.out / f"fold{args.fold}.pt")
    atomic_write_json(
        args.out / f"fold{args.fold}.json",
        {"counts": data.counts(), **vars(args)} | {"out": str(args.out)},
    )


def score(args: argparse.Namespace) -> None:
    det = ms.candidate_detector(_heat())
    mon = rc.load_monusac()
    sweeps = []
    cand_recall: dict[str, Any] = {}
    for k in (0, 1):
        net = MacrophageCropNet()
        net.load_state_dict(torch.load(args.out / f"fold{k}.pt", weights_only=True))
        net.eval()
        runs = []
        hit = n = ncand = 0
        for img in mon:
            if img.split == f"fold{k}":
                continue
            im, cand = ms.candidates(det, img)
            runs.append((im, ms.stage_calls(net, im, cand)))
            d, _ = ms._nearest(im.of("macrophage"), cand)
            hit, n, ncand = hit + int((d <= ms.NEAR_PX).sum()), n + len(d), ncand + len(cand)
        cand_recall[f"fold{1 - k}"] = {"within_4um": hit, "macrophages": n, "candidates": ncand}
        sweeps.append(ms.score_calls(runs, GRID))
    res: dict[str, Any] = {
        "candidates": cand_recall,
        "sweeps": sweeps,
        **ms.cross_fit(sweeps, GRID),
    }
    # the shipped heat net alone on fold 1 (never trained on), for the side-by-side
    ship = _heat().eval()
    res["shipped_on_fold1"] = score_macrophages(
        ship, [m for m in mon if m.split == "fold1"], (0.3, 0.32, 0.35, 0.6)
    )
    atomic_write_json(args.out / "real-stage.json", res)
    print(json.dumps({k: res[k] for k in ("candidates", "pooled")}))
    for k in (0, 1):
        r = res[f"model{k}_on_held_out"]
        print(k, r["threshold"], json.dumps(r["figures"]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cmd", choices=("train", "score"))
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=96)
    ap.add_argument("--synthetic", type=int, default=1000, help="synthetic patches (96 px)")
    ap.add_argument("--max-minutes", type=float, default=28.0)
    ap.add_argument("--out", type=Path, default=Path("out/stage"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    train(args) if args.cmd == "train" else score(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
