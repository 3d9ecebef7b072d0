"""Annotations as pathologists make them: QuPath GeoJSON, the project's truth GeoJSON, point CSVs.

Everything is in level-0 pixel coordinates. Class names map through :mod:`wsi.taxonomy`
(case-insensitive; display names, code names and a few common synonyms), or through a lab's own
class map first. Unknown names are an :class:`~wsi.errors.AnnotationError` listing the known ones.

What a class means:

* **regions** (polygons, multipolygons): a tissue class of ``PATTERN_CLASSES`` (``Spindle``,
  ``Pleomorphic giant cell``, ``Squamoid``, ``Necrosis``, ``Non-tumour``, ``Background``);
* **points**: ``Mitosis: Typical`` / ``Mitosis: Atypical`` / ``Mitosis: Tripolar``,
  ``Macrophage``, and ``Negative`` (a nucleus that is not a mitosis; the generator's
  ``Lookalike <kind>`` points read as negatives). A polygon with a point class (an ellipse drawn
  around a cell) is read as its centroid;
* **"Fully annotated"** (:data:`FULLY_ANNOTATED`): a region inside which *every* object of the
  annotated kinds was annotated, so unannotated cells and pixels there are negatives. Outside it,
  annotation is sparse: only annotated regions and points count, unannotated areas are unknown.
* output-only objects of ``atc-wsi analyze`` (the hotspot and 10-HPF circles) and unclassified
  objects are skipped and counted in :attr:`SlideAnnotations.skipped`.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import shapely
from numpy.typing import NDArray
from PIL import Image, ImageDraw
from shapely.geometry import MultiPolygon, Polygon, shape

from wsi.errors import AnnotationError
from wsi.taxonomy import MITOSIS_CLASSES, MITOSIS_DISPLAY, PATTERN_CLASSES, PATTERN_DISPLAY
from wsi.taxonomy import mitosis_class as _mitosis_class

#: Region class marking an area where every object of the annotated kinds was annotated.
FULLY_ANNOTATED: Final[str] = "Fully annotated"
#: Point classes besides the mitosis classes.
MACROPHAGE: Final[str] = "macrophage"
NEGATIVE: Final[str] = "negative"
POINT_CLASSES: Final[tuple[str, ...]] = (*MITOSIS_CLASSES[1:], MACROPHAGE, NEGATIVE)
#: Label-map value of pixels no region covers.
UNANNOTATED: Final[int] = 255
#: Names written by ``atc-wsi analyze`` that are results, not annotations (prefixes, lower case).
OUTPUT_ONLY_PREFIXES: Final[tuple[str, ...]] = ("mitosis hotspot", "mitosis 10 hpf")

_REGION_SYNONYMS: Final[dict[str, str]] = {
    "spindle cell": "spindle",
    "giant cell": "pleomorphic",
    "pleomorphic": "pleomorphic",
    "necrotic": "necrosis",
    "non tumour": "non_tumour",
    "non-tumor": "non_tumour",
    "non tumor": "non_tumour",
    "normal": "non_tumour",
}
_POINT_SYNONYMS: Final[dict[str, str]] = {
    "macrophage": MACROPHAGE,
    "macrophages": MACROPHAGE,
    "tam": MACROPHAGE,
    "negative": NEGATIVE,
    "not mitosis": NEGATIVE,
    "non-mitosis": NEGATIVE,
    "mitosis: negative": NEGATIVE,
}


def _region_names() -> dict[str, str]:
    names = {c: c for c in PATTERN_CLASSES}
    names.update({d.lower(): c for c, d in PATTERN_DISPLAY.items()})
    names.update(_REGION_SYNONYMS)
    return names


def known_names() -> list[str]:
    """Display names accepted for regions and points (what an error message lists)."""
    return [
        *PATTERN_DISPLAY.values(),
        *MITOSIS_DISPLAY.values(),
        "Macrophage",
        "Negative",
        "Lookalike <kind>",
        FULLY_ANNOTATED,
    ]


def classify_name(name: str, class_map: Mapping[str, str] | None = None) -> tuple[str, str]:
    """Return ``(kind, class)`` of an annotation class name.

    ``kind`` is ``"region"``, ``"point"``, ``"complete"`` (the fully-annotated marker) or
    ``"skip"`` (an output-only object such as the hotspot circle).

    Raises:
        AnnotationError: unknown name (the message lists the known ones).
    """
    raw = name.strip()
    if class_map:
        lowered = {k.strip().lower(): v for k, v in class_map.items()}
        raw = lowered.get(raw.lower(), raw)
    key = raw.lower()
    if key == FULLY_ANNOTATED.lower():
        return "complete", FULLY_ANNOTATED
    if key.startswith(OUTPUT_ONLY_PREFIXES):
        return "skip", raw
    regions = _region_names()
    if key in regions:
        return "region", regions[key]
    if key in _POINT_SYNONYMS:
        return "point", _POINT_SYNONYMS[key]
    if key.startswith("lookalike"):
        return "point", NEGATIVE
    try:
        return "point", _mitosis_class(raw)
    except ValueError:
        pass
    mapped = f" (mapped from {name!r} by the class map)" if raw != name.strip() else ""
    raise AnnotationError(
        f"unknown annotation class {raw!r}{mapped}; known: {', '.join(known_names())}; "
        "map your own names with --class-map"
    )


def read_name_map(path: str | Path) -> dict[str, str]:
    """Read a name → name map: a YAML or JSON object, or a two-column CSV (optional header
    ``name,class``).

    Raises:
        AnnotationError: unreadable file or not a mapping of strings.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise AnnotationError(f"cannot read the name map: {exc.strerror}", path=p) from None
    if p.suffix.lower() == ".csv":
        rows = [r for r in csv.reader(text.splitlines()) if r and not r[0].startswith("#")]
        if rows and [c.strip().lower() for c in rows[0][:2]] in (
            ["name", "class"],
            ["lab", "class"],
        ):
            rows = rows[1:]
        if any(len(r) < 2 for r in rows):
            raise AnnotationError("name map CSV rows need two columns: name,class", path=p)
        return {r[0].strip(): r[1].strip() for r in rows}
    import yaml  # YAML is a superset of JSON: one parser for both

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise AnnotationError(f"name map is not YAML/JSON: {exc}", path=p) from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise AnnotationError("a name map is an object of your name → class name", path=p)
    return {str(k): v for k, v in data.items()}


