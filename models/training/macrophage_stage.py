"""Training and scoring of the second macrophage stage (``models.cells.macrophage_stage``).

Samples are crop centres on real and synthetic images at 0.5 µm/px, each a positive
(macrophage), a negative or left out:

* MoNuSAC (training fold only): every labelled macrophage is a positive, seen from a random
  point within 4 µm of its centre (the offset target points back to it); a heat-net candidate
  within 4 µm of a macrophage is a positive too (offset to the nearest macrophage). Labelled
  lymphocytes, neutrophils and epithelial nuclei are negatives, and so is every candidate more
  than 6 µm from any macrophage (MoNuSAC labels every macrophage of an image).
* CoNSeP / NuCLS (train splits; every nucleus labelled): labelled nuclei of known non-macrophage
  classes and candidates more than 6 µm from any nucleus of an unknown class (CoNSeP "other",
  NuCLS "stromal or macrophage", where macrophages hide) are negatives.
* Synthetic ``macrophage`` patches: their macrophages are positives, other nuclei negatives.

Batches are class-balanced (half positives) and drawn from fixed shares of these pools, with
``StainAugment.real()`` and random flips / quarter turns (offsets turned alike).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from scipy.spatial import cKDTree
from torch.nn import functional as F

from models.cells.heat_net import MacrophageDetector
from models.cells.macrophage_stage import (
    CROP_PX,
    OFFSET_SCALE,
    MacrophageCropNet,
    gather_crops,
    suppress,
)
from models.cells.mitosis_net import MEAN, STD
from models.training.augment import StainAugment, augment_batch, normalise
from models.training.heat_cells import MPP, UNKNOWN_LABELS
from models.training.real_cells import CellImage
from models.training.real_scoring import _ci, detector_peaks, macrophage_figures

#: 4 µm and 6 µm in input pixels.
NEAR_PX, FAR_PX = 8.0, 12.0
#: Room around an image for a crop and its jitter (px).
MARGIN = CROP_PX // 2 + 10
#: Pool shares of a batch (positives and negatives each sum to 1).
POS_SHARES: dict[str, float] = {"monusac_truth": 0.4, "monusac_cand": 0.3, "synthetic": 0.3}
NEG_SHARES: dict[str, float] = {
    "monusac_cand": 0.35,
    "monusac_label": 0.25,
    "consep": 0.2,
    "nucls": 0.1,
    "synthetic": 0.1,
}


def candidates(det: MacrophageDetector, img: CellImage) -> tuple[CellImage, NDArray[np.float64]]:
    """The image at 0.5 µm/px and its (k, 2) candidate (x, y): heat-net peaks of both channels at
    ``det.candidate_threshold``-like settings already set on ``det`` (union, 2 µm apart)."""
    im, peaks = detector_peaks(det, img, MPP)
    xy = np.vstack([p[:, :2] for p in peaks]).astype(np.float64)
    if len(xy) < 2:
        return im, xy
    order = np.argsort(-np.concatenate([p[:, 2] for p in peaks]), kind="stable")
    xy = xy[order]
    keep = np.ones(len(xy), bool)
    for i, j in sorted(cKDTree(xy).query_pairs(4.0)):
        if keep[i]:
            keep[j] = False
    return im, xy[keep]


def candidate_detector(
    det: MacrophageDetector, threshold: float = 0.05, min_distance_px: int = 6
) -> MacrophageDetector:
    """Set ``det`` to propose candidates (both channels at ``threshold``) and return it."""
    det.thresholds = (threshold, threshold)
    det.min_distance_px = min_distance_px
    return det.eval()


def _nearest(a: NDArray[np.float64], b: NDArray[np.float64]) -> tuple[NDArray[Any], NDArray[Any]]:
    """Distance from each of a to its nearest b, and that b's index (inf / -1 when b is empty)."""
    if len(b) == 0 or len(a) == 0:
        return np.full(len(a), np.inf), np.full(len(a), -1)
    d, i = cKDTree(b).query(a)
    return np.asarray(d), np.asarray(i)


@dataclass
class Pool:
    """Crop centres of one pool: image index, centre (x, y), target (x, y) and jitter radius."""

    img: list[int] = field(default_factory=list)
    xy: list[NDArray[np.float64]] = field(default_factory=list)
    target: list[NDArray[np.float64]] = field(default_factory=list)
    jitter: list[float] = field(default_factory=list)

    def extend(
        self, i: int, xy: NDArray[np.float64], target: NDArray[np.float64], jitter: float
    ) -> None:
        """Add points of image ``i``."""
        self.img += [i] * len(xy)
        self.xy += list(xy)
        self.target += list(target)
        self.jitter += [jitter] * len(xy)

    def __len__(self) -> int:
        return len(self.img)


