"""Score the cell heat-map detectors on real labelled images (``models.training.real_cells``).

The detector runs on each image resampled to its input µm/px (padded with white to a multiple
of 8 px); its peaks are matched one-to-one to the truth within a radius in µm. Figures are pooled
over images and also given per organ, with Wilson 95 % intervals on the pooled proportions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from models.cells.heat_net import MacrophageDetector
from models.cells.matching import match_points
from models.cells.mitosis_net import MEAN, STD
from models.training.augment import normalise
from models.training.metrics import wilson_interval
from models.training.real_cells import CellImage, resample

#: Classes that must not be called macrophage (MoNuSAC).
SMALL_IMMUNE: tuple[str, ...] = ("lymphocyte", "neutrophil")


def detector_peaks(
    det: MacrophageDetector, img: CellImage, mpp: float = 0.5
) -> tuple[CellImage, list[NDArray[np.float32]]]:
    """Run ``det`` (thresholds as set on it) on ``img`` at ``mpp``.

    Returns:
        the resampled image and, per channel, (k, 3) peaks as (x, y, score) in its pixels.
    """
    im = resample(img, mpp)
    h, w = im.rgb.shape[:2]
    hp, wp = max(64, -(-h // 8) * 8), max(64, -(-w // 8) * 8)
    pad = np.full((hp, wp, 3), 255, np.uint8)
    pad[:h, :w] = im.rgb
    x = normalise(torch.from_numpy(pad).permute(2, 0, 1)[None].float() / 255, MEAN, STD)
    with torch.inference_mode():
        out = det.eval()(x)
    peaks = (out[0] if isinstance(out, tuple) else out)[0].numpy()
    res = []
    for ch in range(peaks.shape[0]):
        p = peaks[ch]
        p = p[(p[:, 2] >= 0) & (p[:, 0] < h) & (p[:, 1] < w)]
        res.append(np.column_stack([p[:, 1], p[:, 0], p[:, 2]]).astype(np.float32))
    return im, res


def _ci(k: int, n: int) -> tuple[float, float] | None:
    """95 % Wilson interval of k / n, None when n is 0 (JSON has no NaN)."""
    return wilson_interval(k, n) if n > 0 else None


@dataclass
class Tally:
    """Matched counts over images."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    n_pred: int = 0
    n_true: int = 0
    images: int = 0
    extra: dict[str, int] = field(default_factory=dict)

    def add(self, tp: int, fp: int, fn: int) -> None:
        """Add one image's matched counts."""
        self.tp, self.fp, self.fn = self.tp + tp, self.fp + fp, self.fn + fn
        self.n_pred, self.n_true, self.images = (
            self.n_pred + tp + fp,
            self.n_true + tp + fn,
            self.images + 1,
        )

    def summary(self) -> dict[str, Any]:
        """F1, precision, recall (with Wilson intervals) and the count ratio."""
        f1 = 2 * self.tp / max(2 * self.tp + self.fp + self.fn, 1)
        return {
            "images": self.images,
            "true": self.n_true,
            "found": self.n_pred,
            "tp": self.tp,
            "f1": round(f1, 4),
            "precision": round(self.tp / max(self.n_pred, 1), 4),
            "precision_ci95": _ci(self.tp, self.n_pred),
            "recall": round(self.tp / max(self.n_true, 1), 4),
            "recall_ci95": _ci(self.tp, self.n_true),
            "count_ratio": round(self.n_pred / max(self.n_true, 1), 3),
            **self.extra,
        }


def _runs(
    det: MacrophageDetector, images: Sequence[CellImage], channel: int, lowest: float
) -> list[tuple[CellImage, list[NDArray[np.float32]]]]:
    """Run ``det`` on every image with ``channel``'s threshold lowered to ``lowest`` (restored
    afterwards), so each threshold of a sweep is a filter on one run."""
    kept = det.thresholds
    lowered = list(kept)
    lowered[channel] = lowest
    det.thresholds = (lowered[0], lowered[1])
    try:
        return [detector_peaks(det, img) for img in images]
    finally:
        det.thresholds = kept


def _pick(peaks: NDArray[np.float32], t: float) -> NDArray[np.float64]:
    return peaks[peaks[:, 2] >= t][:, :2].astype(np.float64)


def score_macrophages(
    det: MacrophageDetector,
    images: Sequence[CellImage],
    thresholds: Sequence[float],
    match_um: float = 4.0,
) -> dict[str, Any]:
    """MoNuSAC macrophage detection per peak threshold: pooled and per organ, plus the share of
    lymphocytes and neutrophils that a macrophage detection lands on (within ``match_um``)."""
    runs = _runs(det, images, 0, min(thresholds))
    return {
        str(t): macrophage_figures([(im, _pick(peaks[0], t)) for im, peaks in runs], match_um)
        for t in thresholds
    }