def load_class_map(path: str | Path | None) -> dict[str, str]:
    """Read a lab's class map (see :func:`read_name_map`); {} for None.

    Raises:
        AnnotationError: unreadable file or a target name the taxonomy does not know.
    """
    if path is None:
        return {}
    mapping = read_name_map(path)
    for target in mapping.values():
        classify_name(target)  # raises on a target the taxonomy does not know
    return mapping


@dataclass(frozen=True)
class SlideAnnotations:
    """The annotations of one slide, in level-0 pixels.

    Attributes:
        source: the file they were read from.
        regions: per tissue class, the union of its regions.
        complete: union of the "Fully annotated" regions (None: annotation is sparse everywhere).
        points_xy: (n, 2) float64 point coordinates.
        point_classes: class of each point (:data:`POINT_CLASSES`).
        skipped: why objects were skipped, with counts.
        whole_slide: the file was declared complete over the whole slide (``complete`` is then
            an unbounded box).
    """

    source: str
    regions: dict[str, Polygon | MultiPolygon]
    complete: Polygon | MultiPolygon | None
    points_xy: NDArray[np.float64]
    point_classes: tuple[str, ...]
    skipped: dict[str, int] = field(default_factory=dict)
    whole_slide: bool = False

    def points_of(self, *classes: str) -> NDArray[np.float64]:
        """(k, 2) coordinates of the points of ``classes``."""
        keep = np.array([c in classes for c in self.point_classes], dtype=bool)
        return self.points_xy[keep] if len(keep) else np.zeros((0, 2))

    def counts(self) -> dict[str, Any]:
        """Region areas (level-0 px²) and point counts per class, for cards and logs."""
        return {
            "region_area_px2": {c: round(float(g.area)) for c, g in self.regions.items()},
            "points": dict(Counter(self.point_classes)),
            "fully_annotated_px2": "whole slide"
            if self.whole_slide
            else (round(float(self.complete.area)) if self.complete else 0),
        }

    def in_complete(self, xy: NDArray[np.float64]) -> NDArray[np.bool_]:
        """Whether each level-0 point lies in a "Fully annotated" region."""
        if self.complete is None or len(xy) == 0:
            return np.zeros(len(xy), dtype=bool)
        return np.asarray(shapely.contains_xy(self.complete, xy[:, 0], xy[:, 1]), dtype=bool)