class StageData:
    """Padded images at 0.5 µm/px and the positive / negative pools of crop centres."""

    def __init__(self) -> None:
        self.rgb: list[NDArray[np.uint8]] = []
        self.pos: dict[str, Pool] = {k: Pool() for k in POS_SHARES}
        self.neg: dict[str, Pool] = {k: Pool() for k in NEG_SHARES}
        self.neg_shares: dict[str, float] = dict(NEG_SHARES)

    def _add_image(self, rgb: NDArray[np.uint8]) -> int:
        pad = ((MARGIN, MARGIN), (MARGIN, MARGIN), (0, 0))
        self.rgb.append(np.pad(rgb, pad, constant_values=255))  # glass, as at inference
        return len(self.rgb) - 1

    def add_monusac(self, im: CellImage, cand: NDArray[np.float64]) -> None:
        """A MoNuSAC image at 0.5 µm/px (training fold) and its candidates."""
        i = self._add_image(im.rgb)
        mac = im.of("macrophage")
        self.pos["monusac_truth"].extend(i, mac, mac, NEAR_PX)
        d, j = _nearest(cand, mac)
        near = d <= NEAR_PX
        self.pos["monusac_cand"].extend(i, cand[near], mac[j[near]], 1.0)
        self.neg["monusac_cand"].extend(i, cand[d > FAR_PX], cand[d > FAR_PX], 2.0)
        other = im.of("lymphocyte", "neutrophil", "epithelial")
        self.neg["monusac_label"].extend(i, other, other, 2.0)

    def add_complete(self, im: CellImage, cand: NDArray[np.float64]) -> None:
        """A CoNSeP / NuCLS image at 0.5 µm/px (every nucleus labelled) and its candidates."""
        i = self._add_image(im.rgb)
        known = im.xy[~np.isin(im.labels, UNKNOWN_LABELS)]
        d, _ = _nearest(cand, im.of(*UNKNOWN_LABELS))
        c = cand[d > FAR_PX]
        pts = np.vstack([known, c]) if len(c) else known
        self.neg[im.source].extend(i, pts, pts, 2.0)

    def add_synthetic(self, rgb: NDArray[np.uint8], points: NDArray[np.float32]) -> None:
        """A synthetic patch at 0.5 µm/px with its (k, 3) points (x, y, 1 macrophage / 2 other)."""
        i = self._add_image(rgb)
        p = np.asarray(points, np.float64).reshape(-1, 3)
        mac, other = p[p[:, 2] == 1, :2], p[p[:, 2] != 1, :2]
        self.pos["synthetic"].extend(i, mac, mac, NEAR_PX)
        self.neg["synthetic"].extend(i, other, other, 2.0)

    def counts(self) -> dict[str, int]:
        """Pool sizes (for the card and the log)."""
        return {f"pos/{k}": len(p) for k, p in self.pos.items()} | {
            f"neg/{k}": len(p) for k, p in self.neg.items()
        }

    def draw(
        self, n: int, rng: np.random.Generator
    ) -> tuple[NDArray[np.uint8], NDArray[np.float32], NDArray[np.float32]]:
        """``n`` crops (half positives): uint8 (n, CROP, CROP, 3), labels (n,), offsets (n, 2)
        from the crop centre to the target in px."""
        crops, labels, offs = [], [], []
        for pools, shares, lab in ((self.pos, POS_SHARES, 1.0), (self.neg, self.neg_shares, 0.0)):
            names = [k for k in shares if len(pools[k])]
            p = np.array([shares[k] for k in names])
            picks = rng.choice(len(names), size=n // 2 if lab else n - n // 2, p=p / p.sum())
            for k in picks:
                pool = pools[names[k]]
                j = int(rng.integers(len(pool)))
                r = pool.jitter[j] * np.sqrt(rng.random())
                a = rng.uniform(0, 2 * np.pi)
                centre = np.rint(pool.xy[j] + r * np.array([np.cos(a), np.sin(a)]))
                rgb = self.rgb[pool.img[j]]
                c0 = np.clip(
                    centre + MARGIN - CROP_PX // 2, 0, np.array(rgb.shape[1::-1]) - CROP_PX
                )
                x0, y0 = int(c0[0]), int(c0[1])
                crops.append(rgb[y0 : y0 + CROP_PX, x0 : x0 + CROP_PX])
                labels.append(lab)
                offs.append(pool.target[j] - (np.array([x0, y0]) - MARGIN + CROP_PX // 2))
        return (
            np.stack(crops),
            np.array(labels, np.float32),
            np.array(offs, np.float32),
        )

    def crops_of(self, pool: Pool, idx: NDArray[np.int64]) -> NDArray[np.uint8]:
        """Crops centred (no jitter) on points ``idx`` of ``pool``: (k, CROP, CROP, 3)."""
        out = np.empty((len(idx), CROP_PX, CROP_PX, 3), np.uint8)
        for n, j in enumerate(idx):
            rgb = self.rgb[pool.img[j]]
            lim = np.array(rgb.shape[1::-1]) - CROP_PX
            x0, y0 = np.clip(np.rint(pool.xy[j]) + MARGIN - CROP_PX // 2, 0, lim).astype(int)
            out[n] = rgb[y0 : y0 + CROP_PX, x0 : x0 + CROP_PX]
        return out

    def add_hard_negatives(
        self, net: MacrophageCropNet, min_p: float, share: float, chunk: int = 1024
    ) -> int:
        """Pool ``hard``: the real negatives that ``net`` gives P(macrophage) ≥ ``min_p``, drawn
        for ``share`` of the negatives (the other shares scaled down). Returns its size."""
        hard = Pool()
        net.eval()
        for name, pool in self.neg.items():
            if name == "synthetic" or not len(pool):
                continue
            probs = []
            for s in range(0, len(pool), chunk):
                crops = self.crops_of(pool, np.arange(s, min(s + chunk, len(pool))))
                x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255
                x = normalise(x, MEAN, STD).contiguous(memory_format=torch.channels_last)
                with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                    probs.append(torch.sigmoid(net(x)[:, 0].float()).numpy())
            for j in np.flatnonzero(np.concatenate(probs) >= min_p):
                hard.extend(pool.img[j], pool.xy[j][None], pool.target[j][None], pool.jitter[j])
        self.neg["hard"] = hard
        self.neg_shares = {k: v * (1 - share) for k, v in NEG_SHARES.items()} | {"hard": share}
        return len(hard)


def dihedral(x: torch.Tensor, off: torch.Tensor, k: int, flip: bool) -> tuple[torch.Tensor, Any]:
    """Turn (B, C, H, W) crops by ``k`` quarter turns (then mirror left-right) and their (dx, dy)
    offsets alike."""
    x = torch.rot90(x, k, dims=(-2, -1))
    dx, dy = off[:, 0], off[:, 1]
    for _ in range(k % 4):  # rot90 counter-clockwise: (dx, dy) -> (dy, -dx)
        dx, dy = dy, -dx
    if flip:
        x = torch.flip(x, dims=(-1,))
        dx = -dx
    return x, torch.stack([dx, dy], dim=1)


def make_batch(
    data: StageData, n: int, rng: np.random.Generator, gen: torch.Generator, aug: StainAugment
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """An augmented, normalised channels-last batch: x, labels (n,), offsets (n, 2) in px."""
    crops, lab, off = data.draw(n, rng)
    x = augment_batch(torch.from_numpy(crops), aug, gen)
    o = torch.from_numpy(off)
    group = rng.integers(0, 8, n)
    for g in range(8):
        sel = torch.from_numpy(np.flatnonzero(group == g))
        if len(sel):
            x[sel], o[sel] = dihedral(x[sel], o[sel], g % 4, g >= 4)
    x = normalise(x, MEAN, STD).contiguous(memory_format=torch.channels_last)
    return x, torch.from_numpy(lab), o


def stage_loss(out: torch.Tensor, lab: torch.Tensor, off: torch.Tensor) -> torch.Tensor:
    """BCE on the logit plus smooth-L1 on the offset of positives (offset units)."""
    bce = F.binary_cross_entropy_with_logits(out[:, 0], lab)
    pos = lab > 0.5
    if not pos.any():
        return bce
    reg = F.smooth_l1_loss(out[pos, 1:], off[pos] / OFFSET_SCALE)
    return bce + reg


def train_stage(
    data: StageData,
    *,
    steps: int,
    batch: int = 96,
    lr: float = 2e-3,
    seed: int = 0,
    max_minutes: float = 28.0,
    init: MacrophageCropNet | None = None,
    log: Callable[[str], None] = print,
) -> MacrophageCropNet:
    """Train a ``MacrophageCropNet`` on ``data`` (AdamW, bf16 autocast on CPU).

    The learning rate warms up over the first 5 % and then follows a cosine to zero over the
    run's progress: the larger of ``step / steps`` and ``elapsed / max_minutes``, so a run on a
    busy CPU still anneals and ends within its time.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    net = (init or MacrophageCropNet()).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-3)
    aug = StainAugment.real()
    t0, run, step = time.monotonic(), 0.0, 0
    net.train()
    while True:
        minutes = (time.monotonic() - t0) / 60
        progress = max(step / steps, minutes / max_minutes)
        if progress >= 1.0:
            break
        for g in opt.param_groups:
            g["lr"] = lr * (
                progress / 0.05 if progress < 0.05 else 0.5 * (1 + np.cos(np.pi * progress))
            )
        x, lab, off = make_batch(data, batch, rng, gen, aug)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(x)
        loss = stage_loss(out.float(), lab, off)
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        run = 0.98 * run + 0.02 * loss.item() if step else loss.item()
        if step % 100 == 0:
            log(f"step {step} loss {run:.4f} progress {progress:.2f} {minutes:.1f} min")
        step += 1
    log(f"done: {step} steps, loss {run:.4f}, {(time.monotonic() - t0) / 60:.1f} min")
    return net.eval()


def stage_calls(
    net: MacrophageCropNet, im: CellImage, cand: NDArray[np.float64], chunk: int = 512
) -> NDArray[np.float64]:
    """(k, 3) (x, y, P(macrophage)) per candidate of ``im`` (0.5 µm/px), moved by its offset."""
    if len(cand) == 0:
        return np.zeros((0, 3))
    x = normalise(torch.from_numpy(im.rgb).permute(2, 0, 1)[None].float() / 255, MEAN, STD)[0]
    rc = torch.from_numpy(np.rint(cand[:, ::-1]).astype(np.int64))
    outs = []
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        for s in range(0, len(rc), chunk):
            crops = gather_crops(x, rc[s : s + chunk]).contiguous(memory_format=torch.channels_last)
            outs.append(net(crops).float())
    out = torch.cat(outs).numpy().astype(np.float64)
    prob = 1 / (1 + np.exp(-out[:, 0]))
    return np.column_stack([cand + out[:, 1:] * OFFSET_SCALE, prob])


def calls_at(calls: NDArray[np.float64], t: float, merge_px: float = FAR_PX) -> NDArray[np.float64]:
    """Calls at P ≥ ``t`` after suppression within ``merge_px``: (k, 2) x, y."""
    c = calls[calls[:, 2] >= t]
    if len(c) == 0:
        return np.zeros((0, 2))
    keep = suppress(torch.from_numpy(c[:, :2]), torch.from_numpy(c[:, 2]), merge_px).numpy()
    return c[keep, :2]


def score_calls(
    runs: Sequence[tuple[CellImage, NDArray[np.float64]]],
    thresholds: Sequence[float],
    match_um: float = 4.0,
) -> dict[str, Any]:
    """MoNuSAC macrophage figures per threshold (pooled and per organ), as
    ``real_scoring.score_macrophages`` gives them, from per-image (x, y, P) calls."""
    return {
        str(t): macrophage_figures([(im, calls_at(c, t)) for im, c in runs], match_um)
        for t in thresholds
    }


def cross_fit(sweeps: Sequence[dict[str, Any]], grid: Sequence[float]) -> dict[str, Any]:
    """Two folds' held-out sweeps -> each fold reported at the threshold best (F1) on the other
    fold's sweep, and the pooled figures (with Wilson intervals)."""
    if len(sweeps) != 2:
        raise ValueError(f"cross-fitting needs two folds' sweeps, got {len(sweeps)}")
    out: dict[str, Any] = {}
    tot = {"tp": 0, "found": 0, "true": 0, "immune": 0, "immune_hit": 0}
    for k in range(2):
        t = max(grid, key=lambda t: sweeps[1 - k][str(t)]["all"]["f1"])
        res = sweeps[k][str(t)]
        out[f"model{k}_on_held_out"] = {"threshold": t, "figures": res}
        a = res["all"]
        for key, src in (("tp", "tp"), ("found", "found"), ("true", "true"), ("immune", "immune")):
            tot[key] += a[src]
        tot["immune_hit"] += a["immune_called_macrophage"]
    out["pooled"] = tot | {
        "f1": round(2 * tot["tp"] / max(tot["found"] + tot["true"], 1), 4),
        "precision": round(tot["tp"] / max(tot["found"], 1), 4),
        "precision_ci95": _ci(tot["tp"], tot["found"]),
        "recall": round(tot["tp"] / max(tot["true"], 1), 4),
        "recall_ci95": _ci(tot["tp"], tot["true"]),
        "immune_called_macrophage_share": round(tot["immune_hit"] / max(tot["immune"], 1), 4),
        "immune_called_macrophage_ci95": _ci(tot["immune_hit"], tot["immune"]),
    }
    return out
