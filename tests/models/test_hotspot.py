"""Densest-circle search: geometry, HPF arithmetic, tumour constraint."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.analyses.hotspot import (
    RegionMask,
    densest_circle,
    hpf_area_from_field_number,
    hpf_circle_area_mm2,
    radius_l0_for_area,
)


def test_radius_of_2mm2_at_40x() -> None:
    # DOMAIN.md: a 2 mm² circle has radius 0.798 mm = 3,192 px at 0.25 µm/px
    assert radius_l0_for_area(2.0, 0.25) == pytest.approx(3191.5, abs=0.5)
    assert radius_l0_for_area(2.0, 0.5) == pytest.approx(1595.8, abs=0.5)


@pytest.mark.parametrize(
    ("fn", "area"), [(18, 0.159), (20, 0.196), (22, 0.237), (25, 0.307), (26.5, 0.345)]
)
def test_hpf_area_from_field_number(fn: float, area: float) -> None:
    assert hpf_area_from_field_number(fn, 40) == pytest.approx(area, abs=0.0015)


def test_ten_hpf_area() -> None:
    assert hpf_circle_area_mm2(0.237, 10) == pytest.approx(2.37)
    r = radius_l0_for_area(hpf_circle_area_mm2(0.237), 0.25)
    assert math.pi * (r * 0.25 / 1000) ** 2 == pytest.approx(2.37)
    with pytest.raises(ValueError, match="hpf_area_mm2"):
        hpf_circle_area_mm2(0.0)


def test_planted_cluster_wins() -> None:
    rng = np.random.default_rng(1)
    background = rng.uniform(0, 40_000, size=(60, 2))
    cluster = rng.normal((30_000, 9_000), 600, size=(25, 2))
    region = RegionMask(np.ones((100, 100), dtype=bool), l0_per_px=400.0)
    hs = densest_circle(
        np.concatenate([background, cluster]), area_mm2=2.0, mpp=0.25, region=region
    )
    assert hs is not None
    assert math.dist(hs.l0_center, (30_000, 9_000)) < 1_500
    assert hs.count >= 25
    # the count equals a brute-force count at the returned centre
    pts = np.concatenate([background, cluster])
    brute = int((np.hypot(*(pts - hs.l0_center).T) <= hs.l0_radius).sum())
    assert hs.count == brute


def test_centre_is_kept_inside_tumour() -> None:
    # a cluster outside the tumour region cannot host the centre
    mask = np.zeros((100, 100), dtype=bool)
    mask[:, :50] = True  # tumour is x < 20,000
    region = RegionMask(mask, l0_per_px=400.0)
    cluster_out = np.random.default_rng(2).normal((35_000, 20_000), 300, size=(20, 2))
    few_in = np.array([[19_000.0, 5_000.0], [19_100.0, 5_050.0]])
    hs = densest_circle(
        np.concatenate([cluster_out, few_in]), area_mm2=2.0, mpp=0.25, region=region
    )
    assert hs is not None
    assert hs.l0_center[0] < 20_000
    assert hs.tumour_fraction < 1.0


def test_no_points_gives_zero_count_in_tumour() -> None:
    region = RegionMask(np.ones((10, 10), dtype=bool), l0_per_px=1000.0)
    hs = densest_circle(np.zeros((0, 2)), area_mm2=2.0, mpp=0.25, region=region)
    assert hs is not None and hs.count == 0
    assert densest_circle(np.zeros((0, 2)), area_mm2=2.0, mpp=0.25) is None
    circle = hs.to_circle("Mitosis hotspot 2 mm²")
    assert circle.measurements["count"] == 0.0
