"""Train the cell-centre heat-map networks: H&E macrophages + nucleated cells (``atc-tam-v1``) or
DAB-positive + nucleated cells on CD68 / CD163 (``atc-tam-ihc-v1``).

Synthetic patches at 0.5 µm/px (``sample_patches("macrophage", …)``) keep the density truth; from
``atc-tam-v1`` 1.3.0 the H&E network is fine-tuned with real cells as well (``--real``): MoNuSAC
macrophages as positives and its lymphocytes, neutrophils and epithelial nuclei as negatives,
CoNSeP and NuCLS nuclei for the nucleus channel (``models.training.heat_cells``). ``--real fold0``
trains on MoNuSAC fold 0 only and scores fold 1 while it trains (leave-patients-out); ``all``
uses both folds (the shipped weights). Loss: the CenterNet focal loss (see 1.2.0 in
docs/model-quality-cells.md). Weights, model card and the registry sha256 are written at the end
unless ``--out`` names another folder.

Usage:
    nice -n 10 .venv/bin/python scripts/train_macrophage.py --minutes 20
    nice -n 10 .venv/bin/python scripts/train_macrophage.py --init models/weights/atc-tam-v1.pt \
        --real fold0 --steps 2500 --out out/train/fold0
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.cells import zoo
from models.cells.heat_net import IhcMacrophageDetector, MacrophageDetector
from models.registry import get_spec
from models.training import real_cells as rc
from models.training.card import publish_weights, set_sha256_constant, write_model_card
from models.training.heat_cells import (
    HeatLogits,
    RealPatches,
    batches,
    evaluate_synthetic,
    focal_loss,
    load_synthetic,
)
from models.training.loop import TrainLog, seed_everything, train_steps
from models.training.real_scoring import score_macrophages, score_nuclei

#: Per ``--stain``: registry name, stains sampled, detector class, sha256 constant in the zoo.
ROUTES: dict[str, tuple[str, tuple[str, ...], type[MacrophageDetector], str]] = {
    "he": ("atc-tam-v1", ("he",), MacrophageDetector, "TAM_V1_SHA256"),
    "ihc": ("atc-tam-ihc-v1", ("cd68", "cd163"), IhcMacrophageDetector, "TAM_IHC_V1_SHA256"),
}


def real_sets(which: str) -> tuple[list[rc.CellImage], list[rc.CellImage]]:
    """(training images, MoNuSAC images held out) for ``--real`` none / fold0 / fold1 / all."""
    if which == "none":
        return [], []
    mon = rc.load_monusac()
    train = [m for m in mon if which == "all" or m.split == which]
    held = [m for m in mon if m not in train]
    return train + rc.load_consep(split="train") + rc.load_nucls(split="train"), held


def real_eval(det: MacrophageDetector, held: list[rc.CellImage]) -> dict[str, Any]:
    """Held-out real figures logged while training (never used to choose anything)."""
    out: dict[str, Any] = {}
    if held:
        r = score_macrophages(det, held, (0.3, 0.5))
        out |= {f"real_mac_f1@{t}": v["all"]["f1"] for t, v in r.items()}
        out |= {
            f"real_immune_as_mac@{t}": v["all"]["immune_called_macrophage_share"]
            for t, v in r.items()
        }
    r = score_nuclei(det, rc.load_consep(split="test"), (0.2, 0.3))
    out |= {f"real_consep_nuc_f1@{t}": v["f1"] for t, v in r.items()}
    det.train()
    return out


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
    ap.add_argument("--sigma", type=float, default=1.5, help="target blob σ (heat px = 1 µm)")
    ap.add_argument("--stain", choices=tuple(ROUTES), default="he", help="H&E or CD68/CD163 IHC")
    ap.add_argument("--real", choices=("none", "fold0", "fold1", "all"), default="none")
    ap.add_argument("--real-share", type=float, default=0.5, help="share of each batch from real")
    args = ap.parse_args()
    model_name, stains, det_cls, sha_const = ROUTES[args.stain]
    torch.set_num_threads(args.threads)
    gen = seed_everything(args.seed)
    tag = f"{args.stain}-{args.real}" if args.real != "none" else args.stain
    log = TrainLog(Path(f"out/train/macrophage-{tag}.jsonl"))
    t0 = time.perf_counter()
    imgs, tgt, _ = load_synthetic(args.n_train, args.seed, args.size, args.sigma, stains=stains)
    vchunk = 32 if len(stains) > 1 else 200  # alternate the stains on validation patches too
    vimgs, _, vpts = load_synthetic(
        64, args.seed + 1000, 256, args.sigma, chunk=vchunk, stains=stains
    )
    real_train, real_held = real_sets(args.real)
    real = RealPatches(real_train, args.size, args.sigma, args.seed) if real_train else None
    log(
        event="data",
        train=len(imgs),
        real_images=len(real_train),
        seconds=round(time.perf_counter() - t0, 1),
        macrophages_per_patch=round(float(np.mean([(p[:, 2] == 1).sum() for p in vpts])), 2),
    )
    det = det_cls()
    if args.init is not None:
        det.load_state_dict(torch.load(args.init, map_location="cpu", weights_only=True))
    else:  # start every pixel at a 1% prior (CenterNet's initialisation)
        bias = det.net.out.bias
        assert bias is not None
        with torch.no_grad():
            bias.fill_(float(np.log(0.01 / 0.99)))

    def on_eval(step: int) -> dict[str, Any]:
        res = evaluate_synthetic(det, vimgs, vpts)
        return res | (real_eval(det, real_held) if real is not None else {})

    result = train_steps(
        HeatLogits(det),
        batches(imgs, tgt, args.batch, gen, real, args.real_share if real else 0.0),
        focal_loss,
        steps=args.steps,
        lr=args.lr,
        log=log,
        log_every=50,
        time_budget_s=args.minutes * 60 - (time.perf_counter() - t0),
        on_eval=on_eval,
        eval_every=500,
    )
    spec = get_spec(model_name)
    path = (args.out or spec.weights_path.parent) / spec.weights_file
    sha = publish_weights(det, path)
    data = (
        f"wsi.synthetic.sample_patches('macrophage', {args.size} px, 0.5 µm/px, "
        f"stains {', '.join(stains)})"
    )
    if real is not None:
        data += (
            f"; real ({args.real_share:.0%} of each batch): MoNuSAC {args.real} (CC BY-NC-SA 4.0, "
            "non-commercial), CoNSeP train (GPL-3.0 repo), NuCLS train (CC0)"
        )
    write_model_card(
        spec,
        sha,
        command="nice -n 10 .venv/bin/python " + shlex.join(sys.argv),
        seeds={"train": args.seed, "validation": args.seed + 1000},
        training={
            **{k: v for k, v in result.items() if not k.startswith(("val_", "real_"))},
            "total_seconds": round(time.perf_counter() - t0, 1),
            "data": data,
            "init": str(args.init) if args.init else None,
            "loss": "focal",
            "target_sigma_um": args.sigma,
        },
        metrics={k: v for k, v in result.items() if k.startswith(("val_", "real_"))},
        notes="Real-cell and slide-level figures: docs/model-quality-cells.md",
        path=path.with_suffix(".json"),
    )
    if args.out is None:
        set_sha256_constant(Path(zoo.__file__), sha_const, sha)
    log(event="done", sha256=sha, **result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
