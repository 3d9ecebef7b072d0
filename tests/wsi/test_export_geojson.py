"""QuPath GeoJSON and ASAP XML: valid geometry, classes and counts round-trip."""

from __future__ import annotations

import json
import math
from xml.etree import ElementTree as ET

import numpy as np
import pytest
from shapely.geometry import shape

from wsi.export import ExportError
from wsi.export.geojson import count_classes, to_asap_xml, to_geojson
from wsi.results import Circle, PointSet, PolygonSet, SlideOutputs, TileTable

CLASSES = ("background", "spindle", "squamoid")


def outputs() -> SlideOutputs:
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(3), size=6).astype(np.float32)
    tiles = TileTable(
        np.array([[0, 0], [448, 0], [0, 448], [448, 448], [896, 0], [896, 448]]),
        448.0,
        CLASSES,
        probs,
    )
    square = np.array([[100, 100], [500, 100], [500, 500], [100, 500]], dtype=np.float64)
    hole = np.array([[200, 200], [300, 200], [300, 300], [200, 300]], dtype=np.float64)
    bowtie = np.array([[0, 0], [400, 400], [400, 0], [0, 400]], dtype=np.float64)  # self-crossing
    line = np.array([[0, 0], [10, 10], [20, 20]], dtype=np.float64)  # zero area: dropped
    return SlideOutputs(
        slide_path="x.svs",
        l0_dimensions=(2000, 1500),
        mpp=0.25,
        report={},
        points=[
            PointSet(
                "Mitosis: Typical", rng.uniform(0, 1000, (7, 2)), rng.random(7).astype(np.float32)
            ),
            PointSet("Mitosis: Tripolar", rng.uniform(0, 1000, (2, 2)), np.ones(2, np.float32)),
            PointSet("Macrophage", rng.uniform(0, 1000, (11, 2)), np.ones(11, np.float32)),
        ],
        polygons=[PolygonSet("Necrosis", [[square, hole], [bowtie], [line]])],
        circles=[Circle("Mitosis hotspot", (800.0, 600.0), 3192.0, {"mitoses": 9.0})],
        tiles=tiles,
    )


def test_feature_collection_round_trips() -> None:
    out = outputs()
    fc = json.loads(json.dumps(to_geojson(out), allow_nan=False))
    assert fc["type"] == "FeatureCollection"
    top = np.argmax(out.tiles.probs, axis=1)  # type: ignore[union-attr]
    expected_tiles = {
        name: int((top == k).sum())
        for k, name in enumerate(("Background", "Spindle", "Squamoid"))
        if (top == k).any()
    }
    det = count_classes(fc, "detection")
    assert (
        det["Mitosis: Typical"] == 7 and det["Mitosis: Tripolar"] == 2 and det["Macrophage"] == 11
    )
    assert sum(det.values()) == 6 + 20
    assert {k: det[k] for k in expected_tiles} == expected_tiles
    assert count_classes(fc, "annotation") == {"Necrosis": 2, "Mitosis hotspot": 1}
    ids = [f["id"] for f in fc["features"]]
    assert len(set(ids)) == len(ids)
    for f in fc["features"]:
        geom = shape(f["geometry"])
        assert geom.is_valid, f["properties"]
        props = f["properties"]
        assert props["objectType"] in {"annotation", "detection"}
        assert len(props["classification"]["color"]) == 3
        assert all(isinstance(v, float) for v in props["measurements"].values())


def test_tile_measurements_and_points_are_exact() -> None:
    out = outputs()
    fc = to_geojson(out)
    tiles = [
        f
        for f in fc["features"]
        if f["geometry"]["type"] == "Polygon" and f["properties"]["objectType"] == "detection"
    ]
    assert len(tiles) == 6
    for f, xy, p in zip(tiles, out.tiles.l0_xy, out.tiles.probs, strict=True):  # type: ignore[union-attr]
        assert shape(f["geometry"]).bounds == (xy[0], xy[1], xy[0] + 448, xy[1] + 448)
        meas = f["properties"]["measurements"]
        assert meas == pytest.approx(
            {"P(Background)": p[0], "P(Spindle)": p[1], "P(Squamoid)": p[2]}, abs=1e-5
        )
    mitoses = [
        f for f in fc["features"] if f["properties"]["classification"]["name"] == "Mitosis: Typical"
    ]
    np.testing.assert_allclose([f["geometry"]["coordinates"] for f in mitoses], out.points[0].l0_xy)
    no_tiles = to_geojson(out, include_tiles=False)
    assert all(
        f["properties"]["objectType"] == "annotation" or f["geometry"]["type"] == "Point"
        for f in no_tiles["features"]
    )


def test_necrosis_hole_kept_and_bowtie_repaired() -> None:
    fc = to_geojson(outputs(), include_tiles=False)
    necrosis = [
        shape(f["geometry"])
        for f in fc["features"]
        if f["properties"]["classification"]["name"] == "Necrosis"
    ]
    assert necrosis[0].area == pytest.approx(400 * 400 - 100 * 100)
    assert necrosis[1].is_valid and necrosis[1].area == pytest.approx(2 * 0.25 * 400 * 400)
    circle = next(
        f
        for f in fc["features"]
        if f["properties"]["objectType"] == "annotation"
        and f["properties"]["classification"]["name"] == "Mitosis hotspot"
    )
    geom = shape(circle["geometry"])
    assert geom.centroid.x == pytest.approx(800, abs=1) and geom.centroid.y == pytest.approx(
        600, abs=1
    )
    assert geom.area == pytest.approx(math.pi * 3192**2, rel=0.01)
    assert circle["properties"]["measurements"] == {"radius_px": 3192.0, "mitoses": 9.0}


def test_bad_inputs_are_refused() -> None:
    out = outputs()
    out.points.append(PointSet("Mitosis: Typical", np.zeros((3, 2)), np.zeros(2, np.float32)))
    with pytest.raises(ExportError, match="3 points but 2 scores"):
        to_geojson(out)
    bad_tiles = outputs()
    bad_tiles.tiles = TileTable(
        np.zeros((2, 2), np.int64), 10.0, CLASSES, np.zeros((3, 3), np.float32)
    )
    with pytest.raises(ExportError, match="shape"):
        to_geojson(bad_tiles)
    bad_poly = outputs()
    bad_poly.polygons = [PolygonSet("Necrosis", [[np.zeros((2, 2))]])]
    with pytest.raises(ExportError, match="at least 3 points"):
        to_geojson(bad_poly)


def test_asap_xml_counts() -> None:
    root = ET.fromstring(to_asap_xml(outputs()))
    anns = root.findall("./Annotations/Annotation")
    groups = [a.get("PartOfGroup") for a in anns]
    assert groups.count("Mitosis: Typical") == 7 and groups.count("Mitosis: Tripolar") == 2
    assert groups.count("Necrosis") == 3 and groups.count("Mitosis hotspot") == 1
    assert {g.get("Name") for g in root.findall("./AnnotationGroups/Group")} == {
        "Mitosis: Typical",
        "Mitosis: Tripolar",
        "Macrophage",
        "Necrosis",
        "Mitosis hotspot",
    }
    dot = next(a for a in anns if a.get("Type") == "Dot")
    assert len(dot.findall("./Coordinates/Coordinate")) == 1
