"""Torch-free value types that carry an analysis's spatial outputs to the writers.

``models`` produces these; ``wsi.export`` (overlay TIFFs, GeoJSON, DZI) and the report writers
consume them. Everything is in level-0 pixel coordinates unless a name says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

MapKind = Literal["probability", "mask", "density", "label"]


@dataclass(frozen=True)
class RasterMap:
    """A coarse raster over the slide, e.g. a class-probability or density map.

    Attributes:
        name: file-safe identifier, e.g. ``"pattern_spindle"``, ``"necrosis"``, ``"tam_density"``.
        values: (rows, cols) float32; probabilities in [0, 1], masks 0/1, densities in ``unit``.
        l0_per_px: level-0 pixels covered by one map pixel (same in x and y).
        kind: how to colour and scale it.
        unit: physical unit of ``values`` (``""`` for probabilities, ``"cells/mm²"`` …).
        vmax: value mapped to the top of the colour scale (1 for probabilities).
        l0_origin: level-0 (x, y) of the map's top-left corner.
    """

    name: str
    values: NDArray[np.float32]
    l0_per_px: float
    kind: MapKind
    unit: str = ""
    vmax: float = 1.0
    l0_origin: tuple[float, float] = (0.0, 0.0)


@dataclass(frozen=True)
class PointSet:
    """Point objects (cells, mitoses) in level-0 pixels.

    Attributes:
        name: class shown to users, e.g. ``"Mitosis: Typical"``, ``"Macrophage"``.
        l0_xy: (k, 2) float64 level-0 (x, y).
        scores: (k,) float32 confidence in [0, 1].
    """

    name: str
    l0_xy: NDArray[np.float64]
    scores: NDArray[np.float32]


@dataclass(frozen=True)
class Circle:
    """A circle annotation (e.g. the 2 mm² mitosis hotspot) in level-0 pixels."""

    name: str
    l0_center: tuple[float, float]
    l0_radius: float
    measurements: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class PolygonSet:
    """Polygons (e.g. necrosis) as lists of rings, each ring (n, 2) level-0 (x, y).

    ``polygons[i][0]`` is the exterior ring, further rings are holes.
    """

    name: str
    polygons: list[list[NDArray[np.float64]]]


@dataclass(frozen=True)
class TileTable:
    """Per-tile outputs of a tile classifier.

    Attributes:
        l0_xy: (N, 2) int64 top-left corner of each tile.
        l0_size: tile edge in level-0 pixels.
        class_names: output channel names.
        probs: (N, C) float32 class probabilities.
    """

    l0_xy: NDArray[np.int64]
    l0_size: float
    class_names: tuple[str, ...]
    probs: NDArray[np.float32]


@dataclass
class SlideOutputs:
    """Everything spatial that an analysis produced for one slide, plus its JSON report."""

    slide_path: str
    l0_dimensions: tuple[int, int]
    mpp: float
    report: dict[str, Any]
    maps: list[RasterMap] = field(default_factory=list)
    points: list[PointSet] = field(default_factory=list)
    polygons: list[PolygonSet] = field(default_factory=list)
    circles: list[Circle] = field(default_factory=list)
    tiles: TileTable | None = None
