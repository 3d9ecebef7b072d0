"""Densest-circle search: the circle of a given area, centred in tumour, holding most points.

Used for the 2 mm² mitosis hotspot (WHO 2022) and the 10-HPF-area circle (Turin). Pure numpy and
scipy; no torch. All coordinates are level-0 pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray
from scipy.spatial import cKDTree

from wsi.results import Circle
from wsi.tissue import TissueMask


class Region(Protocol):
    """Anything that says whether level-0 points lie inside it."""

    def contains(self, l0_xy: NDArray[np.float64]) -> NDArray[np.bool_]:
        """Whether each level-0 (x, y) is inside."""
        ...


def region_tissue_mm2(region: Region, tissue: TissueMask, mpp: float, *also: Region) -> float:
    """Return the tissue area (mm²) inside ``region`` (and every region of ``also``): the
    tissue-mask pixels whose centre they all hold.

    The TAM density divides the cells counted inside the tumour region by this area, so that
    numerator and denominator cover the same ground (the pattern model's viable-tumour area is
    built from tile classes and need not coincide with the region's tiles).
    """
    rows, cols = np.nonzero(tissue.mask)
    if len(rows) == 0:
        return 0.0
    f = tissue.l0_per_px
    centres = np.column_stack([(cols + 0.5) * f, (rows + 0.5) * f])
    inside = region.contains(centres)
    for other in also:
        inside &= other.contains(centres)
    return int(inside.sum()) * (f * mpp / 1000.0) ** 2


@dataclass(frozen=True)
class RegionMask:
    """A coarse boolean raster over the slide saying where a hotspot centre may lie.

    Attributes:
        mask_rc: (rows, cols) bool, True inside tumour.
        l0_per_px: level-0 pixels per mask pixel (same in x and y).
        l0_origin: level-0 (x, y) of the mask's top-left corner.
    """

    mask_rc: NDArray[np.bool_]
    l0_per_px: float
    l0_origin: tuple[float, float] = (0.0, 0.0)

    def contains(self, l0_xy: NDArray[np.float64]) -> NDArray[np.bool_]:
        """Return whether each level-0 (x, y) falls on a True mask pixel (outside = False)."""
        pts = np.asarray(l0_xy, dtype=np.float64).reshape(-1, 2)
        col = np.floor((pts[:, 0] - self.l0_origin[0]) / self.l0_per_px).astype(np.int64)
        row = np.floor((pts[:, 1] - self.l0_origin[1]) / self.l0_per_px).astype(np.int64)
        rows, cols = self.mask_rc.shape
        ok = (row >= 0) & (row < rows) & (col >= 0) & (col < cols)
        out = np.zeros(len(pts), dtype=bool)
        out[ok] = self.mask_rc[row[ok], col[ok]]
        return out

    def area_px_l0(self) -> float:
        """Return the True area in level-0 pixels²."""
        return float(self.mask_rc.sum()) * self.l0_per_px**2


@dataclass(frozen=True)
class Hotspot:
    """The densest circle found.

    Attributes:
        l0_center: level-0 (x, y) of the centre.
        l0_radius: radius in level-0 px.
        area_mm2: circle area in mm².
        count: points inside the circle (distance ≤ radius).
        tumour_fraction: fraction of the circle's area that lies in the region mask (1 without one).
    """

    l0_center: tuple[float, float]
    l0_radius: float
    area_mm2: float
    count: int
    tumour_fraction: float

    def to_circle(self, name: str) -> Circle:
        """Return the hotspot as a ``wsi.results.Circle`` with its measurements."""
        return Circle(
            name=name,
            l0_center=self.l0_center,
            l0_radius=self.l0_radius,
            measurements={
                "count": float(self.count),
                "area_mm2": self.area_mm2,
                "tumour_fraction": self.tumour_fraction,
            },
        )


def radius_l0_for_area(area_mm2: float, mpp: float) -> float:
    """Return the level-0 radius (px) of a circle of ``area_mm2`` at ``mpp`` µm/px."""
    if area_mm2 <= 0 or mpp <= 0:
        raise ValueError(f"area_mm2 and mpp must be > 0, got area_mm2={area_mm2}, mpp={mpp}")
    return math.sqrt(area_mm2 * 1e6 / math.pi) / mpp


def hpf_circle_area_mm2(hpf_area_mm2: float, n_hpf: int = 10) -> float:
    """Return the area of ``n_hpf`` high-power fields in mm² (10 × 0.237 = 2.37 for FN 22)."""
    if hpf_area_mm2 <= 0 or n_hpf < 1:
        raise ValueError(f"need hpf_area_mm2 > 0 and n_hpf >= 1, got {hpf_area_mm2}, {n_hpf}")
    return hpf_area_mm2 * n_hpf


def hpf_area_from_field_number(field_number_mm: float, objective: float = 40.0) -> float:
    """Return one HPF's area in mm² from the eyepiece field number and objective power."""
    if field_number_mm <= 0 or objective <= 0:
        raise ValueError(
            f"field number and objective must be > 0, got {field_number_mm}, {objective}"
        )
    diameter = field_number_mm / objective
    return math.pi * (diameter / 2) ** 2


def _candidate_centres(
    l0_xy: NDArray[np.float64], region: RegionMask | None, step_l0: float
) -> NDArray[np.float64]:
    """Return grid centres (every ``step_l0`` px over the region or points) plus the points."""
    if region is not None:
        rows, cols = region.mask_rc.shape
        x0, y0 = region.l0_origin
        x1, y1 = x0 + cols * region.l0_per_px, y0 + rows * region.l0_per_px
    else:
        x0, y0 = l0_xy.min(axis=0)
        x1, y1 = l0_xy.max(axis=0) + 1.0
    xs = np.arange(x0 + step_l0 / 2, x1, step_l0)
    ys = np.arange(y0 + step_l0 / 2, y1, step_l0)
    gx, gy = np.meshgrid(xs, ys)
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1)
    cands = np.concatenate([grid, l0_xy], axis=0)
    if region is not None:
        cands = cands[region.contains(cands)]
    return cands


