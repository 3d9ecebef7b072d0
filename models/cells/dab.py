"""DAB-positive area, and the classical DAB-positive cell detection, on IHC tiles (CD68 / CD163)
after colour deconvolution.

Pure numpy/scipy: a DAB concentration map is thresholded and small specks dropped; that gives the
DAB-positive area fraction. The classical cell detection (``tam.ihc_cells: dab_peaks``) splits
each positive object into cells at the peaks of its distance transform (thin ramified processes
have a small distance to the background, so they never make a cell on their own); the default
cell detection is the learned ``atc-tam-ihc-v1`` (``models.cells.heat_net``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from scipy import ndimage as ndi
from torch import nn

from models.accumulate import BatchMeta
from models.cells.candidates import find_peaks
from models.cells.points import PointAccumulator
from models.cells.stain import StainMatrix


@dataclass(frozen=True)
class DabCells:
    """DAB-positive cells of one tile.

    Attributes:
        rc: (k, 2) (row, col) of each cell, tile pixels.
        positive_px: DAB-positive pixels (after speck removal).
        tissue_px: tissue pixels (total optical density above a floor).
    """

    rc: NDArray[np.int64]
    positive_px: int
    tissue_px: int


def dab_cells(
    dab: NDArray[np.float32],
    od_sum: NDArray[np.float32],
    *,
    mpp: float,
    threshold: float,
    min_cell_um2: float,
    cell_radius_um: float = 4.0,
    min_body_um: float = 2.0,
    tissue_od: float = 0.1,
    core_margin_px: int = 0,
    find_cells: bool = True,
) -> DabCells:
    """Find DAB-positive cells in a DAB concentration map.

    Args:
        dab: (H, W) DAB concentration (OD units) from colour deconvolution.
        od_sum: (H, W) total optical density (for the tissue pixel count).
        mpp: µm/px of the maps.
        threshold: DAB concentration above which a pixel is positive.
        min_cell_um2: smallest positive object counted (µm²).
        cell_radius_um: typical cell-body radius; two cells' centres are at least this apart.
        min_body_um: a cell centre is at least this far (µm) inside the positive object.
        tissue_od: OD sum above which a pixel is tissue.
        core_margin_px: pixel counts skip this many border pixels (the tile overlap share).
        find_cells: False = pixel counts only (no cells).
    """
    smooth = ndi.gaussian_filter(np.asarray(dab, dtype=np.float32), sigma=max(0.5 / mpp, 0.5))
    pos = smooth > threshold
    lab, n = ndi.label(pos)
    if n:
        sizes = np.bincount(lab.ravel())
        small = sizes * mpp**2 < min_cell_um2
        small[0] = False
        pos &= ~small[lab]
    m = int(core_margin_px)
    core = (slice(m, pos.shape[0] - m), slice(m, pos.shape[1] - m))
    tissue_px = int((od_sum[core] > tissue_od).sum())
    if not pos.any() or not find_cells:
        return DabCells(np.zeros((0, 2), dtype=np.int64), int(pos[core].sum()), tissue_px)
    dist = ndi.distance_transform_edt(pos).astype(np.float32) * mpp  # µm to the background
    peaks = find_peaks(
        dist, threshold=min_body_um, min_distance_px=max(1, round(cell_radius_um / mpp))
    )
    lab, n = ndi.label(pos)
    # every kept object holds at least one cell: add the deepest pixel of objects without a peak
    has = np.zeros(n + 1, dtype=bool)
    has[lab[peaks[:, 0], peaks[:, 1]]] = True
    missing = [i for i in range(1, n + 1) if not has[i]]
    if missing:
        extra = ndi.maximum_position(dist, lab, missing)
        peaks = np.concatenate([peaks, np.asarray(extra, dtype=np.int64).reshape(-1, 2)])
    return DabCells(peaks.astype(np.int64), int(pos[core].sum()), tissue_px)


class DabDeconvolution(nn.Module):
    """Per-pixel DAB concentration and total optical density from normalised RGB tiles.

    Args:
        matrix: stain matrix whose row ``dab_row`` is DAB (per-slide estimate or reference).
        dab_row: index of the DAB row.
        mean, std: the input normalisation to undo (as in the spec).
    """

    unmix: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        matrix: StainMatrix,
        dab_row: int,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
    ) -> None:
        super().__init__()
        inv = np.linalg.pinv(matrix.vectors)[:, dab_row].astype(np.float32)
        self.register_buffer("unmix", torch.from_numpy(inv).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return (B, 2, H, W): DAB concentration (clipped at 0) and total OD."""
        rgb = (x.float() * self.std + self.mean).clamp(1.0 / 255.0, 1.0)
        od = -torch.log10(rgb)
        dab = (od * self.unmix).sum(1, keepdim=True).clamp_min(0.0)
        return torch.cat([dab, od.sum(1, keepdim=True)], dim=1)


