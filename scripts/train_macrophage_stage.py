"""Train and score the second H&E macrophage stage (issue 17) on MoNuSAC patient folds.

For each fold k a ``MacrophageCropNet`` is trained on MoNuSAC fold k (plus CoNSeP / NuCLS train
and synthetic patches) over the shipped ``atc-tam-v1`` heat net's candidates, and scored on the
other fold; each fold's threshold is chosen on the other fold's scores (cross-fitted), as in
``scripts/evaluate_real_cells.py``.

Usage:
    nice -n 10 .venv/bin/python scripts/train_macrophage_stage.py train --fold 0 --steps 3000
    nice -n 10 .venv/bin/python scripts/train_macrophage_stage.py score
    nice -n 10 .venv/bin/python scripts/train_macrophage_stage.py export --fold 0 \
        --version 1.4.0 --dest out/models/atc-tam-v1/1.4.0
    nice -n 10 .venv/bin/python scripts/train_macrophage_stage.py bench --dest out/models/...
    nice -n 10 .venv/bin/python scripts/train_macrophage_stage.py density --dest out/models/... \
        --set validation --slides 6
Writes ``out/stage/fold{k}.pt`` and ``out/stage/real-stage.json``; ``export`` writes a model
folder (heat net + stage of fold ``--fold``; base ``atc-tam-2stage-v1``), ``bench`` times the TAM
forward pass of the shipped and the two-stage model side by side, ``density`` runs
``evaluate_cells.calibrate_tam`` with the model folder.
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

#: P(macrophage) thresholds swept (class-balanced training makes the stage over-confident on
#: real images, where macrophages are ~1 % of nuclei: the top of the range is finer).
GRID = tuple(float(t) for t in np.round(np.r_[np.arange(0.1, 0.951, 0.05), 0.97, 0.98, 0.99], 2))


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
    init = None
    if args.hard_from is not None:  # continue a trained stage, with its hard negatives
        init = MacrophageCropNet()
        init.load_state_dict(torch.load(args.hard_from / f"fold{args.fold}.pt", weights_only=True))
        n_hard = data.add_hard_negatives(init, args.hard_min_p, args.hard_share)
        print(f"hard negatives (P >= {args.hard_min_p}): {n_hard}", flush=True)
    print(f"data {data.counts()} in {time.monotonic() - t0:.0f} s", flush=True)
    net = ms.train_stage(
        data,
        steps=args.steps,
        batch=args.batch,
        seed=args.seed,
        lr=args.lr,
        max_minutes=args.max_minutes,
        init=init,
        log=lambda s: print(s, flush=True),
    )
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), args.out / f"fold{args.fold}.pt")
    atomic_write_json(
        args.out / f"fold{args.fold}.json",
        {"counts": data.counts()}
        | {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
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


def _train_command(t: dict[str, Any]) -> str:
    """The ``train`` command line recorded in a fold's JSON."""
    cmd = (
        f"scripts/train_macrophage_stage.py train --fold {t['fold']} --steps {t['steps']} "
        f"--batch {t['batch']} --lr {t['lr']} --seed {t['seed']} --max-minutes {t['max_minutes']} "
        f"--synthetic {t['synthetic']} --threads {t['threads']} --out {t['out']}"
    )
    if t.get("hard_from"):
        cmd += (
            f" --hard-from {t['hard_from']} --hard-min-p {t['hard_min_p']}"
            f" --hard-share {t['hard_share']}  (continues the stage trained in {t['hard_from']})"
        )
    return cmd


def export(args: argparse.Namespace) -> None:
    from models.cells.macrophage_stage import TWO_STAGE_NAME, TwoStageMacrophageDetector
    from models.registry import file_sha256

    det = TwoStageMacrophageDetector()
    det.net.load_state_dict(_heat().net.state_dict())
    det.stage.load_state_dict(torch.load(args.out / f"fold{args.fold}.pt", weights_only=True))
    args.dest.mkdir(parents=True, exist_ok=True)
    torch.save(det.state_dict(), args.dest / "weights.pt")
    real = json.loads((args.out / "real-stage.json").read_text(encoding="utf-8"))
    trained = json.loads((args.out / f"fold{args.fold}.json").read_text(encoding="utf-8"))
    card = {
        "name": "atc-tam-v1",
        "version": args.version,
        "base": TWO_STAGE_NAME,
        "weights_file": "weights.pt",
        "sha256": file_sha256(args.dest / "weights.pt"),
        "heat_net": "atc-tam-v1 1.3.0 (unchanged)",
        "stage": {
            "fold": args.fold,
            "training_samples": trained["counts"],
            "steps": trained["steps"],
            "batch": trained["batch"],
            "seed": trained["seed"],
            "command": _train_command(trained),
        },
        "training_data": [
            f"MoNuSAC patient fold {args.fold} (CC BY-NC-SA 4.0: non-commercial, weights inherit)",
            "CoNSeP train (GPL-3.0 repository)",
            "NuCLS train (CC0)",
            "synthetic macrophage patches (own generator)",
        ],
        "metrics": {
            "monusac_cross_fitted": real["pooled"],
            "monusac_held_out_fold": real[f"model{args.fold}_on_held_out"],
        },
        "peak_threshold_note": "tam.peak_threshold is P(macrophage) of the second stage",
    }
    for key, name in (
        ("synthetic_tam_validation", "density-validation.json"),
        ("synthetic_tam_held_out_2", "density-held-out-2.json"),
        ("cost", "bench-stage.json"),
    ):
        if (args.out / name).is_file():
            card["metrics"][key] = json.loads((args.out / name).read_text(encoding="utf-8"))
    atomic_write_json(args.dest / "card.json", card)
    print(json.dumps({k: card[k] for k in ("name", "version", "sha256")}))


