"""Macrophage detectors: cell-centre heat-map networks with in-graph peak finding.

``MacrophageDetector`` (H&E) takes normalised RGB; ``IhcMacrophageDetector`` (CD68 / CD163)
first unmixes the tile into haematoxylin and DAB concentrations with the slide's own stain
vectors (colour deconvolution in the graph) and finds DAB-positive cell centres in those.

Output per tile: up to ``max_cells`` peaks per channel (macrophage, any nucleated cell) as
(row, col, height) in input pixels, so only small arrays leave the device. The heat maps are at
half the input resolution (``HEAT_STRIDE``); peak coordinates are mapped back to input pixels.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from models.cells.mitosis_net import max_filter
from models.cells.nets import CellHeatNet
from models.cells.stain import HDAB, StainMatrix
from models.device import exact

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

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Return (B, 2, H / 2, W / 2) heat-map logits (what training fits)."""
        out: torch.Tensor = self.net(x)
        return out

    def heat(self, x: torch.Tensor) -> torch.Tensor:
        """Return (B, 2, H / 2, W / 2) sigmoid heat maps."""
        return torch.sigmoid(self.logits(x).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return (B, 2, K, 3): per channel, K peaks as (row, col, height); height −1 = none."""
        return self.peaks(self.heat(x))

    def peaks(self, h: torch.Tensor) -> torch.Tensor:
        """Return (B, 2, K, 3) peaks of (B, 2, H / 2, W / 2) sigmoid heat maps."""
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


class IhcMacrophageDetector(MacrophageDetector):
    """DAB-positive cell centres (channel 0) and all nucleated cells (channel 1) on DAB IHC.

    The tile is unmixed in the graph: optical density, then haematoxylin and DAB concentrations
    (OD units) by least squares on two stain vectors. The heat network sees only the two
    concentrations, always unmixed with the reference H-DAB vectors it was trained with (colour
    augmentation in training stands for the slide-to-slide differences). The DAB map returned
    for the positive-area fraction is unmixed with the slide's own vectors once ``set_stains``
    gives them.

    Args:
        mean, std: the input normalisation to undo (as in the model spec).
        with_dab: also return the DAB concentration and total OD maps (for the positive-area
            fraction), as a second output.
    """

    unmix: torch.Tensor
    area_unmix: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        *,
        mean: tuple[float, float, float] = (0.5, 0.5, 0.5),
        std: tuple[float, float, float] = (0.25, 0.25, 0.25),
        with_dab: bool = False,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.net = CellHeatNet(n_out=2, in_ch=2)
        self.with_dab = bool(with_dab)
        self.register_buffer("unmix", _least_squares(HDAB), persistent=False)
        self.register_buffer("area_unmix", _least_squares(HDAB), persistent=False)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def set_stains(self, matrix: StainMatrix, dab_row: int = 1) -> None:
        """Unmix the returned DAB map with ``matrix`` (row 0 haematoxylin, ``dab_row`` DAB)."""
        self.area_unmix.copy_(_least_squares(matrix, dab_row))

    def _od(self, x: torch.Tensor) -> torch.Tensor:
        rgb = (x.float() * self.std + self.mean).clamp(1.0 / 255.0, 1.0)
        return -torch.log10(rgb)

    def concentrations(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ((B, 2, H, W) reference H and DAB concentrations, (B, 1, H, W) total OD)."""
        od = self._od(x)
        return torch.einsum("bchw,cs->bshw", od, self.unmix), od.sum(1, keepdim=True)

    def _logits_from_od(self, od: torch.Tensor) -> torch.Tensor:
        with exact(od):  # the unmixing is fixed arithmetic: fp32 under any autocast
            conc = torch.einsum("bchw,cs->bshw", od, self.unmix) * 2.0
        out: torch.Tensor = self.net(conc)
        return out

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Return heat-map logits from the unmixed concentrations (scaled to about unit range)."""
        return self._logits_from_od(self._od(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        """Peaks as ``MacrophageDetector``; with ``with_dab`` also (B, 2, H, W) DAB and OD sum."""
        od = self._od(x)  # once per tile, for the network input and the DAB map
        peaks = self.peaks(torch.sigmoid(self._logits_from_od(od).float()))
        if not self.with_dab:
            return peaks
        with exact(od):
            dab = torch.einsum("bchw,c->bhw", od, self.area_unmix[:, 1]).unsqueeze(1)
        return peaks, torch.cat([dab.clamp_min(0.0), od.sum(1, keepdim=True)], dim=1)


def _least_squares(matrix: StainMatrix, dab_row: int = 1) -> torch.Tensor:
    """(3, 2) OD -> (haematoxylin, DAB) concentrations, least squares on the two real stains."""
    inv = np.linalg.pinv(matrix.vectors[[0, dab_row]]).astype(np.float32)
    return torch.from_numpy(inv)
