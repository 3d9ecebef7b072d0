"""One-to-one point matching within 7.5 µm (MIDOG convention) and candidate utilities."""

from __future__ import annotations

import numpy as np
import pytest

from models.cells.candidates import find_peaks, nms_points
from models.cells.matching import match_points


def test_one_to_one() -> None:
    truth = np.array([[0.0, 0.0], [100.0, 0.0]])
    # two predictions near the first truth point: only one may match it
    pred = np.array([[2.0, 0.0], [-3.0, 0.0], [120.0, 0.0]])
    m = match_points(pred, truth, radius=30.0)
    assert (m.tp, m.fp, m.fn) == (2, 1, 0)
    assert m.f1 == pytest.approx(0.8)


def test_radius_is_respected() -> None:
    m = match_points(np.array([[0.0, 30.1]]), np.array([[0.0, 0.0]]), radius=30.0)
    assert (m.tp, m.fp, m.fn) == (0, 1, 1)
    assert m.f1 == 0.0


def test_maximum_matching_not_greedy() -> None:
    # greedy nearest-first would pair p0-t1 and leave t0 unmatched
    truth = np.array([[0.0, 0.0], [20.0, 0.0]])
    pred = np.array([[12.0, 0.0], [35.0, 0.0]])
    m = match_points(pred, truth, radius=16.0)
    assert m.tp == 2


def test_empty_sets() -> None:
    m = match_points(np.zeros((0, 2)), np.zeros((0, 2)), radius=5)
    assert m.f1 == 1.0 and m.precision == 1.0 and m.recall == 1.0
    m = match_points(np.zeros((0, 2)), np.ones((3, 2)), radius=5)
    assert (m.tp, m.fn, m.recall) == (0, 3, 0.0)


def test_find_peaks_and_nms() -> None:
    heat = np.zeros((50, 50), dtype=np.float32)
    heat[10, 10] = 1.0
    heat[10, 13] = 0.9  # suppressed by the 5 px window
    heat[40, 40] = 0.7
    heat[30, 5] = 0.2  # below threshold
    rc = find_peaks(heat, threshold=0.5, min_distance_px=5)
    assert sorted(map(tuple, rc.tolist())) == [(10, 10), (40, 40)]
    keep = nms_points(np.array([[0.0, 0], [3, 0], [50, 0]]), np.array([0.5, 0.9, 0.1]), 5.0)
    assert keep.tolist() == [1, 2]