def _class_name(props: Mapping[str, Any]) -> str | None:
    cls = props.get("classification")
    if isinstance(cls, str):
        return cls
    if isinstance(cls, Mapping):
        if isinstance(cls.get("name"), str):
            return str(cls["name"])
        names = cls.get("names")
        if isinstance(names, list) and names:
            return ": ".join(str(n) for n in names)
    return None


def _features(data: Any, path: Path) -> list[Mapping[str, Any]]:
    if isinstance(data, list):
        return [f for f in data if isinstance(f, Mapping)]
    if isinstance(data, Mapping):
        if data.get("type") == "FeatureCollection":
            return [f for f in data.get("features", []) if isinstance(f, Mapping)]
        if data.get("type") == "Feature":
            return [data]
    raise AnnotationError(
        "not GeoJSON: expected a FeatureCollection or a list of features", path=path
    )


def _collect(
    features: Iterable[Mapping[str, Any]], class_map: Mapping[str, str] | None, path: Path
) -> tuple[dict[str, list[Any]], list[Any], list[tuple[float, float, str]], Counter[str]]:
    regions: dict[str, list[Any]] = {}
    complete: list[Any] = []
    points: list[tuple[float, float, str]] = []
    skipped: Counter[str] = Counter()
    for n, feat in enumerate(features):
        name = _class_name(feat.get("properties") or {})
        if name is None:
            skipped["unclassified"] += 1
            continue
        kind, cls = classify_name(name, class_map)
        if kind == "skip":
            skipped[f"output-only ({cls})"] += 1
            continue
        try:
            geom = shape(feat["geometry"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise AnnotationError(
                f"feature {n} ({name!r}) has no valid geometry: {exc}", path=path
            ) from exc
        parts = list(getattr(geom, "geoms", [geom]))
        for g in parts:
            if g.geom_type == "Point":
                if kind != "point":
                    raise AnnotationError(
                        f"feature {n}: {name!r} is a region class but the object is a point",
                        path=path,
                    )
                points.append((float(g.x), float(g.y), cls))
            elif g.geom_type == "Polygon":
                if kind == "point":
                    c = g.centroid
                    points.append((float(c.x), float(c.y), cls))
                elif kind == "complete":
                    complete.append(shapely.make_valid(g))
                else:
                    regions.setdefault(cls, []).append(shapely.make_valid(g))
            else:
                skipped[f"geometry {g.geom_type}"] += 1
    return regions, complete, points, skipped


def _union(parts: list[Any]) -> Polygon | MultiPolygon | None:
    if not parts:
        return None
    geom = shapely.union_all(parts)
    polys = [g for g in getattr(geom, "geoms", [geom]) if isinstance(g, Polygon) and g.area > 0]
    polys += [p for g in getattr(geom, "geoms", []) if isinstance(g, MultiPolygon) for p in g.geoms]
    if not polys:
        return None
    return polys[0] if len(polys) == 1 else MultiPolygon(polys)


def _read_csv(path: Path, class_map: Mapping[str, str] | None) -> list[tuple[float, float, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        cols = {c.strip().lower(): c for c in reader.fieldnames or []}
        if not {"x", "y", "class"} <= set(cols):
            raise AnnotationError(
                f"point CSV needs columns x,y,class (level-0 px); found {reader.fieldnames}",
                path=path,
            )
        out = []
        for i, row in enumerate(reader, start=2):
            kind, cls = classify_name(row[cols["class"]], class_map)
            if kind != "point":
                raise AnnotationError(
                    f"line {i}: {row[cols['class']]!r} is not a point class", path=path
                )
            try:
                out.append((float(row[cols["x"]]), float(row[cols["y"]]), cls))
            except ValueError as exc:
                raise AnnotationError(f"line {i}: bad coordinate: {exc}", path=path) from exc
    return out


def read_annotations(
    path: str | Path,
    *,
    class_map: Mapping[str, str] | None = None,
    fully_annotated: bool = False,
) -> SlideAnnotations:
    """Read one slide's annotations: QuPath / project GeoJSON (``.geojson``/``.json``) or a
    point CSV (``x,y,class`` in level-0 px).

    Args:
        path: the file.
        class_map: a lab's names → project names (see :func:`load_class_map`).
        fully_annotated: treat the whole slide as one "Fully annotated" region (e.g. the
            generator's complete truth).

    Raises:
        AnnotationError: unreadable file, bad geometry or unknown class name.
    """
    p = Path(path)
    if not p.is_file():
        raise AnnotationError("annotation file not found", path=p)
    if p.suffix.lower() == ".csv":
        regions: dict[str, list[Any]] = {}
        complete: list[Any] = []
        points = _read_csv(p, class_map)
        skipped: Counter[str] = Counter()
    else:
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise AnnotationError(f"cannot read GeoJSON: {exc}", path=p) from exc
        regions, complete, points, skipped = _collect(_features(data, p), class_map, p)
    if fully_annotated:
        complete = [shapely.box(-1e12, -1e12, 1e12, 1e12)]
    xy = np.array([(x, y) for x, y, _ in points], dtype=np.float64).reshape(-1, 2)
    merged = {c: g for c, parts in regions.items() if (g := _union(parts)) is not None}
    return SlideAnnotations(
        source=str(p),
        regions=merged,
        complete=_union(complete),
        points_xy=xy,
        point_classes=tuple(c for _, _, c in points),
        skipped=dict(skipped),
        whole_slide=fully_annotated,
    )


def rasterise(
    ann: SlideAnnotations,
    shape_rc: tuple[int, int],
    l0_per_px: float,
    l0_origin: tuple[float, float] = (0.0, 0.0),
) -> NDArray[np.uint8]:
    """Label map of the regions: value = ``PATTERN_CLASSES`` index, :data:`UNANNOTATED` elsewhere.

    Larger regions are drawn first, so a small region drawn inside a larger one of another class
    (a necrosis island in a spindle area) wins; holes are left unannotated.

    Args:
        ann: the annotations.
        shape_rc: (rows, cols) of the map.
        l0_per_px: level-0 pixels per map pixel.
        l0_origin: level-0 (x, y) of the map's top-left corner.
    """
    img = Image.new("L", (shape_rc[1], shape_rc[0]), UNANNOTATED)
    draw = ImageDraw.Draw(img)
    polys: list[tuple[float, Polygon, int]] = []
    for cls, geom in ann.regions.items():
        for g in getattr(geom, "geoms", [geom]):
            polys.append((float(g.area), g, PATTERN_CLASSES.index(cls)))
    ox, oy = l0_origin

    def ring(coords: Any) -> list[tuple[float, float]]:
        return [((x - ox) / l0_per_px, (y - oy) / l0_per_px) for x, y in coords]

    for _, g, value in sorted(polys, key=lambda t: -t[0]):
        draw.polygon(ring(g.exterior.coords), fill=value)
        for hole in g.interiors:
            draw.polygon(ring(hole.coords), fill=UNANNOTATED)
    return np.asarray(img, dtype=np.uint8)
