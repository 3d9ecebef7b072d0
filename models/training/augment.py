"""Stain and geometric augmentation on uint8 RGB batches, in torch, on whatever device.

Stain augmentation works in optical density: each pixel is unmixed into haematoxylin, eosin and a
residual channel with the Ruifrok–Johnston vectors, each concentration is scaled and shifted by a
random per-image amount, and the result is mixed back (the HED-jitter of Tellez et al., 2018).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: Ruifrok–Johnston optical-density vectors (rows: haematoxylin, eosin, DAB), normalised.
_RJ = torch.tensor(
    [[0.650, 0.704, 0.286], [0.072, 0.990, 0.105], [0.268, 0.570, 0.776]], dtype=torch.float32
)
_RJ = _RJ / _RJ.norm(dim=1, keepdim=True)


@dataclass(frozen=True)
class StainAugment:
    """Strength of the random colour changes.

    Attributes:
        sigma_scale: std of the multiplicative jitter of each stain concentration.
        sigma_shift: std of the additive jitter (optical density units).
        sigma_vector: std of the per-image perturbation of each stain vector before mixing back
            (lab-to-lab differences in stain hue, e.g. a bluer or redder eosin).
        brightness: max relative brightness change.
        blur_p: probability of a mild Gaussian blur (focus variation).
        noise_std: std of additive pixel noise on the [0, 1] scale.
    """

    sigma_scale: float = 0.25
    sigma_shift: float = 0.03
    sigma_vector: float = 0.10
    brightness: float = 0.08
    blur_p: float = 0.15
    noise_std: float = 0.01


def stain_jitter(x: torch.Tensor, aug: StainAugment, gen: torch.Generator) -> torch.Tensor:
    """HED jitter of (B, 3, H, W) float RGB in [0, 1]; returns the same shape in [0, 1]."""
    b = x.shape[0]
    m = _RJ.to(x.device)
    od = -torch.log10(x.clamp_min(1.0 / 255.0))  # (B, 3, H, W)
    conc = torch.einsum("bchw,cs->bshw", od, torch.linalg.inv(m))
    scale = 1 + aug.sigma_scale * torch.randn(b, 3, 1, 1, generator=gen).to(x.device)
    shift = aug.sigma_shift * torch.randn(b, 3, 1, 1, generator=gen).to(x.device)
    conc = conc * scale + shift
    m2 = m.unsqueeze(0) + aug.sigma_vector * torch.randn(b, 3, 3, generator=gen).to(x.device)
    m2 = m2.clamp_min(0.0)
    m2 = m2 / m2.norm(dim=2, keepdim=True).clamp_min(1e-6)
    od2 = torch.einsum("bshw,bsc->bchw", conc, m2)
    out = torch.pow(10.0, -od2)
    bright = 1 + aug.brightness * (2 * torch.rand(b, 1, 1, 1, generator=gen).to(x.device) - 1)
    return (out * bright).clamp(0, 1)


def _blur(x: torch.Tensor) -> torch.Tensor:
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], device=x.device) / 16.0
    kx = k.view(1, 1, 1, 5).repeat(3, 1, 1, 1)
    ky = k.view(1, 1, 5, 1).repeat(3, 1, 1, 1)
    x = torch.nn.functional.conv2d(
        torch.nn.functional.pad(x, (2, 2, 0, 0), mode="reflect"), kx, groups=3
    )
    return torch.nn.functional.conv2d(
        torch.nn.functional.pad(x, (0, 0, 2, 2), mode="reflect"), ky, groups=3
    )


def geometric(
    x: torch.Tensor, y: torch.Tensor | None, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Random flips and 90° rotations (one per batch), applied alike to images and label maps.

    Args:
        x: (B, C, H, W) images.
        y: (B, H, W) or (B, K, H, W) targets to transform alike, or None (classification).
    """
    k = int(torch.randint(0, 4, (1,), generator=gen))
    flip = bool(torch.randint(0, 2, (1,), generator=gen))
    x = torch.rot90(x, k, dims=(-2, -1))
    if flip:
        x = torch.flip(x, dims=(-1,))
    if y is not None:
        y = torch.rot90(y, k, dims=(-2, -1))
        if flip:
            y = torch.flip(y, dims=(-1,))
    return x.contiguous(), (y.contiguous() if y is not None else None)


def augment_batch(images: torch.Tensor, aug: StainAugment, gen: torch.Generator) -> torch.Tensor:
    """Stain-jitter, blur and noise a (B, H, W, 3) uint8 batch; returns (B, 3, H, W) in [0, 1]."""
    x = images.permute(0, 3, 1, 2).float() / 255.0
    x = stain_jitter(x, aug, gen)
    if aug.blur_p > 0:
        pick = torch.rand(x.shape[0], generator=gen) < aug.blur_p
        if pick.any():
            x[pick] = _blur(x[pick])
    if aug.noise_std > 0:
        x = x + aug.noise_std * torch.randn(x.shape, generator=gen).to(x.device)
    return x.clamp(0, 1)


def normalise(
    x: torch.Tensor, mean: tuple[float, float, float], std: tuple[float, float, float]
) -> torch.Tensor:
    """Apply a spec's mean/std to (B, 3, H, W) RGB in [0, 1] (as the engine does)."""
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s