def _folder_model(dest: Path) -> tuple[Any, MacrophageDetector]:
    from models.cells.macrophage_stage import register_two_stage
    from models.registry import get_spec

    register_two_stage()
    spec = get_spec(str(dest))
    det = create_model(str(dest))
    assert isinstance(det, MacrophageDetector)
    return spec, det.eval()


def bench(args: argparse.Namespace) -> None:
    """Time the TAM forward pass per 256 px tile, shipped vs two-stage, alternating rounds."""
    from models.cells.mitosis_net import MEAN, STD
    from models.training.augment import normalise

    spec, two = _folder_model(args.dest)
    one = _heat().eval()
    one.thresholds = two.thresholds = (0.32, 0.2)
    b = sample_patches("macrophage", 16, 256, MPP, 9_990_001)
    tiles = [np.asarray(b.images)]
    big = max(rc.load_monusac(), key=lambda m: m.rgb.size)
    im = rc.resample(big, MPP).rgb
    tiles.append(
        np.stack([im[y : y + 256, x : x + 256] for y in (0, 256, 512) for x in (0, 256, 512)])
    )
    x = torch.from_numpy(np.concatenate(tiles)).permute(0, 3, 1, 2).float() / 255
    x = normalise(x, MEAN, STD).contiguous(memory_format=torch.channels_last)
    times: dict[str, list[float]] = {"shipped": [], "two_stage": []}
    with torch.inference_mode():
        for det in (one, two):  # warm-up
            det(x[:4])
        for _ in range(args.rounds):
            for name, det in (("shipped", one), ("two_stage", two)):
                t0 = time.perf_counter()
                for s in range(0, len(x), 8):
                    det(x[s : s + 8])
                times[name].append((time.perf_counter() - t0) / len(x))
    res = {
        "tiles": len(x),
        "tile_px": 256,
        "threads": torch.get_num_threads(),
        "ms_per_tile_median": {k: round(1000 * float(np.median(v)), 1) for k, v in times.items()},
        "ms_per_tile_rounds": {k: [round(1000 * t, 1) for t in v] for k, v in times.items()},
        "two_stage": spec.ref,
    }
    res["ratio"] = round(
        res["ms_per_tile_median"]["two_stage"] / res["ms_per_tile_median"]["shipped"], 2
    )
    atomic_write_json(args.out / "bench-stage.json", res)
    print(json.dumps(res))


def density(args: argparse.Namespace) -> None:
    """Synthetic TAM density through the pipeline's TAM pass with the model folder."""
    from evaluate_cells import calibrate_tam

    _folder_model(args.dest)
    cal = calibrate_tam(
        args.eval_out, args.slides, floor=args.tam_floor, name=args.set, model=str(args.dest)
    )
    atomic_write_json(args.out / f"density-{args.set}.json", cal)
    print(json.dumps(cal["best"]))
    for row in cal["sweep"]:
        print(row["peak_threshold"], row["mean_abs_rel_error"], row["rel_errors"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cmd", choices=("train", "score", "export", "bench", "density"))
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=96)
    ap.add_argument("--synthetic", type=int, default=1000, help="synthetic patches (96 px)")
    ap.add_argument("--max-minutes", type=float, default=28.0)
    ap.add_argument("--out", type=Path, default=Path("out/stage"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--hard-from", type=Path, default=None, help="stage folder to continue")
    ap.add_argument("--hard-min-p", type=float, default=0.3)
    ap.add_argument("--hard-share", type=float, default=0.4)
    ap.add_argument("--version", default="1.4.0")
    ap.add_argument("--dest", type=Path, default=Path("out/models/atc-tam-v1/1.4.0"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--set", default="validation")
    ap.add_argument("--slides", type=int, default=6)
    ap.add_argument("--tam-floor", type=float, default=0.1)
    ap.add_argument("--eval-out", type=Path, default=Path("out/eval-cells"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    {"train": train, "score": score, "export": export, "bench": bench, "density": density}[
        args.cmd
    ](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
