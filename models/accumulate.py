"""Accumulators: where the engine streams model outputs, tile by tile.

An accumulator receives each batch's outputs (``add``), can save and restore its state for a chunk
of tiles (``state`` / ``load_state``: the engine's crash-safe checkpoints) and gives its result at
the end (``finalize``). Per-tile arrays indexed by grid tile index make all three trivial, which is
why :class:`TileArrayAccumulator` is the generic building block.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class BatchMeta:
    """What the engine knows about the tiles of one batch.

    Attributes:
        index: (B,) grid tile indices (rows of ``TileGrid.l0_xy``).
        l0_xy: (B, 2) level-0 (x, y) of each tile's top-left corner.
        ok: (B,) False where the tile could not be read (its image is white).
    """

    index: NDArray[np.int64]
    l0_xy: NDArray[np.int64]
    ok: NDArray[np.bool_]


@runtime_checkable
class Accumulator(Protocol):
    """The interface between the engine and an analysis."""

    def add(self, outputs: Mapping[str, NDArray[np.float32]], meta: BatchMeta) -> None:
        """Take one batch of model outputs (each array has the batch on axis 0)."""

    def state(self, index: NDArray[np.int64]) -> dict[str, NDArray[Any]]:
        """Return the part of the state that the tiles ``index`` produced (for a checkpoint)."""

    def load_state(self, index: NDArray[np.int64], state: Mapping[str, NDArray[Any]]) -> None:
        """Restore what :meth:`state` returned for the tiles ``index``."""

    def finalize(self) -> Any:
        """Return the accumulated result."""


class TileArrayAccumulator:
    """Store one output per tile in an (n_tiles, *shape) array.

    Args:
        n_tiles: number of tiles in the grid.
        key: which entry of the engine's outputs to keep.
        shape: per-tile shape of that output.
        dtype: storage dtype (e.g. ``np.float16`` or ``np.uint8`` to keep memory small).
        fill: value of tiles never seen (and of unreadable tiles).
        scale: multiply outputs by this before casting (e.g. 255 for uint8 probabilities).
    """

    def __init__(
        self,
        n_tiles: int,
        key: str,
        shape: tuple[int, ...],
        dtype: np.dtype[Any] | type = np.float32,
        fill: float = np.nan,
        scale: float = 1.0,
    ) -> None:
        self.key = key
        self.scale = scale
        self.fill = fill
        self.values: NDArray[Any] = np.full((n_tiles, *shape), fill, dtype=dtype)
        self.seen = np.zeros(n_tiles, dtype=bool)

    def add(self, outputs: Mapping[str, NDArray[np.float32]], meta: BatchMeta) -> None:
        """Write the batch's ``key`` output at its tile indices; unreadable tiles get ``fill``."""
        vals = np.asarray(outputs[self.key], dtype=np.float32)
        if vals.shape[1:] != self.values.shape[1:]:
            raise ValueError(
                f"output {self.key!r} has per-tile shape {vals.shape[1:]}, "
                f"accumulator expects {self.values.shape[1:]}"
            )
        if self.scale != 1.0:
            vals = vals * self.scale
        if np.issubdtype(self.values.dtype, np.integer):
            info = np.iinfo(self.values.dtype)
            vals = np.clip(np.rint(vals), info.min, info.max)
        vals[~meta.ok] = self.fill
        self.values[meta.index] = vals.astype(self.values.dtype)
        self.seen[meta.index] = True

    def state(self, index: NDArray[np.int64]) -> dict[str, NDArray[Any]]:
        """Per-tile values and seen flags of the tiles ``index``."""
        return {"values": self.values[index], "seen": self.seen[index]}

    def load_state(self, index: NDArray[np.int64], state: Mapping[str, NDArray[Any]]) -> None:
        """Put back the values of the tiles ``index``."""
        self.values[index] = state["values"]
        self.seen[index] = state["seen"]

    def finalize(self) -> NDArray[Any]:
        """The (n_tiles, *shape) array (tiles never processed hold ``fill``)."""
        return self.values


class TileSumAccumulator(TileArrayAccumulator):
    """Sum an output over each tile's pixels, e.g. a per-tile necrosis pixel count.

    The output ``key`` must be (B, ...); everything after axis 0 is summed. ``finalize`` returns
    the per-tile sums; ``total()`` their sum over readable tiles.
    """

    def __init__(self, n_tiles: int, key: str) -> None:
        super().__init__(n_tiles, key, (), dtype=np.float64, fill=0.0)

    def add(self, outputs: Mapping[str, NDArray[np.float32]], meta: BatchMeta) -> None:
        """Sum each tile's output and store it at the tile's index."""
        vals = np.asarray(outputs[self.key], dtype=np.float64)
        sums = vals.reshape(len(vals), -1).sum(axis=1)
        super().add({self.key: sums.astype(np.float32)}, meta)

    def total(self) -> float:
        """Sum over all tiles."""
        return float(self.values.sum())
