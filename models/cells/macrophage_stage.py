"""Second stage of the H&E macrophage detector: a crop classifier over the heat net's peaks.

The heat net (``MacrophageDetector``) proposes candidate cell centres: the peaks of both its
channels (macrophage, any nucleus) at a low height, closer together than the shipped nucleus
peaks. ``MacrophageCropNet`` looks at a 24 µm crop (48 px at 0.5 µm/px) around each candidate
and gives P(macrophage) and the offset from the candidate to the macrophage's nucleus centre (a
large pale macrophage nucleus often peaks off-centre in the heat map). Calls are candidates at
or above a probability, moved by their offset; of calls closer than ``merge_px`` only the most
probable is kept.

``TwoStageMacrophageDetector`` runs both stages in one ``nn.Module`` with the output format of
``MacrophageDetector`` (channel 0: macrophage calls, height = P(macrophage); channel 1: the
heat net's nucleus peaks), so the engine and the TAM analysis run it unchanged.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from models.cells.heat_net import MacrophageDetector
from models.registry import ModelSpec

#: Crop edge in input pixels (0.5 µm/px): 24 µm, a macrophage with some of its surroundings.
CROP_PX = 48
#: Offsets are predicted in units of this many pixels (keeps the regression target near ±1).
OFFSET_SCALE = 4.0


def _conv(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]


class MacrophageCropNet(nn.Module):
    """Macrophage vs other nucleus on a ``CROP_PX`` crop at 0.5 µm/px, with a centre offset.

    Output (N, 3): the macrophage logit, then (dx, dy) from the crop centre to the nucleus
    centre in units of ``OFFSET_SCALE`` input pixels. About 24 MMAC per crop at width 16.
    """

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            *_conv(3, w),
            *_conv(w, w),
            nn.MaxPool2d(2),
            *_conv(w, 2 * w),
            *_conv(2 * w, 2 * w),
            nn.MaxPool2d(2),
            *_conv(2 * w, 4 * w),
            *_conv(4 * w, 4 * w),
            nn.MaxPool2d(2),
            *_conv(4 * w, 6 * w),
            nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(6 * w, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return (N, 3): logit, dx, dy (offset units)."""
        out: torch.Tensor = self.head(self.features(x))
        return out


def gather_crops(x: torch.Tensor, rc: torch.Tensor, size: int = CROP_PX) -> torch.Tensor:
    """Crops of ``size`` px centred on integer (row, col) points, padded with the value of white.

    Args:
        x: (C, H, W) normalised tile.
        rc: (k, 2) long (row, col) in input pixels.

    Returns:
        (k, C, size, size).
    """
    half = size // 2
    white = x.new_tensor((1.0 - 0.5) / 0.25)  # normalised white (MEAN 0.5, STD 0.25)
    pad = F.pad(x, (half, half, half, half), value=float(white))
    g = torch.arange(size, device=x.device)
    rows = (rc[:, 0:1] + g[None]).clamp(0, pad.shape[1] - 1)  # (k, size)
    cols = (rc[:, 1:2] + g[None]).clamp(0, pad.shape[2] - 1)
    return pad[:, rows[:, :, None], cols[:, None, :]].permute(1, 0, 2, 3)


def suppress(xy: torch.Tensor, score: torch.Tensor, radius: float) -> torch.Tensor:
    """Keep a point unless a higher-scored one lies within ``radius`` (ties: lower index wins).

    Args:
        xy: (k, 2) positions; score: (k,).

    Returns:
        (k,) bool mask of the kept points.
    """
    if len(xy) == 0:
        return torch.zeros(0, dtype=torch.bool, device=xy.device)
    d = torch.cdist(xy.float(), xy.float())
    idx = torch.arange(len(xy), device=xy.device)
    better = (score[None, :] > score[:, None]) | (
        (score[None, :] == score[:, None]) & (idx[None, :] < idx[:, None])
    )
    return ~((d < radius) & better).any(dim=1)


