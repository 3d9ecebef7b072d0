"""Small CNNs for the cell analyses: a mitosis crop classifier and a point heat-map network.

Both take float input normalised as ``(rgb / 255 - 0.5) / 0.25`` (see ``normalise``) and are small
enough to train in minutes on 2 CPU cores.
"""

from __future__ import annotations

import torch
from torch import nn


def normalise(images_uint8: torch.Tensor) -> torch.Tensor:
    """Return (N, 3, H, W) float from (N, H, W, 3) uint8: ``(x / 255 − 0.5) / 0.25``."""
    x = images_uint8.permute(0, 3, 1, 2).float().div_(255.0)
    return x.sub_(0.5).div_(0.25)


def _block(cin: int, cout: int, n_conv: int = 2) -> nn.Sequential:
    layers: list[nn.Module] = []
    for k in range(n_conv):
        layers += [
            nn.Conv2d(cin if k == 0 else cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers)


class MitosisNet(nn.Module):
    """Crop classifier (negative / typical / atypical / tripolar) for 64 × 64 crops at 0.25 µm/px.

    A stride-2 stem halves the crop first (chromosome arms of ~1 µm stay 2 px wide), which keeps
    a forward pass near 20 MMAC per crop.
    """

    def __init__(self, n_classes: int = 3, width: int = 16) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(3, w, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(w),
            nn.ReLU(inplace=True),
            _block(w, 2 * w, n_conv=1),
            nn.MaxPool2d(2),
            _block(2 * w, 3 * w),
            nn.MaxPool2d(2),
            _block(3 * w, 4 * w),
            nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(4 * w, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return (N, n_classes) logits."""
        out: torch.Tensor = self.head(self.features(x))
        return out


class CellHeatNet(nn.Module):
    """A small U-Net giving cell-centre heat maps at half the input resolution.

    Cells are at least 4 µm apart, so at 0.5 µm/px input a 1 µm/px output loses nothing and
    costs a third of a full-resolution decoder. Input sides must be multiples of 8; the output is
    (N, n_out, H / 2, W / 2).
    """

    def __init__(self, n_out: int = 2, width: int = 16, in_ch: int = 3) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(
            nn.Conv2d(in_ch, w, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(w),
            nn.ReLU(inplace=True),
        )
        self.e2 = _block(w, w * 3 // 2, n_conv=1)
        self.e3 = _block(w * 3 // 2, 3 * w)
        self.mid = _block(3 * w, 4 * w)
        self.pool = nn.MaxPool2d(2)
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.d3 = _block(4 * w + 3 * w, 2 * w, n_conv=1)
        self.d2 = _block(2 * w + w * 3 // 2, w, n_conv=1)
        self.out = nn.Conv2d(w, n_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return (N, n_out, H / 2, W / 2) logits of the cell-centre heat maps."""
        e2 = self.e2(self.stem(x))
        e3 = self.e3(self.pool(e2))
        m = self.mid(self.pool(e3))
        d3 = self.d3(torch.cat([self.up(m), e3], 1))
        d2 = self.d2(torch.cat([self.up(d3), e2], 1))
        out: torch.Tensor = self.out(d2)
        return out
