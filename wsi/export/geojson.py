"""QuPath-importable GeoJSON (and ASAP XML) from a slide's spatial outputs.

Coordinates are level-0 pixels, as QuPath expects. Objects:

* tiles of the tile classifier: ``"detection"`` squares classified by their top class, with one
  measurement ``"P(<class>)"`` per class probability;
* point sets (mitoses ``"Mitosis: Typical"`` / ``"Mitosis: Atypical"`` / ``"Mitosis: Tripolar"``,
  ``"Macrophage"`` …): ``"detection"``
  points with a ``"score"`` measurement;
* polygon sets (``"Necrosis"`` …): ``"annotation"`` polygons, repaired with shapely when invalid;
* circles (the mitosis hotspot): ``"annotation"`` polygons approximating the circle, with the
  circle's measurements.
"""

from __future__ import annotations

import math
import uuid
from collections import Counter
from typing import Any, Final
from xml.etree import ElementTree as ET

import numpy as np
import shapely
from numpy.typing import NDArray
from shapely.geometry import MultiPolygon, Polygon, mapping

from wsi.export._errors import ExportError
from wsi.export.colors import class_color, display_name, hex_color
from wsi.results import Circle, PointSet, PolygonSet, SlideOutputs, TileTable

#: Vertices used to approximate a circle annotation.
CIRCLE_VERTICES: Final[int] = 72
_NAMESPACE: Final[uuid.UUID] = uuid.UUID("6f1b8a6e-2f0c-4d7e-9a51-0c5a3b7e2d10")


def _classification(name: str) -> dict[str, Any]:
    return {"name": name, "color": list(class_color(name))}


def _feature(
    geometry: dict[str, Any], object_type: str, cls: str, key: str, measurements: dict[str, float]
) -> dict[str, Any]:
    return {
        "type": "Feature",
        "id": str(uuid.uuid5(_NAMESPACE, key)),
        "geometry": geometry,
        "properties": {
            "objectType": object_type,
            "classification": _classification(cls),
            "isLocked": object_type == "annotation",
            "measurements": {k: float(v) for k, v in measurements.items()},
        },
    }


def tile_features(tiles: TileTable) -> list[dict[str, Any]]:
    """Return one detection square per tile, classified by its most probable class."""
    n = len(tiles.l0_xy)
    if tiles.probs.shape != (n, len(tiles.class_names)):
        raise ExportError(
            f"tile probabilities have shape {tiles.probs.shape}, expected ({n}, "
            f"{len(tiles.class_names)}) for classes {tiles.class_names}"
        )
    names = [display_name(c) for c in tiles.class_names]
    keys = [f"P({d})" for d in names]
    size = float(tiles.l0_size)
    top = np.argmax(tiles.probs, axis=1) if n else np.zeros(0, dtype=np.intp)
    out = []
    for i in range(n):
        x, y = float(tiles.l0_xy[i, 0]), float(tiles.l0_xy[i, 1])
        ring = [[x, y], [x + size, y], [x + size, y + size], [x, y + size], [x, y]]
        probs = tiles.probs[i]
        meas = {k: round(float(p), 5) for k, p in zip(keys, probs, strict=True)}
        out.append(
            _feature(
                {"type": "Polygon", "coordinates": [ring]},
                "detection",
                names[int(top[i])],
                f"tile:{x}:{y}",
                meas,
            )
        )
    return out


def point_features(points: PointSet) -> list[dict[str, Any]]:
    """Return one detection point per object of a point set."""
    xy = np.asarray(points.l0_xy, dtype=np.float64).reshape(-1, 2)
    if len(points.scores) != len(xy):
        raise ExportError(
            f"point set {points.name!r} has {len(xy)} points but {len(points.scores)} scores"
        )
    if not np.all(np.isfinite(xy)):
        raise ExportError(f"point set {points.name!r} has non-finite coordinates")
    return [
        _feature(
            {"type": "Point", "coordinates": [float(x), float(y)]},
            "detection",
            points.name,
            f"point:{points.name}:{x}:{y}",
            {"score": float(s)},
        )
        for (x, y), s in zip(xy, points.scores, strict=True)
    ]


def _valid_polygon(rings: list[NDArray[np.float64]], name: str) -> Polygon | MultiPolygon | None:
    if not rings or len(rings[0]) < 3:
        raise ExportError(f"polygon of {name!r} needs an exterior ring of at least 3 points")
    geom = Polygon(np.asarray(rings[0])[:, :2], [np.asarray(r)[:, :2] for r in rings[1:]])
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
        parts = getattr(geom, "geoms", [geom])
        polys = [g for g in parts if isinstance(g, Polygon) and g.area > 0]
        polys += [p for g in parts if isinstance(g, MultiPolygon) for p in g.geoms]
        if not polys:
            return None
        geom = polys[0] if len(polys) == 1 else MultiPolygon(polys)
    return geom if geom.area > 0 else None