class TwoStageMacrophageDetector(MacrophageDetector):
    """Heat-net candidates, classified by ``MacrophageCropNet``; output as ``MacrophageDetector``.

    ``thresholds[0]`` is the lowest P(macrophage) of a call; ``thresholds[1]`` the nucleus peak
    height (unchanged meaning).

    Args:
        candidate_threshold: lowest heat of a candidate peak (either channel).
        candidate_distance_px: closest two candidates of one channel (input px).
        merge_px: of calls closer than this (input px), the most probable is kept.
    """

    def __init__(
        self,
        *,
        candidate_threshold: float = 0.05,
        candidate_distance_px: int = 6,
        merge_px: float = 12.0,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.stage = MacrophageCropNet()
        self.candidate_threshold = float(candidate_threshold)
        self.candidate_distance_px = int(candidate_distance_px)
        self.merge_px = float(merge_px)

    def candidates(self, heat: torch.Tensor) -> torch.Tensor:
        """(B, 2K, 3) candidate peaks (row, col, height; −1 = none) of both heat channels."""
        kept = self.thresholds, self.min_distance_px
        self.thresholds = (self.candidate_threshold, self.candidate_threshold)
        self.min_distance_px = self.candidate_distance_px
        try:
            p = self.peaks(heat)
        finally:
            self.thresholds, self.min_distance_px = kept
        return p.flatten(1, 2)

    def classify(self, x: torch.Tensor, rc: torch.Tensor) -> torch.Tensor:
        """(k, 3) stage outputs (logit, dx, dy in offset units) for candidates ``rc`` of tile x."""
        if len(rc) == 0:
            return x.new_zeros((0, 3))
        crops = gather_crops(x, rc).contiguous(memory_format=torch.channels_last)
        out: torch.Tensor = self.stage(crops).float()
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return (B, 2, K, 3): channel 0 macrophage calls (row, col, P), channel 1 nuclei."""
        heat = self.heat(x)
        nuclei = self.peaks(heat)[:, 1]
        cand = self.candidates(heat)
        k = self.max_cells
        calls = torch.full((x.shape[0], k, 3), -1.0, device=x.device)
        h, w = x.shape[-2:]
        for b in range(x.shape[0]):
            c = cand[b][cand[b, :, 2] >= 0]
            rc = c[:, :2].round().long()
            out = self.classify(x[b], rc)
            prob = torch.sigmoid(out[:, 0])
            pos = c[:, :2] + out[:, [2, 1]] * OFFSET_SCALE  # (dx, dy) -> (row, col)
            pos[:, 0] = pos[:, 0].clamp(0, h - 1)
            pos[:, 1] = pos[:, 1].clamp(0, w - 1)
            ok = prob >= self.thresholds[0]
            pos, prob = pos[ok], prob[ok]
            keep = suppress(pos, prob, self.merge_px)
            pos, prob = pos[keep], prob[keep]
            order = prob.argsort(descending=True)[:k]
            n = len(order)
            calls[b, :n, :2] = pos[order]
            calls[b, :n, 2] = prob[order]
        return torch.stack([calls, nuclei.to(calls.dtype)], dim=1)


#: Registry name of the two-stage architecture (a base for model folders; no shipped weights).
TWO_STAGE_NAME = "atc-tam-2stage-v1"


def two_stage_spec() -> ModelSpec:
    """Spec of ``TwoStageMacrophageDetector``: the ``atc-tam-v1`` spec with the second stage.

    No weights ship under this name; it is the ``base`` of model folders holding a heat net and
    a stage (``scripts/train_macrophage_stage.py export``).
    """
    import dataclasses

    from models.registry import get_spec

    heat = get_spec("atc-tam-v1")
    return dataclasses.replace(
        heat,
        name=TWO_STAGE_NAME,
        arch=TwoStageMacrophageDetector,
        arch_name=heat.arch_name + " + MacrophageCropNet(16-32-64-96) on 48 px crops of its peaks",
        weights_file=f"{TWO_STAGE_NAME}.pt",
        sha256="",
        version="0",
    )


def register_two_stage() -> None:
    """Register ``TWO_STAGE_NAME`` so model folders with that base resolve (idempotent)."""
    from models.registry import register_model

    register_model(TWO_STAGE_NAME)(two_stage_spec)
