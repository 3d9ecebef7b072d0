"""QuPath GeoJSON features of synthetic truth: region polygons and object points (level-0 px)."""

from __future__ import annotations

from typing import Any

import numpy as np
import shapely
from numpy.typing import NDArray
from shapely.geometry import MultiPolygon, Polygon, mapping
from skimage import measure

from wsi.synthetic import _prims as P
from wsi.synthetic.classes import MITOSIS_DISPLAY, PATTERN_CLASSES, PATTERN_DISPLAY

COLORS: dict[str, list[int]] = {
    "spindle": [200, 60, 60],
    "pleomorphic": [150, 60, 200],
    "squamoid": [230, 160, 40],
    "necrosis": [90, 90, 90],
    "non_tumour": [60, 170, 80],
    MITOSIS_DISPLAY["mitosis_typical"]: [255, 0, 0],
    MITOSIS_DISPLAY["mitosis_tripolar"]: [255, 0, 255],
    "Macrophage": [150, 90, 20],
}


def _class_geometry(mask: NDArray[np.bool_], f: int) -> MultiPolygon | Polygon | None:
    """Return the (multi)polygon of a mask in level-0 px (pixel (r, c) covers c·f … (c+1)·f)."""
    padded = np.pad(mask, 1).astype(np.uint8)
    geom: Any = None
    for ring in measure.find_contours(padded, 0.5):
        if len(ring) < 4:
            continue
        xy = np.stack([(ring[:, 1] - 0.5) * f, (ring[:, 0] - 0.5) * f], axis=1)
        poly = shapely.make_valid(Polygon(xy))
        if poly.is_empty or poly.area <= 0:
            continue
        geom = poly if geom is None else geom.symmetric_difference(poly)
    if geom is None or geom.is_empty:
        return None
    geom = geom.simplify(0.5 * f, preserve_topology=True)
    polys = [g for g in getattr(geom, "geoms", [geom]) if isinstance(g, Polygon)]
    return MultiPolygon(polys) if len(polys) > 1 else (polys[0] if polys else None)


def region_features(labels: NDArray[np.uint8], f: int) -> list[dict[str, Any]]:
    """Return one annotation Feature per tissue class present in the label map."""
    out = []
    for idx, name in enumerate(PATTERN_CLASSES):
        if name == "background":
            continue
        mask = labels == idx
        if not mask.any():
            continue
        geom = _class_geometry(mask, f)
        if geom is None:
            continue
        out.append(
            {
                "type": "Feature",
                "geometry": mapping(geom),
                "properties": {
                    "objectType": "annotation",
                    "classification": {"name": PATTERN_DISPLAY[name], "color": COLORS[name]},
                    "measurements": {"label_pixels": int(mask.sum())},
                },
            }
        )
    return out


def _point(x: float, y: float, name: str, kind: str, obj: str) -> dict[str, Any]:
    return {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [round(x, 2), round(y, 2)]},
        "properties": {
            "objectType": obj,
            "classification": {"name": name, "color": COLORS.get(name, [0, 120, 255])},
            "kind": kind,
        },
    }


def point_class(code: int) -> str | None:
    """Return the GeoJSON class name of a truth-point kind code (None: not exported)."""
    if code in P.TYPICAL_CODES:
        return MITOSIS_DISPLAY["mitosis_typical"]
    if code in P.TRIPOLAR_CODES:
        return MITOSIS_DISPLAY["mitosis_tripolar"]
    if code in P.LOOKALIKE_CODES:
        return f"Lookalike {P.LOOKALIKE_CODES[code]}"
    if code in P.MACROPHAGE_CODES:
        return "Macrophage"
    return None


def point_features(points: NDArray[np.float64]) -> list[dict[str, Any]]:
    """Return Point features for mitoses and look-alikes (annotations) and macrophages
    (detections)."""
    out = []
    for x, y, c in points:
        name = point_class(int(c))
        if name is None:
            continue
        obj = "detection" if name == "Macrophage" else "annotation"
        out.append(_point(float(x), float(y), name, P.KIND_NAMES[int(c)], obj))
    return out
