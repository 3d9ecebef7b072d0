"""Tissue detection: known areas, pen rejection, the real slide."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.slide_helpers import ellipse_area_px
from wsi import TissueSettings, compute_tissue_mask, open_slide
from wsi.tissue import detect_tissue, pen_ink


def test_known_tissue_area_within_two_percent(ellipse_slide: Path) -> None:
    with open_slide(ellipse_slide) as slide:
        mask = compute_tissue_mask(slide)
        truth_mm2 = ellipse_area_px(*slide.dimensions) * slide.mpp**2 / 1e6
    assert mask.area_mm2 == pytest.approx(truth_mm2, rel=0.02)
    assert mask.mpp == pytest.approx(8.0, rel=0.01)
    assert not mask.mask.flags.writeable


def test_real_slide_has_tissue(real_slide: Path) -> None:
    with open_slide(real_slide) as slide:
        mask = compute_tissue_mask(slide)
        total = slide.area_mm2
    assert 0.2 * total < mask.area_mm2 < 0.9 * total


def _canvas() -> np.ndarray:
    img = np.full((200, 200, 3), 240, np.uint8)
    img[40:160, 40:160] = (210, 120, 180)  # H&E-pink tissue, 120 × 120
    return img


@pytest.mark.parametrize(
    "ink", [(40, 80, 190), (60, 150, 70), (20, 20, 25)], ids=["blue", "green", "black"]
)
def test_pen_ink_is_rejected(ink: tuple[int, int, int]) -> None:
    img = _canvas()
    img[170:185, 20:180] = ink  # a pen stroke on glass
    mask, pen_fraction, _ = detect_tissue(
        img, 8.0, TissueSettings(min_object_um2=0, max_hole_um2=0)
    )
    assert mask[170:185, 30:170].mean() < 0.05
    assert mask[50:150, 50:150].mean() > 0.95
    assert pen_fraction > 0


def test_pen_detector_spares_stain() -> None:
    stains = np.array([[(210, 120, 180), (150, 90, 190), (120, 70, 40), (230, 180, 200)]], np.uint8)
    assert not pen_ink(stains).any()


def test_small_specks_dropped_and_holes_filled() -> None:
    img = _canvas()
    img[10:13, 10:13] = (150, 60, 140)  # a 3 × 3 speck (≈ 576 µm² at 8 µm/px)
    img[95:98, 95:98] = 240  # a tiny hole
    mask, _, _ = detect_tissue(img, 8.0, TissueSettings(min_object_um2=2000, max_hole_um2=2000))
    assert not mask[10:13, 10:13].any()
    assert mask[95:98, 95:98].all()
