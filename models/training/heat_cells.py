"""Training pieces of the cell-centre heat-map detectors (``atc-tam-v1``, ``atc-tam-ihc-v1``).

Targets are Gaussian blobs (σ in heat-map pixels, 1 heat px = 2 input px) at the cell centres:
channel 0 macrophages (DAB-positive cells on IHC), channel 1 every nucleated cell. Each channel
carries a loss weight map beside it, so a real set can leave out what it does not label: the
target tensor is (B, 4, H / 2, W / 2) = (target 0, target 1, weight 0, weight 1).

Synthetic patches come from ``wsi.synthetic.sample_patches("macrophage", …)``; real H&E patches
from ``models.training.real_cells`` (see ``RealPatches`` for which classes are positives,
negatives and left out per set).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from numpy.typing import NDArray

from models.cells.heat_net import HEAT_STRIDE, MacrophageDetector
from models.cells.matching import match_points
from models.cells.mitosis_net import MEAN, STD
from models.training.augment import StainAugment, augment_batch, geometric, normalise
from models.training.real_cells import CellImage, resample
from wsi.synthetic import sample_patches

#: Input µm/px of the heat-map detectors.
MPP = 0.5
#: 4 µm matching radius in input pixels.
MATCH_PX = 8

#: Real labels that are macrophages (channel 0 positives).
MACROPHAGE_LABELS: tuple[str, ...] = ("macrophage",)
#: Real labels whose macrophage status is unknown: channel 0 is left out around them.
UNKNOWN_LABELS: tuple[str, ...] = ("other", "stromal_or_macrophage")
#: Loss weight at a real macrophage centre (falling with the blob): 139 labelled cells among
#: thousands of nuclei would otherwise barely move the shared focal-loss normalisation.
MACROPHAGE_WEIGHT = 5.0
#: Sets whose every nucleus is labelled (channel 1 trained everywhere); elsewhere channel 1 is
#: trained only around the labelled nuclei.
COMPLETE_NUCLEI: tuple[str, ...] = ("consep", "nucls")


def _blob(sigma: float) -> tuple[int, NDArray[np.float32]]:
    r = max(1, int(np.ceil(3 * sigma)))
    g = np.arange(-r, r + 1)
    return r, np.exp(-(g[:, None] ** 2 + g[None, :] ** 2) / (2 * sigma**2)).astype(np.float32)


def draw(
    out: NDArray[np.float32], xy_in: NDArray[np.float64], sigma: float, *, disc: float = 0.0
) -> None:
    """Draw max-blobs (or, with ``disc`` > 0, discs of value 1 and radius ``disc`` heat px) into
    the (h, w) heat map ``out`` at input-pixel centres ``xy_in``; a blob is exactly 1 at its
    centre pixel."""
    size_r, size_c = out.shape
    r, blob = _blob(sigma) if disc <= 0 else (int(np.ceil(disc)), None)
    if blob is None:
        g = np.arange(-r, r + 1)
        blob = ((g[:, None] ** 2 + g[None, :] ** 2) <= disc**2).astype(np.float32)
    for x, y in np.asarray(xy_in, dtype=np.float64).reshape(-1, 2):
        cx, cy = int(x // HEAT_STRIDE), int(y // HEAT_STRIDE)
        y0, y1, x0, x1 = (
            max(cy - r, 0),
            min(cy + r + 1, size_r),
            max(cx - r, 0),
            min(cx + r + 1, size_c),
        )
        if y0 >= y1 or x0 >= x1:
            continue
        b = blob[y0 - cy + r : y1 - cy + r, x0 - cx + r : x1 - cx + r]
        np.maximum(out[y0:y1, x0:x1], b, out=out[y0:y1, x0:x1])


def heat_targets(points: list[NDArray[np.float64]], size_in: int, sigma: float = 1.0) -> np.ndarray:
    """Return (n, 4, size/2, size/2) float32 targets + unit weights of synthetic patches whose
    points are (x, y, class) with class 1 = macrophage."""
    size = size_in // HEAT_STRIDE
    out = np.zeros((len(points), 4, size, size), dtype=np.float32)
    out[:, 2:] = 1.0
    for i, pts in enumerate(points):
        p = np.asarray(pts, dtype=np.float64).reshape(-1, 3)
        draw(out[i, 0], p[p[:, 2] == 1, :2], sigma)
        draw(out[i, 1], p[:, :2], sigma)
    return out


def real_targets(img: CellImage, sigma: float) -> NDArray[np.float32]:
    """(4, ceil(h/2), ceil(w/2)) targets and weights of a real image already at ``MPP``."""
    h, w = img.rgb.shape[:2]
    t = np.zeros((4, -(-h // HEAT_STRIDE), -(-w // HEAT_STRIDE)), np.float32)
    draw(t[0], img.of(*MACROPHAGE_LABELS), sigma)
    draw(t[1], img.xy, sigma)
    t[2] = 1.0 + (MACROPHAGE_WEIGHT - 1.0) * t[0]  # rare real positives weigh more
    unknown = np.zeros_like(t[2])
    draw(unknown, img.of(*UNKNOWN_LABELS), sigma, disc=4.0)
    t[2] -= unknown
    if img.source in COMPLETE_NUCLEI:
        t[3] = 1.0
    else:
        draw(t[3], img.xy, sigma, disc=6.0)
    return t


def load_synthetic(
    n: int,
    seed: int,
    size: int,
    sigma: float = 1.0,
    chunk: int = 200,
    stains: tuple[str, ...] = ("he",),
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Sample ``n`` synthetic patches (chunks of ``chunk``, stains taking turns); return images,
    targets and points."""
    imgs: list[np.ndarray] = []
    pts: list[np.ndarray] = []
    for k, start in enumerate(range(0, n, chunk)):
        b = sample_patches(
            "macrophage", min(chunk, n - start), size, MPP, seed * 1000 + k, stains[k % len(stains)]
        )
        imgs.append(np.asarray(b.images))
        pts += [np.asarray(p).reshape(-1, 3) for p in (b.points or [])]
    return np.concatenate(imgs), heat_targets(pts, size, sigma), pts