def _no_decode(raw: NDArray[np.float32]) -> NDArray[np.float32]:
    raise NotImplementedError("DabAccumulator decodes in add()")


class DabAccumulator(PointAccumulator):
    """Per-tile DAB-positive cells (level-0 points) plus positive and tissue pixel counts.

    With ``find_cells=False`` only the pixel counts are kept (the cells come from a network).
    """

    def __init__(
        self,
        *,
        mpp: float,
        threshold: float,
        min_cell_um2: float,
        l0_per_px: float,
        tile_px: int,
        margin_px: float,
        find_cells: bool = True,
    ) -> None:
        self.mpp, self.threshold, self.min_cell_um2 = mpp, threshold, min_cell_um2
        self.find_cells = bool(find_cells)
        self.margin = int(margin_px)
        self.counts: dict[int, tuple[int, int]] = {}
        super().__init__(
            "dab", _no_decode, 0, l0_per_px=l0_per_px, tile_px=tile_px, margin_px=margin_px
        )

    def add(self, outputs: Mapping[str, NDArray[np.float32]], meta: BatchMeta) -> None:
        """Detect cells per tile; count positive and tissue pixels inside the non-overlap core."""
        raw = outputs[self.key]
        m = self.margin
        for b, tile in enumerate(meta.index.tolist()):
            if not meta.ok[b]:
                self.counts[int(tile)] = (0, 0)
                self.store_tile(int(tile), meta.l0_xy[b], np.zeros((0, 2)))
                continue
            res = dab_cells(
                raw[b, 0],
                raw[b, 1],
                mpp=self.mpp,
                threshold=self.threshold,
                min_cell_um2=self.min_cell_um2,
                core_margin_px=m,
                find_cells=self.find_cells,
            )
            self.counts[int(tile)] = (res.positive_px, res.tissue_px)
            self.store_tile(int(tile), meta.l0_xy[b], res.rc.astype(np.float64))

    def state(self, index: NDArray[np.int64]) -> dict[str, NDArray[Any]]:
        """Points (as the parent) plus the pixel counts of the tiles ``index``."""
        st = super().state(index)
        st["counts"] = np.array(
            [self.counts.get(int(i), (0, 0)) for i in index], dtype=np.int64
        ).reshape(-1, 2)
        return st

    def load_state(self, index: NDArray[np.int64], state: Mapping[str, NDArray[Any]]) -> None:
        """Restore points and pixel counts."""
        super().load_state(index, state)
        for i, c in zip(index.tolist(), state["counts"], strict=True):
            self.counts[int(i)] = (int(c[0]), int(c[1]))

    def pixel_totals(self) -> tuple[int, int]:
        """Return (DAB-positive px, tissue px) over all tiles (target resolution)."""
        if not self.counts:
            return 0, 0
        arr = np.array(list(self.counts.values()), dtype=np.int64)
        return int(arr[:, 0].sum()), int(arr[:, 1].sum())
