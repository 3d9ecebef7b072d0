"""Stain and geometric augmentation on uint8 RGB batches, in torch, on whatever device.

Stain augmentation works in optical density: each pixel is unmixed into haematoxylin, eosin and a
residual channel with the Ruifrok–Johnston vectors, each concentration is scaled and shifted by a
random per-image amount, and the result is mixed back (the HED-jitter of Tellez et al., 2018).
The stain vectors themselves are perturbed per image (lab-to-lab hue), and ``StainAugment.real()``
widens every range to span the real H&E of several labs and scanners: saturation and gamma changes,
defocus blur and JPEG re-compression at scanner-like qualities (Tellez et al. 2019 found such broad
HSV/HED jitter the best single defence against an unseen centre's colour).
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
        saturation: max relative change of the colour saturation (distance from grey).
        gamma: max relative change of the gamma (contrast curve of the scanner).
        jpeg_p: probability of a JPEG re-compression (scanners store tiles as JPEG).
        jpeg_quality: range of JPEG qualities drawn from.
        lowres_p: probability that an image is seen as a scanner at half the resolution would
            give it to the pipeline: 2 × 2 area-averaged, then bilinearly upsampled back, as
            ``wsi.tiling.TileReader`` upsamples a 0.5 µm/px slide for a 0.25 µm/px model.
    """

    sigma_scale: float = 0.25
    sigma_shift: float = 0.03
    sigma_vector: float = 0.10
    brightness: float = 0.08
    blur_p: float = 0.15
    noise_std: float = 0.01
    saturation: float = 0.0
    gamma: float = 0.0
    jpeg_p: float = 0.0
    jpeg_quality: tuple[int, int] = (50, 95)
    lowres_p: float = 0.0

    @classmethod
    def real(cls) -> StainAugment:
        """Ranges that span real H&E from different labs and scanners (used with real data).

        Measured on 40 images per source of ``../shared/data/real``: the mean haematoxylin
        concentration of tissue pixels differs several-fold between sources (Ruifrok OD 0.08 to
        0.56; within a source ±0.07 to ±0.14), so the concentration and vector jitter are wider
        than the synthetic-only defaults; what jitter cannot span is left to per-slide stain
        normalisation.
        """
        return cls(
            sigma_scale=0.35,
            sigma_shift=0.05,
            sigma_vector=0.15,
            brightness=0.15,
            blur_p=0.3,
            noise_std=0.015,
            saturation=0.25,
            gamma=0.2,
            jpeg_p=0.5,
            jpeg_quality=(40, 95),
        )


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


def half_resolution(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] as a scan at half the resolution, upsampled back to (H, W).

    2 × 2 area average (what a 20× scan holds of a 40× field, optics aside), then bilinear
    upsampling (PIL's ``BILINEAR``, which ``wsi.tiling`` uses to bring a 0.5 µm/px read to a
    0.25 µm/px model). Nuclear texture that tells a fibroblast from a condensed figure at 40×
    is lost the way it is lost on a real 20× slide.
    """
    small = torch.nn.functional.avg_pool2d(x, 2, ceil_mode=True)
    return torch.nn.functional.interpolate(
        small, size=x.shape[-2:], mode="bilinear", align_corners=False
    ).clamp(0, 1)


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


def colour_jitter(x: torch.Tensor, aug: StainAugment, gen: torch.Generator) -> torch.Tensor:
    """Per-image saturation and gamma change of (B, 3, H, W) RGB in [0, 1]."""
    b = x.shape[0]
    if aug.saturation > 0:
        sat = 1 + aug.saturation * (2 * torch.rand(b, 1, 1, 1, generator=gen) - 1)
        grey = x.mean(dim=1, keepdim=True)
        x = grey + (x - grey) * sat.to(x.device)
    if aug.gamma > 0:
        g = 1 + aug.gamma * (2 * torch.rand(b, 1, 1, 1, generator=gen) - 1)
        x = x.clamp(0, 1) ** g.to(x.device)
    return x.clamp(0, 1)


def jpeg_recompress(x: torch.Tensor, quality: int) -> torch.Tensor:
    """JPEG-encode and decode (N, 3, H, W) RGB in [0, 1] at ``quality`` (CPU, via Pillow)."""
    import io

    import numpy as np
    from PIL import Image

    arr = (x.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = np.empty_like(arr)
    for i, img in enumerate(arr):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=int(quality))
        buf.seek(0)
        out[i] = np.asarray(Image.open(buf).convert("RGB"))
    return torch.from_numpy(out).permute(0, 3, 1, 2).float().to(x.device) / 255.0


def augment_batch(images: torch.Tensor, aug: StainAugment, gen: torch.Generator) -> torch.Tensor:
    """Stain-jitter, blur and noise a (B, H, W, 3) uint8 batch; returns (B, 3, H, W) in [0, 1]."""
    x = images.permute(0, 3, 1, 2).float() / 255.0
    if aug.lowres_p > 0:
        pick = torch.rand(x.shape[0], generator=gen) < aug.lowres_p
        if pick.any():
            x[pick] = half_resolution(x[pick])
    x = stain_jitter(x, aug, gen)
    x = colour_jitter(x, aug, gen)
    if aug.blur_p > 0:
        pick = torch.rand(x.shape[0], generator=gen) < aug.blur_p
        if pick.any():
            x[pick] = _blur(x[pick])
    if aug.noise_std > 0:
        x = x + aug.noise_std * torch.randn(x.shape, generator=gen).to(x.device)
    if aug.jpeg_p > 0:
        pick = torch.rand(x.shape[0], generator=gen) < aug.jpeg_p
        if pick.any():
            lo, hi = aug.jpeg_quality
            q = int(torch.randint(lo, hi + 1, (1,), generator=gen))
            x[pick] = jpeg_recompress(x[pick], q)
    return x.clamp(0, 1)


def normalise(
    x: torch.Tensor, mean: tuple[float, float, float], std: tuple[float, float, float]
) -> torch.Tensor:
    """Apply a spec's mean/std to (B, 3, H, W) RGB in [0, 1] (as the engine does)."""
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s
