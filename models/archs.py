"""Small architectures sized for a 2-core CPU, built from ResNet basic blocks; nothing downloaded.

The residual block is the ResNet ``BasicBlock`` (He et al. 2016) written out here with the same
layer names as torchvision's, so the shipped weights load unchanged; importing torchvision only for
it cost 1.4–2.7 s per process (its ``models`` package pulls in ``ops`` and every architecture),
the largest fixed cost of a short analysis stage (profile in ``docs/benchmarks.md``).

Both networks take NCHW float input normalised with the spec's mean/std and are fully convolutional
up to their heads, so they accept any input size that is a multiple of 16.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn


def _conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class BasicBlock(nn.Module):
    """ResNet basic block: two 3 × 3 convolutions with batch norm and a residual connection.

    Args:
        c_in: input channels.
        c_out: output channels.
        stride: stride of the first convolution (2 halves the resolution).
        downsample: the shortcut's projection when the shape changes (None: identity).
    """

    def __init__(
        self, c_in: int, c_out: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)  # type: ignore[no-any-return]


def _down_block(c_in: int, c_out: int) -> BasicBlock:
    """A ResNet ``BasicBlock`` that halves the resolution."""
    down = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=2, bias=False), nn.BatchNorm2d(c_out))
    return BasicBlock(c_in, c_out, stride=2, downsample=down)


class PatternNet(nn.Module):
    """Tile classifier: a 5-stage residual CNN (about 0.6 M parameters, 0.15 GMAC at 224²).

    Args:
        n_classes: number of output logits.
        widths: channels of the stem and the four residual stages.
    """

    def __init__(self, n_classes: int, widths: tuple[int, ...] = (24, 32, 64, 96, 160)) -> None:
        super().__init__()
        stages: list[nn.Module] = [_conv_bn_relu(3, widths[0], stride=2)]
        stages += [_down_block(a, b) for a, b in itertools.pairwise(widths)]
        self.features = nn.Sequential(*stages)
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(widths[-1], n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return (B, n_classes) logits."""
        f = self.features(x)
        out: torch.Tensor = self.head(self.dropout(torch.flatten(F.adaptive_avg_pool2d(f, 1), 1)))
        return out


class _Up(nn.Module):
    """Bilinear ×2 upsampling, concatenation with the skip, two convolutions."""

    def __init__(self, c_in: int, c_skip: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(_conv_bn_relu(c_in + c_skip, c_out), _conv_bn_relu(c_out, c_out))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv(torch.cat([x, skip], dim=1))  # type: ignore[no-any-return]


class SegNet(nn.Module):
    """Small U-Net: a stride-2 stem, three residual down stages, three up stages.

    The logits come out at half the input resolution and are upsampled bilinearly to full size,
    which at 2 µm/px input places boundaries to within about 4 µm.

    Args:
        n_classes: output channels (softmax over them).
        widths: channels of the stem and the three down stages.
    """

    def __init__(self, n_classes: int, widths: tuple[int, ...] = (16, 32, 48, 96)) -> None:
        super().__init__()
        w0, w1, w2, w3 = widths
        self.stem = nn.Sequential(_conv_bn_relu(3, w0, stride=2), _conv_bn_relu(w0, w0))
        self.down1 = _down_block(w0, w1)
        self.down2 = _down_block(w1, w2)
        self.down3 = _down_block(w2, w3)
        self.up2 = _Up(w3, w2, w2)
        self.up1 = _Up(w2, w1, w1)
        self.up0 = _Up(w1, w0, w0)
        self.head = nn.Conv2d(w0, n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return (B, n_classes, H, W) logits at the input resolution."""
        s0 = self.stem(x)
        s1 = self.down1(s0)
        s2 = self.down2(s1)
        s3 = self.down3(s2)
        y = self.up0(self.up1(self.up2(s3, s2), s1), s0)
        y = self.head(y)
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