def macrophage_figures(
    calls: Sequence[tuple[CellImage, NDArray[np.float64]]], match_um: float = 4.0
) -> dict[str, Any]:
    """Macrophage detection figures of per-image (k, 2) x, y calls, pooled (``all``) and per
    organ: matches within ``match_um`` one to one, and the lymphocytes and neutrophils that a
    call lands on (share with a Wilson 95 % interval)."""
    per: dict[str, Tally] = {}
    for im, pred in calls:
        r = match_um / im.mpp
        m = match_points(pred, im.of("macrophage"), r)
        hit = 0
        immune = im.of(*SMALL_IMMUNE)
        if len(immune) and len(pred):
            d = np.linalg.norm(immune[:, None] - pred[None], axis=2)
            hit = int((d.min(1) <= r).sum())
        for key in ("all", im.organ):
            tl = per.setdefault(key, Tally())
            tl.add(m.tp, m.fp, m.fn)
            tl.extra["immune"] = tl.extra.get("immune", 0) + len(immune)
            tl.extra["immune_called_macrophage"] = tl.extra.get("immune_called_macrophage", 0) + hit
    res = {}
    for k, tl in sorted(per.items()):
        s = tl.summary()
        n_imm = s["immune"]
        s["immune_called_macrophage_share"] = round(
            s["immune_called_macrophage"] / max(n_imm, 1), 4
        )
        s["immune_called_macrophage_ci95"] = _ci(s["immune_called_macrophage"], n_imm)
        res[k] = s
    return res


def score_nuclei(
    det: MacrophageDetector,
    images: Sequence[CellImage],
    thresholds: Sequence[float],
    match_um: float = 4.0,
) -> dict[str, Any]:
    """Nucleus detection (channel 1, every labelled point) per peak threshold, pooled."""
    runs = _runs(det, images, 1, min(thresholds))
    out: dict[str, Any] = {}
    for t in thresholds:
        tl = Tally()
        for im, peaks in runs:
            m = match_points(_pick(peaks[1], t), im.xy, match_um / im.mpp)
            tl.add(m.tp, m.fp, m.fn)
        out[str(t)] = tl.summary()
    return out


def ihc_positive_points(
    det: MacrophageDetector | None,
    img: CellImage,
    *,
    threshold: float,
    dab_threshold: float = 0.15,
    min_cell_um2: float = 12.0,
    mpp: float = 0.5,
) -> tuple[CellImage, NDArray[np.float64]]:
    """DAB-positive cell centres (x, y) of a real IHC image at ``mpp``: the IHC network's
    channel-0 peaks at ``threshold`` (``det`` given) or the classical DAB distance-transform
    peaks (``det`` None; ``dab_threshold`` OD, ``min_cell_um2``)."""
    from models.cells.dab import dab_cells
    from models.cells.stain import HDAB

    if det is not None:
        kept = det.thresholds
        det.thresholds = (threshold, kept[1])
        im, peaks = detector_peaks(det, img, mpp)
        det.thresholds = kept
        return im, peaks[0][:, :2].astype(np.float64)
    im = resample(img, mpp)
    conc = HDAB.concentrations(im.rgb)
    res = dab_cells(
        conc[..., 1], conc.sum(-1), mpp=mpp, threshold=dab_threshold, min_cell_um2=min_cell_um2
    )
    return im, res.rc[:, ::-1].astype(np.float64)


def score_ihc_counts(
    images: Sequence[CellImage], found: Sequence[NDArray[np.float64]], match_um: float = 4.0
) -> dict[str, Any]:
    """Positive-cell count against the truth per image and pooled, with point F1."""
    rows = []
    tl = Tally()
    for im, pred in zip(images, found, strict=True):
        truth = im.of("positive")
        m = match_points(pred, truth, match_um / im.mpp)
        tl.add(m.tp, m.fp, m.fn)
        rows.append(
            {
                "image": im.name,
                "true": len(truth),
                "found": len(pred),
                "error": round(len(pred) / max(len(truth), 1) - 1, 4),
                "f1": round(m.f1, 4),
            }
        )
    s = tl.summary()
    s["count_error"] = round(s["found"] / max(s["true"], 1) - 1, 4)
    return {"pooled": s, "images": rows}


def calibrate_counts(
    runs: Sequence[tuple[CellImage, dict[float, NDArray[np.float64]]]],
    choose: Sequence[str],
) -> dict[str, Any]:
    """Pick the threshold whose pooled positive count is nearest the truth on the images named
    in ``choose``; report that threshold on the others.

    Args:
        runs: per image, the image (at the detector's µm/px) and its detections per threshold.
        choose: names of the images the threshold is chosen on.
    """
    pick = [(im, d) for im, d in runs if im.name in choose]
    rest = [(im, d) for im, d in runs if im.name not in choose]
    grid = sorted(runs[0][1])

    def err(rs: Sequence[tuple[CellImage, dict[float, NDArray[np.float64]]]], t: float) -> float:
        true = sum(len(im.of("positive")) for im, _ in rs)
        return sum(len(d[t]) for _, d in rs) / max(true, 1) - 1

    best = min(grid, key=lambda t: abs(err(pick, t)))
    return {
        "chosen_on": sorted(choose),
        "threshold": best,
        "error_on_choice": round(err(pick, best), 4),
        "reported_on": sorted(im.name for im, _ in rest),
        "report": score_ihc_counts([im for im, _ in rest], [d[best] for _, d in rest]),
    }
