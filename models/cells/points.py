"""A per-tile point accumulator for the engine: detections in tile pixels → level-0 points.

Each tile's detections are kept under its grid index, so the engine's chunk checkpoints can save
and restore exactly the tiles of a chunk. A detection inside the overlap margin of a tile is left
to the neighbouring tile that sees it away from its border — when that neighbour is scanned; when
it is not (a tile outside the tumour the pass is gated to, or beyond the lattice), the tile keeps
it. Level-0 duplicates are suppressed at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from models.accumulate import BatchMeta
from wsi.tiling import TileGrid

#: Turns one tile's raw output into (n, 2 + F) rows: row, col (tile px) then F features.
TileDecoder = Callable[[NDArray[np.float32]], NDArray[np.float32]]


class PointAccumulator:
    """Collect per-tile point detections as level-0 coordinates.

    Args:
        key: which engine output holds the per-tile raw detections.
        decode: per-tile decoder to (n, 2 + F) rows (row, col in tile pixels, features).
        n_features: F.
        l0_per_px: level-0 pixels per tile pixel (target mpp / slide mpp).
        tile_px: tile edge in tile pixels.
        margin_px: detections closer than this to a tile edge are left to the neighbour on that
            side (half the overlap).
        grid: the tile grid, to know the neighbours (None: margins are always dropped).
        scanned: grid indices the pass processes (None with a grid: all of them).
    """

    def __init__(
        self,
        key: str,
        decode: TileDecoder,
        n_features: int,
        *,
        l0_per_px: float,
        tile_px: int,
        margin_px: float,
        grid: TileGrid | None = None,
        scanned: NDArray[np.int64] | None = None,
    ) -> None:
        self.key = key
        self.decode = decode
        self.n_features = n_features
        self.l0_per_px = float(l0_per_px)
        self.tile_px = int(tile_px)
        self.margin_px = float(margin_px)
        self.rows: dict[int, NDArray[np.float64]] = {}
        self._ij: NDArray[np.int32] | None = None
        self._lattice: NDArray[np.bool_] | None = None  # (rows + 2, cols + 2): scanned, padded
        if grid is not None:
            rows, cols = grid.grid_shape
            lattice = np.zeros((rows + 2, cols + 2), dtype=bool)
            ij = np.asarray(grid.grid_ij)
            idx = np.arange(len(ij)) if scanned is None else np.asarray(scanned, dtype=np.int64)
            lattice[ij[idx, 0] + 1, ij[idx, 1] + 1] = True
            self._ij, self._lattice = ij, lattice

    def add(self, outputs: Mapping[str, NDArray[np.float32]], meta: BatchMeta) -> None:
        """Decode each readable tile's detections and store them in level-0 pixels."""
        raw = outputs[self.key]
        for b, tile in enumerate(meta.index.tolist()):
            det = self.decode(raw[b]) if meta.ok[b] else np.zeros((0, 2 + self.n_features))
            self.store_tile(int(tile), meta.l0_xy[b], det)

    def neighbours_scanned(self, tiles: NDArray[np.int64]) -> NDArray[np.bool_]:
        """Return (n, 3, 3): whether the neighbour at (row offset + 1, column offset + 1) of each
        tile is scanned, i.e. whether this tile's margin on that side is left to it.

        The centre is False. Without a grid every margin is left to a neighbour. A detector can
        skip what lies in those margins: :meth:`store_tile` would drop it.
        """
        tiles = np.asarray(tiles, dtype=np.int64).reshape(-1)
        if self._ij is None or self._lattice is None:
            out = np.ones((len(tiles), 3, 3), dtype=bool)
        else:
            ij = self._ij[tiles]
            rows = ij[:, 0, None, None] + np.arange(3)[None, :, None]
            cols = ij[:, 1, None, None] + np.arange(3)[None, None, :]
            out = self._lattice[rows, cols]
        out[:, 1, 1] = False
        return out

    def store_tile(
        self, tile: int, l0_xy: NDArray[np.int64], det: NDArray[np.floating[Any]]
    ) -> None:
        """Keep one tile's (n, 2 + F) detections outside its margin, in level-0 pixels."""
        det = np.asarray(det, dtype=np.float64).reshape(-1, 2 + self.n_features)
        lo, hi = self.margin_px, self.tile_px - self.margin_px
        di = np.where(det[:, 0] < lo, -1, np.where(det[:, 0] >= hi, 1, 0))
        dj = np.where(det[:, 1] < lo, -1, np.where(det[:, 1] >= hi, 1, 0))
        keep = (di == 0) & (dj == 0)
        if self._ij is not None and self._lattice is not None:
            # the owner is the neighbour on the margin's side; keep what no scanned owner sees
            i, j = (int(v) for v in self._ij[tile])
            keep |= ~self._lattice[i + 1 + di, j + 1 + dj]
        det = det[keep]
        l0_x = l0_xy[0] + (det[:, 1] + 0.5) * self.l0_per_px
        l0_y = l0_xy[1] + (det[:, 0] + 0.5) * self.l0_per_px
        self.rows[tile] = np.column_stack([l0_x, l0_y, det[:, 2:]])

    def state(self, index: NDArray[np.int64]) -> dict[str, NDArray[Any]]:
        """Return the detections of tiles ``index`` as one array plus their tile ids."""
        parts = [self.rows.get(int(i), np.zeros((0, 2 + self.n_features))) for i in index]
        tiles = np.concatenate(
            [np.full(len(p), int(i), dtype=np.int64) for p, i in zip(parts, index, strict=True)]
            or [np.zeros(0, dtype=np.int64)]
        )
        data = np.concatenate(parts) if parts else np.zeros((0, 2 + self.n_features))
        return {"tiles": tiles, "rows": data, "seen": np.asarray(index, dtype=np.int64)}

    def load_state(self, index: NDArray[np.int64], state: Mapping[str, NDArray[Any]]) -> None:
        """Restore what :meth:`state` saved for the tiles ``index``."""
        tiles, data = state["tiles"], state["rows"]
        for i in np.asarray(state["seen"]).tolist():
            self.rows[int(i)] = data[tiles == i]

    def finalize(self) -> NDArray[np.float64]:
        """Return (n, 2 + F): level-0 x, y, then the features, in tile order."""
        if not self.rows:
            return np.zeros((0, 2 + self.n_features))
        return np.concatenate([self.rows[k] for k in sorted(self.rows)])
