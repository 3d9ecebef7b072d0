"""One-to-one point matching within a radius (the MIDOG convention: 7.5 µm) and its metrics."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree


@dataclass(frozen=True)
class MatchResult:
    """Counts of a one-to-one matching of predictions to truth.

    Attributes:
        pairs: (m, 2) int indices (prediction, truth) of matched pairs.
        tp: matched pairs; fp: unmatched predictions; fn: unmatched truth points.
    """

    pairs: NDArray[np.int64]
    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float:
        """Return TP / (TP + FP), 1.0 when nothing was predicted and nothing was true."""
        denom = self.tp + self.fp
        return self.tp / denom if denom else float(self.fn == 0)

    @property
    def recall(self) -> float:
        """Return TP / (TP + FN), 1.0 when there is no truth and no prediction."""
        denom = self.tp + self.fn
        return self.tp / denom if denom else float(self.fp == 0)

    @property
    def f1(self) -> float:
        """Return 2 TP / (2 TP + FP + FN), 1.0 when both sets are empty."""
        denom = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / denom if denom else 1.0


def match_points(
    pred_xy: NDArray[np.float64], true_xy: NDArray[np.float64], radius: float
) -> MatchResult:
    """Match predictions to truth one-to-one, maximising matches then minimising distance.

    Pairs further apart than ``radius`` never match. Each connected group of candidate pairs is
    solved exactly with the Hungarian algorithm, so large slides stay cheap.

    Args:
        pred_xy: (p, 2) predicted (x, y).
        true_xy: (t, 2) true (x, y), same units as ``radius``.
        radius: largest matching distance (e.g. 30 px = 7.5 µm at 0.25 µm/px).
    """
    pred = np.asarray(pred_xy, dtype=np.float64).reshape(-1, 2)
    true = np.asarray(true_xy, dtype=np.float64).reshape(-1, 2)
    if radius <= 0:
        raise ValueError(f"radius must be > 0, got {radius}")
    empty = np.zeros((0, 2), dtype=np.int64)
    if len(pred) == 0 or len(true) == 0:
        return MatchResult(empty, 0, len(pred), len(true))
    sparse = cKDTree(pred).sparse_distance_matrix(cKDTree(true), radius, output_type="ndarray")
    if len(sparse) == 0:
        return MatchResult(empty, 0, len(pred), len(true))
    pi, ti, dist = sparse["i"], sparse["j"], sparse["v"]
    n_p = len(pred)
    graph = coo_matrix((np.ones(len(pi)), (pi, ti + n_p)), shape=(n_p + len(true), n_p + len(true)))
    _, comp = connected_components(graph, directed=False)
    pairs: list[tuple[int, int]] = []
    for c in np.unique(comp[pi]):
        sel = comp[pi] == c
        ps, ts = np.unique(pi[sel]), np.unique(ti[sel])
        # cost: big penalty for non-edges, distance (< radius) otherwise; a match always beats
        # no match because the penalty exceeds the sum of any feasible distances.
        big = radius * (len(ps) + len(ts) + 1)
        cost = np.full((len(ps), len(ts)), big)
        cost[np.searchsorted(ps, pi[sel]), np.searchsorted(ts, ti[sel])] = dist[sel]
        rows, cols = linear_sum_assignment(cost)
        for r, k in zip(rows, cols, strict=True):
            if cost[r, k] < big:
                pairs.append((int(ps[r]), int(ts[k])))
    arr = np.array(pairs, dtype=np.int64).reshape(-1, 2)
    return MatchResult(arr, len(arr), len(pred) - len(arr), len(true) - len(arr))
