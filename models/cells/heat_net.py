"""The H&E macrophage detector: a cell-centre heat-map network with in-graph peak finding.

Output per tile: up to ``max_cells`` peaks per channel (macrophage, any nucleated cell) as
(row, col, height) in input pixels, so only small arrays leave the device. The heat maps are at
half the input resolution (``HEAT_STRIDE``); peak coordinates are mapped back to input pixels.
"""

from __future__ import annotations

import torch
from torch import nn

from models.cells.mitosis_net import max_filter
from models.cells.nets import CellHeatNet

#: Input pixels per heat-map pixel.
HEAT_STRIDE = 2


class MacrophageDetector(nn.Module):
    """Heat maps of macrophage and nucleated-cell centres, with peak extraction.

    Args:
        max_cells: peaks kept per channel and tile.
        min_distance_px: closest two peaks may be (input px).
        thresholds: lowest peak height (sigmoid) kept, per channel (macrophage, nucleated).
    """

    def __init__(
        self,
        *,
        max_cells: int = 512,
        min_distance_px: int = 8,
        thresholds: tuple[float, float] = (0.42, 0.2),
    ) -> None:
        super().__init__()
        self.net = CellHeatNet(n_out=2)
        self.max_cells = int(max_cells)
        self.min_distance_px = int(min_distance_px)
        self.thresholds = (float(thresholds[0]), float(thresholds[1]))

    def heat(self, x: torch.Tensor) -> torch.Tensor:
        """Return (B, 2, H / 2, W / 2) sigmoid heat maps."""
        return torch.sigmoid(self.net(x).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return (B, 2, K, 3): per channel, K peaks as (row, col, height); height −1 = none."""
        h = self.heat(x)
        r = max(1, round(self.min_distance_px / HEAT_STRIDE))
        mx = max_filter(h, r)
        thr = torch.tensor(self.thresholds, device=h.device, dtype=h.dtype).view(1, 2, 1, 1)
        score = torch.where((h >= mx) & (h >= thr), h, torch.full_like(h, -1.0))
        b, c, hh, ww = score.shape
        k = min(self.max_cells, hh * ww)
        val, idx = score.view(b, c, -1).topk(k, dim=2)
        s, off = float(HEAT_STRIDE), (HEAT_STRIDE - 1) / 2
        rows = (idx // ww).float() * s + off
        cols = (idx % ww).float() * s + off
        return torch.stack([rows, cols, val], dim=-1)