def polygon_features(polys: PolygonSet) -> list[dict[str, Any]]:
    """Return one annotation per polygon, made valid (degenerate ones are dropped)."""
    out = []
    for i, rings in enumerate(polys.polygons):
        geom = _valid_polygon(rings, polys.name)
        if geom is None:
            continue
        meas = {"area_px2": round(float(geom.area), 2)}
        out.append(
            _feature(
                dict(mapping(geom)),
                "annotation",
                polys.name,
                f"poly:{polys.name}:{i}:{geom.wkt[:200]}",
                meas,
            )
        )
    return out


def circle_ring(circle: Circle, vertices: int = CIRCLE_VERTICES) -> list[list[float]]:
    """Return a closed ring approximating a circle, level-0 (x, y)."""
    cx, cy = circle.l0_center
    angles = np.linspace(0.0, 2.0 * math.pi, vertices, endpoint=False)
    ring = [
        [cx + circle.l0_radius * math.cos(a), cy + circle.l0_radius * math.sin(a)] for a in angles
    ]
    return [*ring, ring[0]]


def circle_feature(circle: Circle) -> dict[str, Any]:
    """Return a circle as a polygon annotation carrying its measurements and radius."""
    if not (circle.l0_radius > 0 and all(math.isfinite(v) for v in circle.l0_center)):
        raise ExportError(
            f"circle {circle.name!r}: centre {circle.l0_center} / radius {circle.l0_radius} invalid"
        )
    meas = {"radius_px": circle.l0_radius, **circle.measurements}
    geom = {"type": "Polygon", "coordinates": [circle_ring(circle)]}
    return _feature(geom, "annotation", circle.name, f"circle:{circle.name}", meas)


def to_geojson(outputs: SlideOutputs, *, include_tiles: bool = True) -> dict[str, Any]:
    """Build the QuPath FeatureCollection of one slide's outputs.

    Args:
        outputs: the slide's spatial outputs.
        include_tiles: add one detection per classified tile (can be tens of thousands).
    """
    features: list[dict[str, Any]] = []
    if include_tiles and outputs.tiles is not None:
        features += tile_features(outputs.tiles)
    for points in outputs.points:
        features += point_features(points)
    for polys in outputs.polygons:
        features += polygon_features(polys)
    features += [circle_feature(c) for c in outputs.circles]
    return {"type": "FeatureCollection", "features": features}


def count_classes(collection: dict[str, Any], object_type: str | None = None) -> Counter[str]:
    """Count features per classification name (optionally of one ``objectType``)."""
    counts: Counter[str] = Counter()
    for feat in collection["features"]:
        props = feat["properties"]
        if object_type is None or props["objectType"] == object_type:
            counts[props["classification"]["name"]] += 1
    return counts


def to_asap_xml(outputs: SlideOutputs) -> str:
    """Return ASAP annotation XML (points as ``Dot``, polygons and circles as ``Polygon``)."""
    root = ET.Element("ASAP_Annotations")
    annotations = ET.SubElement(root, "Annotations")
    groups: dict[str, None] = {}

    def add(name: str, kind: str, group: str, coords: list[tuple[float, float]]) -> None:
        groups.setdefault(group)
        ann = ET.SubElement(
            annotations,
            "Annotation",
            Name=name,
            Type=kind,
            PartOfGroup=group,
            Color=hex_color(class_color(group)).upper(),
        )
        cs = ET.SubElement(ann, "Coordinates")
        for order, (x, y) in enumerate(coords):
            ET.SubElement(cs, "Coordinate", Order=str(order), X=f"{x:.2f}", Y=f"{y:.2f}")

    for points in outputs.points:
        for i, (x, y) in enumerate(np.asarray(points.l0_xy).reshape(-1, 2)):
            add(f"{points.name} {i + 1}", "Dot", points.name, [(float(x), float(y))])
    for polys in outputs.polygons:
        for i, rings in enumerate(polys.polygons):
            ext = np.asarray(rings[0])[:, :2]
            add(
                f"{polys.name} {i + 1}",
                "Polygon",
                polys.name,
                [(float(x), float(y)) for x, y in ext],
            )
    for c in outputs.circles:
        ring = circle_ring(c)[:-1]
        add(c.name, "Polygon", c.name, [(x, y) for x, y in ring])
    group_el = ET.SubElement(root, "AnnotationGroups")
    for g in groups:
        ET.SubElement(
            group_el, "Group", Name=g, PartOfGroup="None", Color=hex_color(class_color(g)).upper()
        )
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
