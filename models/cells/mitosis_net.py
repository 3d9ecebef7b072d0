"""The tile-level mitosis detector: haematoxylin candidates + a crop classifier, all in torch.

One forward pass takes a batch of normalised tiles at 0.25 µm/px and returns, per tile, up to
``max_candidates`` candidate centres with class probabilities (negative, typical, atypical,
tripolar: ``MITOSIS_CLASSES``). The
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
from models.device import exact

#: RGB normalisation of every cell network: ``(x / 255 − MEAN) / STD``.
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)
CROP_PX = 64


def max_filter(h: torch.Tensor, radius: int) -> torch.Tensor:
    """Return the (2·radius + 1)² moving maximum of (B, C, H, W) ``h`` (borders: −inf padding).

    Done as a row pass then a column pass, each by doubling windows (the maximum of two shifted
    copies covers twice the window): identical to one square ``max_pool2d`` (a maximum has no
    rounding) and, for the 13 × 13 grid-pixel window of the mitosis pass, about 1.6× cheaper on
    CPU than two 1-D ``max_pool2d`` passes, which were already 8× cheaper than the square one.
    """
    return _moving_max(_moving_max(h, radius, 3), radius, 2)


def _moving_max(h: torch.Tensor, radius: int, dim: int) -> torch.Tensor:
    """Moving maximum over ``[i − radius, i + radius]`` along ``dim`` (2 or 3), −inf outside."""
    size, n = 2 * radius + 1, h.shape[dim]
    pad = (radius, radius, 0, 0) if dim == 3 else (0, 0, radius, radius)
    m = F.pad(h, pad, value=float("-inf"))
    width = 1  # m[i] = max of the padded input over [i, i + width)
    while width < size:
        step = min(width, size - width)
        length = m.shape[dim] - step
        m = torch.maximum(m.narrow(dim, 0, length), m.narrow(dim, step, length))
        width += step
    return m.narrow(dim, 0, n)


def band_matrix(kernel: torch.Tensor, n: int) -> torch.Tensor:
    """(n, n) matrix ``G`` with ``G @ v`` = ``v`` convolved with ``kernel``, replicate-padded.

    Row ``i`` holds the taps of output ``i``; a tap past either end lands on the end sample, as
    replicate padding repeats it. One dense product of a tile plane with this matrix is the
    separable Gaussian's pass along that axis, the same sums in another order (within float
    rounding of the 1-D convolution), and on CPU several times cheaper than a one-channel
    ``conv2d``, which oneDNN runs at well under a GFLOP/s.
    """
    taps = kernel.numel()
    r = taps // 2
    idx = (torch.arange(n).view(-1, 1) + torch.arange(taps).view(1, -1) - r).clamp_(0, n - 1)
    g = torch.zeros((n, n), dtype=torch.float64)
    g.scatter_add_(1, idx, kernel.double().cpu().view(1, -1).expand(n, -1).contiguous())
    return g.to(device=kernel.device, dtype=torch.float32)


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
        n_classes: classifier outputs (4: negative, typical, atypical, tripolar).
        stride: the candidate search runs on a grid this many input pixels apart (2: the
            haematoxylin OD is averaged over 2 × 2 pixels, i.e. 0.5 µm at 0.25 µm/px, before
            smoothing and peak finding; 4× less work than at full resolution, and a candidate
            centre moves by at most half a pixel, far inside the 7.5 µm matching radius).
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
        stride: int = 2,
        n_classes: int = 4,
    ) -> None:
        super().__init__()
        self.n_classes = int(n_classes)
        self.classifier = MitosisNet(n_classes=self.n_classes)
        self.min_od = float(min_od)
        self.max_candidates = int(max_candidates)
        self.crop_px = int(crop_px)
        self.crop_chunk = 1024  # crops per classifier call: bounds activation memory
        self.tta_floor = 1.0  # candidates with P(mitosis) ≥ this are re-scored over 8 views
        self.margin_px = 0.0  # tile margin whose candidates a scanned neighbour owns (forward)
        self.mpp = float(mpp)
        self.min_distance_um = float(min_distance_um)
        inv = np.linalg.pinv(HED.vectors)[:, 0].astype(np.float32)
        self.register_buffer("h_col", torch.from_numpy(inv).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("kernel", torch.zeros(1), persistent=False)
        self._set_grid(stride, sigma_um)
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)

    def configure(
        self,
        *,
        min_od: float,
        sigma_um: float,
        max_candidates: int,
        stride: int = 2,
        tta_floor: float = 1.0,
        margin_px: float = 0.0,
    ) -> None:
        """Set the candidate stage's thresholds, grid stride, re-scoring floor and tile margin.

        The values come from ``MitosisSettings``; ``tta_floor`` ≥ 1 turns re-scoring off;
        ``margin_px`` is the accumulator's margin (half the tile overlap, input px).
        """
        self.tta_floor = float(tta_floor)
        self.margin_px = float(margin_px)
        self.min_od = float(min_od)
        self.max_candidates = int(max_candidates)
        self._set_grid(stride, sigma_um)

    def _set_grid(self, stride: int, sigma_um: float) -> None:
        """Candidate grid stride, its peak-separation radius and Gaussian (grid pixels)."""
        self.stride = int(stride)
        self.nms_px = max(1, round(self.min_distance_um / (self.mpp * self.stride)))
        self.kernel = _gaussian_kernel(sigma_um / (self.mpp * self.stride)).to(self.kernel.device)
        self._bands: dict[tuple[int, str], torch.Tensor] = {}

    def _band(self, n: int, device: torch.device) -> torch.Tensor:
        """The cached (n, n) Gaussian band matrix of this grid (``band_matrix``)."""
        key = (n, str(device))
        if key not in self._bands:
            self._bands[key] = band_matrix(self.kernel.to(device), n)
        return self._bands[key]

    def haematoxylin(self, x: torch.Tensor) -> torch.Tensor:
        """Return the smoothed haematoxylin OD of normalised RGB (B, 3, H, W).

        The result is (B, 1, H / stride, W / stride): the OD is averaged over stride × stride
        pixels before the (separable) Gaussian.
        """
        b, c, height, width = x.shape
        # (B, H, W, C) pixels (a view of a channels_last batch): one float copy transformed in
        # place, then the channel weighting as a (…, C) @ (C, 1) product; the one-channel plane
        # comes out in plain NCHW strides (CPU pooling kernels are several times slower on a
        # one-channel plane with channels_last strides)
        px = x.float().permute(0, 2, 3, 1)
        log_rgb = torch.addcmul(self.mean.view(c), px, self.std.view(c))
        log_rgb.clamp_(1.0 / 255.0, 1.0).log10_()
        h = (log_rgb @ self.h_col.view(c, 1).neg()).view(b, 1, height, width)
        if self.stride > 1:
            h = F.avg_pool2d(h, self.stride, ceil_mode=True)
        # separable Gaussian, replicate borders: along rows h @ Gᵀ, along columns G @ h
        h = h @ self._band(h.shape[-1], h.device).T
        return torch.matmul(self._band(h.shape[-2], h.device), h)

    def candidates(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (B, K, 2) integer (row, col) candidates in input px and (B, K) their OD.

        An OD of −1 marks padding (fewer than K candidates in the tile).
        """
        h = self.haematoxylin(x)
        mx = max_filter(h, self.nms_px)
        score = torch.where((h >= mx) & (h >= self.min_od), h, torch.full_like(h, -1.0))
        b, _, hh, ww = score.shape
        k = min(self.max_candidates, hh * ww)
        val, idx = score.view(b, -1).topk(k, dim=1)
        rc = torch.stack([idx // ww, idx % ww], dim=-1)
        if self.stride > 1:  # centre of the stride × stride block (crops centre at rc − ½)
            last = torch.tensor([x.shape[-2] - 1, x.shape[-1] - 1], device=rc.device)
            rc = torch.minimum(rc * self.stride + self.stride // 2, last)
        return rc, val

    def _leave_to_neighbours(
        self, rc: torch.Tensor, val: torch.Tensor, neighbours: torch.Tensor, height: int, width: int
    ) -> torch.Tensor:
        """Return ``val`` with −1 (padding) where a candidate lies in a margin a neighbour owns.

        The sides are found exactly as ``PointAccumulator.store_tile`` finds them: row (column)
        below ``margin_px`` is side 0, at or above the size − ``margin_px`` side 2, else 1.
        """
        m = self.margin_px
        r, c = rc[..., 0].float(), rc[..., 1].float()
        di = (r >= m).long() + (r >= height - m).long()
        dj = (c >= m).long() + (c >= width - m).long()
        b = torch.arange(rc.shape[0], device=rc.device).view(-1, 1).expand_as(di)
        owned_elsewhere = neighbours.to(torch.bool)[b, di, dj]
        return torch.where(owned_elsewhere, torch.full_like(val, -1.0), val)

    def crops(self, x: torch.Tensor, rc: torch.Tensor) -> torch.Tensor:
        """Return (B·K, 3, crop, crop) crops centred on ``rc`` (B, K, 2) (padding: white)."""
        b, k = rc.shape[:2]
        bi = torch.arange(b, device=x.device).repeat_interleave(k)
        return self.crops_at(x, bi, rc.reshape(-1, 2))

    def crops_at(self, x: torch.Tensor, bi: torch.Tensor, rc: torch.Tensor) -> torch.Tensor:
        """Return (N, 3, crop, crop) crops of tiles ``bi`` (N,) centred on ``rc`` (N, 2).

        Each crop covers input rows ``r − crop/2 … r + crop/2 − 1`` (likewise columns); pixels
        beyond the tile are white. Each crop is one copy of the part of the tile it covers into
        a white (N, crop, crop, C) buffer, returned as a channels_last view: no padded copy of
        the batch and no index tensor per pixel.
        """
        size, half = self.crop_px, self.crop_px // 2
        n_ch, height, width = x.shape[1], x.shape[2], x.shape[3]
        white = ((1.0 - self.mean) / self.std).to(x.dtype).view(1, 1, 1, -1)
        out = white.expand(len(bi), size, size, n_ch).contiguous()
        src = x.permute(0, 2, 3, 1)  # (B, H, W, C): a plain view of a channels_last batch
        idx = torch.cat([bi.view(-1, 1), rc.view(-1, 2)], 1).tolist()
        for k, (i, r, c) in enumerate(idx):
            r0, c0 = r - half, c - half
            r_lo, r_hi = max(r0, 0), min(r0 + size, height)
            c_lo, c_hi = max(c0, 0), min(c0 + size, width)
            out[k, r_lo - r0 : r_hi - r0, c_lo - c0 : c_hi - c0] = src[i, r_lo:r_hi, c_lo:c_hi]
        return out.permute(0, 3, 1, 2)

    def classify(self, crops: torch.Tensor) -> torch.Tensor:
        """Return (N, n_classes) class probabilities of (N, 3, crop, crop) crops, in chunks."""
        logits = torch.cat([self.classifier(c) for c in torch.split(crops, self.crop_chunk)])
        return torch.softmax(logits.float(), dim=1)

    def rescore(self, crops: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        """Re-score the crops with P(mitosis) ≥ ``tta_floor`` by the mean over the 8 dihedral views.

        A mitotic figure has no orientation, so the classifier's answer should not change under
        flips and 90° rotations; averaging the eight views steadies it where it matters (the few
        candidates near the decision threshold) at a cost proportional to their number only.
        """
        sel = torch.nonzero(probs[:, 1] + probs[:, 2] >= self.tta_floor).flatten()
        if sel.numel() == 0:
            return probs
        c = crops[sel]
        views = [torch.rot90(v, r, dims=(2, 3)) for v in (c, c.flip(3)) for r in range(4)]
        p = self.classify(torch.cat(views)).view(8, -1, self.n_classes).mean(0)
        out = probs.clone()
        out[sel] = p
        return out

    def forward(self, x: torch.Tensor, neighbours: torch.Tensor | None = None) -> torch.Tensor:
        """Return (B, K, 3 + n_classes): row, col, candidate OD, then P(each class).

        Rows with OD < 0 are padding (fewer than K candidates) and carry P(negative) = 1.
        ``neighbours`` (B, 3, 3) bool (``PointAccumulator.neighbours_scanned``) says which
        neighbouring tiles the pass scans: candidates in the margin (``margin_px``) towards one
        of them are that tile's to report, so they are not classified here and come out as
        padding. The top-K selection is made before, so the other candidates are unchanged.
        """
        with exact(x):  # the candidate stage is fixed arithmetic: fp32 under any autocast
            rc, val = self.candidates(x)
        if neighbours is not None and self.margin_px > 0:
            val = self._leave_to_neighbours(rc, val, neighbours, x.shape[-2], x.shape[-1])
        b, k = val.shape
        probs = torch.zeros((b * k, self.n_classes), device=x.device)
        probs[:, 0] = 1.0
        real = torch.nonzero(val.reshape(-1) >= 0).flatten()  # padding is not classified
        if real.numel():
            crops = self.crops_at(x, real // k, rc.reshape(-1, 2)[real])
            crops = crops.contiguous(memory_format=torch.channels_last)
            p = self.classify(crops)
            if self.tta_floor < 1.0:
                p = self.rescore(crops, p)
            probs[real] = p
        return torch.cat([rc.float(), val[..., None].float(), probs.view(b, k, -1)], dim=-1)
