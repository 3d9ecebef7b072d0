"""Annotations in: QuPath GeoJSON, point CSVs, class maps, sparse and fully annotated regions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from wsi.annotations import (
    UNANNOTATED,
    classify_name,
    load_class_map,
    rasterise,
    read_annotations,
)
from wsi.errors import AnnotationError
from wsi.taxonomy import PATTERN_CLASSES


def _square(x: float, y: float, s: float) -> list[list[list[float]]]:
    return [[[x, y], [x + s, y], [x + s, y + s], [x, y + s], [x, y]]]


def _feat(geom: dict[str, Any], cls: Any, obj: str = "annotation") -> dict[str, Any]:
    props: dict[str, Any] = {"objectType": obj}
    if cls is not None:
        props["classification"] = cls
    return {"type": "Feature", "geometry": geom, "properties": props}


def _qupath(path: Path, as_list: bool = False) -> Path:
    feats = [
        _feat({"type": "Polygon", "coordinates": _square(0, 0, 1000)}, {"name": "Spindle"}),
        _feat(  # a small necrosis island drawn inside the spindle area, no hole cut
            {"type": "Polygon", "coordinates": _square(200, 200, 100)}, {"name": "Necrosis"}
        ),
        _feat(
            {
                "type": "MultiPolygon",
                "coordinates": [_square(2000, 0, 100), _square(2200, 0, 100)],
            },
            {"names": ["Pleomorphic giant cell"]},
        ),
        _feat({"type": "Point", "coordinates": [10, 20]}, {"name": "Mitosis: Tripolar"}),
        _feat(  # QuPath's points tool writes one MultiPoint per class
            {"type": "MultiPoint", "coordinates": [[30, 40]]}, {"name": "Mitosis: Typical"}
        ),
        _feat({"type": "Point", "coordinates": [50, 60]}, {"name": "Macrophage"}, "detection"),
        _feat(  # an ellipse drawn around a cell reads as its centroid
            {"type": "Polygon", "coordinates": _square(90, 90, 20)}, {"name": "Mitosis: Atypical"}
        ),
        _feat({"type": "Polygon", "coordinates": _square(0, 0, 500)}, {"name": "Fully annotated"}),
        _feat(
            {"type": "Polygon", "coordinates": _square(0, 0, 9)}, {"name": "Mitosis hotspot 2 mm²"}
        ),
        _feat({"type": "Polygon", "coordinates": _square(0, 0, 9)}, None),
    ]
    data: Any = feats if as_list else {"type": "FeatureCollection", "features": feats}
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("as_list", [False, True])
def test_qupath_geojson_regions_points_and_skips(tmp_path: Path, as_list: bool) -> None:
    ann = read_annotations(_qupath(tmp_path / "a.geojson", as_list))
    assert set(ann.regions) == {"spindle", "necrosis", "pleomorphic"}
    assert ann.regions["pleomorphic"].area == pytest.approx(20000)
    assert sorted(ann.point_classes) == sorted(
        ["mitosis_tripolar", "mitosis_typical", "macrophage", "mitosis_atypical"]
    )
    assert ann.points_of("mitosis_atypical").tolist() == [[100.0, 100.0]]
    assert ann.complete is not None and ann.complete.area == pytest.approx(250000)
    assert ann.in_complete(np.array([[10.0, 10.0], [600.0, 10.0]])).tolist() == [True, False]
    assert ann.skipped == {"unclassified": 1, "output-only (Mitosis hotspot 2 mm²)": 1}


def test_rasterise_small_region_wins_and_unannotated_is_255(tmp_path: Path) -> None:
    ann = read_annotations(_qupath(tmp_path / "a.geojson"))
    lab = rasterise(ann, (30, 30), 100.0)  # 100 level-0 px per map pixel
    assert lab[5, 5] == PATTERN_CLASSES.index("spindle")
    assert lab[2, 2] == PATTERN_CLASSES.index("necrosis")
    assert lab[20, 20] == UNANNOTATED
    assert lab[0, 20] == PATTERN_CLASSES.index("pleomorphic")


def test_unknown_class_lists_the_known_ones_and_a_class_map_fixes_it(tmp_path: Path) -> None:
    path = tmp_path / "lab.geojson"
    feat = _feat({"type": "Polygon", "coordinates": _square(0, 0, 50)}, {"name": "ATC spindle"})
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feat]}))
    with pytest.raises(AnnotationError) as err:
        read_annotations(path)
    msg = str(err.value)
    assert "'ATC spindle'" in msg and "Pleomorphic giant cell" in msg and "--class-map" in msg
    yaml_map = tmp_path / "map.yaml"
    yaml_map.write_text("ATC spindle: Spindle\n")
    csv_map = tmp_path / "map.csv"
    csv_map.write_text("name,class\natc SPINDLE,spindle\n")
    for mapping in (yaml_map, csv_map):
        ann = read_annotations(path, class_map=load_class_map(mapping))
        assert set(ann.regions) == {"spindle"}
    bad = tmp_path / "bad.yaml"
    bad.write_text("ATC spindle: Fibroblast\n")
    with pytest.raises(AnnotationError, match="Fibroblast"):
        load_class_map(bad)


def test_point_csv(tmp_path: Path) -> None:
    path = tmp_path / "points.csv"
    path.write_text("x,y,class\n1.5,2,Mitosis: Tripolar\n3,4,macrophage\n5,6,Lookalike apoptotic\n")
    ann = read_annotations(path)
    assert ann.point_classes == ("mitosis_tripolar", "macrophage", "negative")
    assert ann.points_xy.tolist() == [[1.5, 2.0], [3.0, 4.0], [5.0, 6.0]]
    assert not ann.regions and ann.complete is None
    path.write_text("x,y,class\n1,2,Spindle\n")
    with pytest.raises(AnnotationError, match="not a point class"):
        read_annotations(path)
    path.write_text("x,y\n1,2\n")
    with pytest.raises(AnnotationError, match="x,y,class"):
        read_annotations(path)


def test_project_truth_geojson_reads(tmp_path: Path) -> None:
    from wsi.synthetic import _prims as P
    from wsi.synthetic._geojson import point_features, region_features

    labels = np.zeros((20, 20), np.uint8)
    labels[2:10, 2:10] = PATTERN_CLASSES.index("squamoid")
    labels[12:18, 12:18] = PATTERN_CLASSES.index("non_tumour")
    code = next(iter(P.TRIPOLAR_CODES))
    pts = np.array([[5.0, 5.0, code], [7.0, 7.0, next(iter(P.MACROPHAGE_CODES))]])
    feats = region_features(labels, 16) + point_features(pts)
    path = tmp_path / "truth.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    ann = read_annotations(path, fully_annotated=True)
    assert set(ann.regions) == {"squamoid", "non_tumour"}
    assert ann.regions["squamoid"].area == pytest.approx(64 * 256, rel=0.15)  # contour cuts corners
    assert ann.point_classes == ("mitosis_tripolar", "macrophage")
    assert ann.in_complete(np.array([[1e6, 1e6]])).tolist() == [True]
    assert ann.counts()["fully_annotated_px2"] == "whole slide"


def test_classify_name_kinds() -> None:
    assert classify_name("non-tumour") == ("region", "non_tumour")
    assert classify_name("Lookalike pyknotic") == ("point", "negative")
    assert classify_name("fully ANNOTATED") == ("complete", "Fully annotated")
    assert classify_name("Mitosis 10 HPF (2.37 mm²)")[0] == "skip"
    with pytest.raises(AnnotationError, match="unknown annotation class"):
        classify_name("Tumor")
    with pytest.raises(AnnotationError, match="not found"):
        read_annotations(Path("/nonexistent.geojson"))
