"""The tile-level mitosis detector: haematoxylin candidates + a crop classifier, all in torch.

One forward pass takes a batch of normalised tiles at 0.25 µm/px and returns, per tile, up to
``max_candidates`` candidate centres with class probabilities (negative, typical, tripolar). The
candidate stage (colour deconvolution, Gaussian smoothing, peak finding) is fixed arithmetic; only
the crop classifier has trained weights. Running it all in torch keeps the engine generic and lets
the whole pass run on a GPU.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.cells.nets import MitosisNet
from models.cells.stain import HED

#: RGB normalisation of every cell network: ``(x / 255 − MEAN) / STD``.
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)
CROP_PX = 64


def _gaussian_kernel(sigma_px: float) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma_px))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(x**2) / (2 * sigma_px**2))
    return k / k.sum()


class MitosisTileDetector(nn.Module):
    """Find dark-chromatin candidates in each tile and classify a crop around each.

    Args:
        mpp: µm/px of the input tiles.
        sigma_um: Gaussian smoothing of the haematoxylin channel (µm).
        min_od: smallest smoothed haematoxylin OD of a candidate.
        min_distance_um: closest two candidates may be (µm).
        max_candidates: candidates kept per tile (highest OD first).
        crop_px: classifier crop edge in pixels.
    """

    h_col: torch.Tensor
    kernel: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        *,
        mpp: float = 0.25,
        sigma_um: float = 1.5,
        min_od: float = 0.3,
        min_distance_um: float = 3.0,
        max_candidates: int = 128,
        crop_px: int = CROP_PX,
    ) -> None:
        super().__init__()
        self.classifier = MitosisNet(n_classes=3)
        self.min_od = float(min_od)
        self.max_candidates = int(max_candidates)
        self.crop_px = int(crop_px)
        self.crop_chunk = 1024  # crops per classifier call: bounds activation memory
        self.mpp = float(mpp)
        self.nms_px = max(1, round(min_distance_um / mpp))
        inv = np.linalg.pinv(HED.vectors)[:, 0].astype(np.float32)
        self.register_buffer("h_col", torch.from_numpy(inv).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("kernel", _gaussian_kernel(sigma_um / mpp), persistent=False)
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)

    def configure(self, *, min_od: float, sigma_um: float, max_candidates: int) -> None:
        """Set the candidate stage's thresholds (from ``MitosisSettings``)."""
        self.min_od = float(min_od)
        self.max_candidates = int(max_candidates)
        self.kernel = _gaussian_kernel(sigma_um / self.mpp).to(self.kernel.device)

    def haematoxylin(self, x: torch.Tensor) -> torch.Tensor:
        """Return the smoothed haematoxylin OD (B, 1, H, W) of normalised RGB (B, 3, H, W)."""
        rgb = (x.float() * self.std + self.mean).clamp(1.0 / 255.0, 1.0)
        od = -torch.log10(rgb)
        h = (od * self.h_col).sum(1, keepdim=True)
        k = self.kernel
        r = k.numel() // 2
        h = F.conv2d(F.pad(h, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
        return F.conv2d(F.pad(h, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))

    def candidates(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (B, K, 2) integer (row, col) candidates and (B, K) their OD (−1: no candidate)."""
        h = self.haematoxylin(x)
        size = 2 * self.nms_px + 1
        mx = F.max_pool2d(h, size, stride=1, padding=self.nms_px)
        score = torch.where((h >= mx) & (h >= self.min_od), h, torch.full_like(h, -1.0))
        b, _, hh, ww = score.shape
        k = min(self.max_candidates, hh * ww)
        val, idx = score.view(b, -1).topk(k, dim=1)
        rc = torch.stack([idx // ww, idx % ww], dim=-1)
        return rc, val

    def crops(self, x: torch.Tensor, rc: torch.Tensor) -> torch.Tensor:
        """Return (B·K, 3, crop, crop) crops centred on ``rc`` (padding: white)."""
        b, c, hh, ww = x.shape
        half = self.crop_px // 2
        white = ((1.0 - self.mean) / self.std).to(x.dtype)
        pad = F.pad(x - white, (half, half, half, half)) + white
        off = torch.arange(self.crop_px, device=x.device)
        rows = (rc[..., 0, None] + off).clamp(0, hh + 2 * half - 1)  # (B, K, crop)
        cols = (rc[..., 1, None] + off).clamp(0, ww + 2 * half - 1)
        bi = torch.arange(b, device=x.device).view(b, 1, 1, 1)
        patches = pad.permute(0, 2, 3, 1)[bi, rows[..., :, None], cols[..., None, :]]
        return patches.reshape(-1, self.crop_px, self.crop_px, c).permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return (B, K, 6): row, col, candidate OD, P(negative), P(typical), P(tripolar).

        Rows with OD < 0 are padding (fewer than K candidates) and carry P(negative) = 1.
        """
        rc, val = self.candidates(x)
        b, k = val.shape
        crops = self.crops(x, rc)
        logits = torch.cat([self.classifier(c) for c in torch.split(crops, self.crop_chunk)])
        probs = torch.softmax(logits.float(), dim=1).view(b, k, 3)
        empty = torch.tensor([1.0, 0.0, 0.0], device=x.device)
        probs = torch.where((val < 0)[..., None], empty, probs)
        return torch.cat([rc.float(), val[..., None].float(), probs], dim=-1)