def padded(
    im: CellImage, shape: tuple[int, int], sigma: float
) -> tuple[NDArray[np.uint8], NDArray[np.float32]]:
    """A real image already at ``MPP`` padded with white to ``shape`` (even, ≥ the image), and
    its (4, h/2, w/2) targets and weights (padding: glass, a negative of both channels)."""
    h, w = im.rgb.shape[:2]
    hp, wp = shape
    rgb = np.full((hp, wp, 3), 255, np.uint8)
    rgb[:h, :w] = im.rgb
    t = np.zeros((4, hp // 2, wp // 2), np.float32)
    t[2:] = 1.0
    rt = real_targets(im, sigma)
    t[:, : rt.shape[1], : rt.shape[2]] = rt
    return rgb, t


class RealPatches:
    """Random ``size`` px crops of real images at ``MPP`` with their targets and weights.

    Images smaller than a crop are padded with white (glass: a negative everywhere). Half the
    crops of an image with macrophages are centred near one (they are rare).
    """

    def __init__(self, images: Sequence[CellImage], size: int, sigma: float, seed: int) -> None:
        self.size = size
        self.rng = np.random.default_rng(seed)
        self.rgb: list[NDArray[np.uint8]] = []
        self.tgt: list[NDArray[np.float32]] = []
        self.mac: list[NDArray[np.float64]] = []
        for img in images:
            im = resample(img, MPP)
            h, w = im.rgb.shape[:2]
            rgb, t = padded(im, (max(h + h % 2, size), max(w + w % 2, size)), sigma)
            self.rgb.append(rgb)
            self.tgt.append(t)
            self.mac.append(im.of(*MACROPHAGE_LABELS))
        self.weights = np.array([3.0 if len(m) else 1.0 for m in self.mac])
        self.weights /= self.weights.sum()

    def crop(self) -> tuple[NDArray[np.uint8], NDArray[np.float32]]:
        """One random crop: (size, size, 3) uint8 and (4, size/2, size/2) targets."""
        i = int(self.rng.choice(len(self.rgb), p=self.weights))
        rgb, t, mac = self.rgb[i], self.tgt[i], self.mac[i]
        hp, wp = rgb.shape[:2]
        s = self.size
        if len(mac) and self.rng.random() < 0.5:
            cx, cy = mac[self.rng.integers(len(mac))] + self.rng.uniform(-s / 3, s / 3, 2)
            x0, y0 = int(cx - s / 2), int(cy - s / 2)
        else:
            x0, y0 = int(self.rng.integers(0, wp - s + 1)), int(self.rng.integers(0, hp - s + 1))
        x0 = int(np.clip(x0, 0, wp - s)) // 2 * 2
        y0 = int(np.clip(y0, 0, hp - s)) // 2 * 2
        return rgb[y0 : y0 + s, x0 : x0 + s], t[:, y0 // 2 : (y0 + s) // 2, x0 // 2 : (x0 + s) // 2]


def batches(
    imgs: np.ndarray,
    tgt: np.ndarray,
    bs: int,
    gen: torch.Generator,
    real: RealPatches | None = None,
    real_share: float = 0.0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield stain-augmented (x, target-and-weight) batches, ``real_share`` of each from
    ``real``."""
    rng = np.random.default_rng(int(torch.randint(0, 2**31, (1,), generator=gen)))
    aug = StainAugment()
    n_real = round(bs * real_share) if real is not None else 0
    while True:
        sel = rng.integers(0, len(imgs), bs - n_real)
        xs, ys = [imgs[sel]], [tgt[sel]]
        if real is not None and n_real:
            crops = [real.crop() for _ in range(n_real)]
            xs.append(np.stack([c[0] for c in crops]))
            ys.append(np.stack([c[1] for c in crops]))
        x = augment_batch(torch.from_numpy(np.concatenate(xs)), aug, gen)
        x, y = geometric(x, torch.from_numpy(np.concatenate(ys)), gen)
        assert y is not None
        yield normalise(x, MEAN, STD), y


def focal_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss (α = 2, β = 4), weighted, normalised by the peaks.

    ``target`` is (B, 4, H, W): two heat targets then their loss weights. Centre pixels
    (target 1) are positives; every other pixel is a negative whose weight ``(1 − target)^4``
    falls near a centre, so a blob's shoulders are barely penalised.
    """
    t, w = target[:, :2], target[:, 2:]
    p = torch.sigmoid(logits.float()).clamp(1e-4, 1 - 1e-4)
    pos = (t >= 0.999) & (w > 0)
    pos_loss = -(torch.log(p) * (1 - p) ** 2 * w)[pos].sum()
    neg_loss = -(torch.log(1 - p) * p**2 * (1 - t) ** 4 * w)[~pos].sum()
    return (pos_loss + neg_loss) / pos.sum().clamp(min=1)


def evaluate_synthetic(
    det: MacrophageDetector,
    imgs: np.ndarray,
    pts: list[np.ndarray],
    thresholds: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6),
) -> dict[str, float]:
    """Point F1 (4 µm) and count ratio per channel on held-out synthetic patches, per threshold."""
    det.eval()
    res: dict[str, float] = {}
    kept = det.thresholds
    det.thresholds = (min(thresholds), min(thresholds))
    with torch.inference_mode():
        x = normalise(torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255.0, MEAN, STD)
        out = torch.cat([det(x[i : i + 16]) for i in range(0, len(x), 16)]).numpy()
    det.thresholds = kept
    for ch, name in ((0, "macrophage"), (1, "nucleated")):
        for t in thresholds:
            tp = fp = fn = n_pred = n_true = 0
            for i, p in enumerate(pts):
                pk = out[i, ch]
                pk = pk[pk[:, 2] >= t]
                truth = p[p[:, 2] == 1] if ch == 0 else p
                m = match_points(pk[:, [1, 0]], truth[:, :2], MATCH_PX)
                tp, fp, fn = tp + m.tp, fp + m.fp, fn + m.fn
                n_pred, n_true = n_pred + len(pk), n_true + len(truth)
            res[f"val_f1_{name}@{t}"] = round(2 * tp / max(2 * tp + fp + fn, 1), 4)
            res[f"val_count_ratio_{name}@{t}"] = round(n_pred / max(n_true, 1), 4)
    det.train()
    return res


class HeatLogits(torch.nn.Module):
    """The detector's heat-map logits as a module (what ``train_steps`` fits)."""

    def __init__(self, det: MacrophageDetector) -> None:
        super().__init__()
        self.det = det

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the detector's (B, 2, H / 2, W / 2) logits."""
        return self.det.logits(x)