def _tumour_fraction(
    region: RegionMask | None, centre: NDArray[np.float64], radius: float
) -> float:
    """Return the fraction of a circle's area lying on True region pixels (sampled on a grid)."""
    if region is None:
        return 1.0
    n = 41
    offs = np.linspace(-radius, radius, n)
    ox, oy = np.meshgrid(offs, offs)
    inside = ox**2 + oy**2 <= radius**2
    pts = np.stack([ox[inside] + centre[0], oy[inside] + centre[1]], axis=1)
    return float(region.contains(pts).mean())


def densest_circle(
    l0_xy: NDArray[np.float64],
    *,
    area_mm2: float,
    mpp: float,
    region: RegionMask | None = None,
    step_um: float = 50.0,
) -> Hotspot | None:
    """Find the circle of ``area_mm2`` whose centre lies in ``region`` holding the most points.

    Centres are searched on a grid of ``step_um`` over the region plus every point itself, then
    refined on a 5× finer grid around the best; ties go to the centre with the smallest mean
    distance to its points (the most compact cluster).

    Args:
        l0_xy: (k, 2) level-0 (x, y) of the points (e.g. mitoses).
        area_mm2: circle area (2.0 for the WHO hotspot, 10 × HPF area for Turin).
        mpp: level-0 µm/px.
        region: where the centre may lie (tumour); ``None`` allows anywhere.
        step_um: coarse search step in µm.

    Returns:
        The hotspot, or ``None`` when there is no region (and no point) to place it in.
    """
    pts = np.asarray(l0_xy, dtype=np.float64).reshape(-1, 2)
    radius = radius_l0_for_area(area_mm2, mpp)
    step = step_um / mpp
    if len(pts) == 0 and (region is None or not region.mask_rc.any()):
        return None
    if len(pts) == 0:
        assert region is not None
        rr, cc = np.nonzero(region.mask_rc)
        mid = len(rr) // 2
        centre = np.array(
            [
                region.l0_origin[0] + (cc[mid] + 0.5) * region.l0_per_px,
                region.l0_origin[1] + (rr[mid] + 0.5) * region.l0_per_px,
            ]
        )
        return Hotspot(
            (float(centre[0]), float(centre[1])),
            radius,
            area_mm2,
            0,
            _tumour_fraction(region, centre, radius),
        )
    tree = cKDTree(pts)
    best = _best_centre(tree, _candidate_centres(pts, region, step), radius)
    if best is None:
        return None
    fine = np.linspace(-step, step, 11)
    fx, fy = np.meshgrid(fine, fine)
    local = np.stack([fx.ravel() + best[0], fy.ravel() + best[1]], axis=1)
    if region is not None:
        local = local[region.contains(local)]
    refined = _best_centre(tree, np.concatenate([best[None, :], local]), radius)
    centre = best if refined is None else refined
    count = int(tree.query_ball_point(centre, radius, return_length=True))
    return Hotspot(
        (float(centre[0]), float(centre[1])),
        radius,
        area_mm2,
        count,
        _tumour_fraction(region, centre, radius),
    )


def _best_centre(
    tree: cKDTree, cands: NDArray[np.float64], radius: float
) -> NDArray[np.float64] | None:
    """Return the candidate with the most points within ``radius`` (compactness breaks ties)."""
    if len(cands) == 0:
        return None
    counts = np.asarray(tree.query_ball_point(cands, radius, return_length=True))
    top = np.flatnonzero(counts == counts.max())
    if len(top) == 1:
        return np.asarray(cands[top[0]], dtype=np.float64)
    data = tree.data
    spread = []
    for i in top[:2000]:
        idx = tree.query_ball_point(cands[i], radius)
        d = np.hypot(*(data[idx] - cands[i]).T) if idx else np.array([0.0])
        spread.append(float(d.mean()))
    return np.asarray(cands[top[int(np.argmin(spread))]], dtype=np.float64)
