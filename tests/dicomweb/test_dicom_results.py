"""The DICOM result objects from known outputs (no analysis, no server): what goes in comes back."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from tests.dicomweb.conftest import write_instance
from workers.dicom_results import build_objects, load_source_image, write_dicom_results
from wsi.results import PointSet, PolygonSet, RasterMap, SlideOutputs
from wsi.taxonomy import PATTERN_CLASSES


def _outputs() -> tuple[SlideOutputs, dict[str, Any]]:
    nan = np.nan
    spindle = np.array([[nan, 0.9], [0.2, nan]], np.float32)
    other = np.array([[nan, 0.05], [0.7, nan]], np.float32)  # squamoid wins one cell
    maps = [
        RasterMap(f"pattern_{c}", other if c == "squamoid" else spindle * 0.0, 448.0, "probability")
        for c in PATTERN_CLASSES[1:]
    ]
    maps[0] = RasterMap("pattern_spindle", spindle, 448.0, "probability")
    square = np.array([[100.0, 100.0], [300.0, 100.0], [300.0, 300.0], [100.0, 300.0]])
    hole = np.array([[150.0, 150.0], [200.0, 150.0], [200.0, 200.0], [150.0, 200.0]])
    outputs = SlideOutputs(
        slide_path="x",
        l0_dimensions=(2220, 2967),
        mpp=0.5,
        report={},
        maps=maps,
        points=[
            PointSet("Mitosis: Typical", np.array([[10.0, 20.0], [30.0, 40.0]]), np.ones(2, "f4")),
            PointSet("Mitosis: Tripolar", np.array([[50.0, 60.0]]), np.full(1, 0.9, "f4")),
            PointSet("Mitosis: Atypical", np.zeros((0, 2)), np.zeros(0, "f4")),
            PointSet("Macrophage", np.array([[5.0, 5.0]]), np.full(1, 0.7, "f4")),
        ],
        polygons=[PolygonSet("Necrosis", [[np.vstack([square, square[:1]]), hole]])],
    )
    report = {
        "provenance": {"package_version": "0.1.0", "models": []},
        "mitosis": {"model": "atc-mitosis-v1", "count_total": 3},
        "tam": {"model": "atc-tam-v1", "macrophages": 1},
        "necrosis": {"model": "atc-necrosis-v1", "area_mm2": 0.0001, "threshold": 0.85},
        "pattern": {"model": "atc-pattern-v1", "predominant": "spindle"},
    }
    return outputs, report


def test_objects_hold_what_went_in(cmu1_files: list[Path], tmp_path: Path) -> None:
    outputs, report = _outputs()
    mask = np.zeros((4, 5), bool)
    mask[1:3, 2] = True
    objects = build_objects(outputs, report, cmu1_files[0].parent, (mask, 8.0))
    assert sorted(objects) == [
        "annotations",
        "report-sr",
        "segmentation-necrosis",
        "segmentation-pattern",
    ]
    ann = objects["annotations"]
    groups = {g.label: g for g in ann.get_annotation_groups()}
    assert {k: g.number_of_annotations for k, g in groups.items()} == {
        "Mitosis: Typical": 2,
        "Mitosis: Tripolar": 1,
        "Macrophage": 1,
        "Necrosis": 1,  # the empty atypical group is left out
    }
    (ring,) = groups["Necrosis"].get_graphic_data(ann.annotation_coordinate_type)
    assert len(ring) == 4  # the closing vertex is dropped: DICOM polygons are implicitly closed
    _, area, _ = groups["Necrosis"].get_measurements()
    assert float(area[0, 0]) == pytest.approx((200 * 200 - 50 * 50) * 0.25)  # µm², hole out
    pattern = objects["segmentation-pattern"].get_total_pixel_matrix(combine_segments=True)
    squamoid = PATTERN_CLASSES[1:].index("squamoid") + 1
    assert pattern.tolist() == [[0, 1], [squamoid, 0]]  # NaN cells (no tile) stay empty
    necrosis = objects["segmentation-necrosis"].get_total_pixel_matrix(combine_segments=True)
    assert np.array_equal(necrosis > 0, mask)
    paths = write_dicom_results(outputs, report, cmu1_files[0], tmp_path / "dicom", (mask, 8.0))
    assert sorted(p.name for p in paths) == sorted(f"{k}.dcm" for k in objects)
    assert not list((tmp_path / "dicom").glob(".*"))  # no temporary files left


def test_source_is_the_level0_of_the_given_series(cmu1_files: list[Path], tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    for f in cmu1_files:
        shutil.copy(f, folder / f.name)
    other = pydicom.dcmread(cmu1_files[0])  # a bigger slide of another series, same folder
    other.SeriesInstanceUID = generate_uid()
    other.TotalPixelMatrixColumns = 99999
    other.save_as(folder / "zz-other-series.dcm")
    write_instance(folder / "ct.dcm", modality="CT")
    (folder / "junk.dcm").write_bytes(b"not dicom")
    level0 = next(f for f in cmu1_files if f.name.startswith("level-0"))
    source = load_source_image(folder / cmu1_files[3].name)
    assert source.SOPInstanceUID == pydicom.dcmread(level0).SOPInstanceUID
    assert int(source.TotalPixelMatrixColumns) == 2220
    assert source.PatientID == "" and "TotalPixelMatrixOriginSequence" in source  # filled in


def _numbers(items: Any) -> dict[str, float]:
    """The report's measurements (local codes) anywhere in the SR content tree."""
    out: dict[str, float] = {}
    for item in items:
        code = item.ConceptNameCodeSequence[0]
        if item.ValueType == "NUM" and code.CodingSchemeDesignator == "99ATC":
            name = code.CodeMeaning
            out[name] = float(item.MeasuredValueSequence[0].NumericValue)
        if "ContentSequence" in item:
            out |= _numbers(item.ContentSequence)
    return out


def test_sr_holds_the_report_numbers(cmu1_files: list[Path], tmp_path: Path) -> None:
    outputs, report = _outputs()
    path = tmp_path / "sr.dcm"
    build_objects(outputs, report, cmu1_files[0].parent)["report-sr"].save_as(path)
    sr = hd.sr.srread(path)
    assert _numbers(sr.ContentSequence) == {
        "Mitoses": 3.0,
        "Tumour-associated macrophages": 1.0,
        "Necrosis area": 0.0001,
    }
    assert sr.StudyInstanceUID == pydicom.dcmread(cmu1_files[0]).StudyInstanceUID


def _evaluations(items: Any) -> dict[str, str]:
    """The coded evaluations (concept meaning → value meaning) anywhere in the SR tree."""
    out: dict[str, str] = {}
    for item in items:
        if item.ValueType == "CODE":
            out[item.ConceptNameCodeSequence[0].CodeMeaning] = item.ConceptCodeSequence[
                0
            ].CodeMeaning
        if "ContentSequence" in item:
            out |= _evaluations(item.ContentSequence)
    return out


def test_sr_says_withheld_figures_were_not_assessed(cmu1_files: list[Path], tmp_path: Path) -> None:
    """A slide judged "no tumour found": no mitosis or macrophage measurement (not 0), and the SR
    says they were not assessed, beside the scope verdict."""
    outputs, report = _outputs()
    outputs.points = []
    note = "no_tumour: No tumour was found."
    report["scope"] = {"verdict": "no_tumour", "reason": "No tumour was found."}
    report["mitosis"] |= {"count_total": None, "mitoses_per_2mm2_hotspot": None, "withheld": note}
    report["tam"] |= {"macrophages": None, "density_per_mm2": None, "withheld": note}
    report["pattern"] |= {"predominant": None, "withheld": note}
    report["pattern"]["per_class"] = {"spindle": {"percent_of_tumour": 100.0}}
    path = tmp_path / "sr.dcm"
    build_objects(outputs, report, cmu1_files[0].parent)["report-sr"].save_as(path)
    sr = hd.sr.srread(path)
    assert _numbers(sr.ContentSequence) == {"Necrosis area": 0.0001}  # no count, no share
    evaluations = _evaluations(sr.ContentSequence)
    assert evaluations["Analysis scope verdict"] == "no tumour"
    for section in ("Mitoses", "Tumour-associated macrophages", "Pattern mix"):
        assert evaluations[f"{section}: assessment"] == "Not assessed (no_tumour)", evaluations
    assert "Predominant ATC pattern" not in evaluations


def test_pattern_labels_follow_the_report_arg_max_rule() -> None:
    """A tile whose top class is under 0.5 keeps its class; background (1 - sum) can win."""
    from workers.dicom_results import pattern_labels

    values = {c: np.zeros((1, 3), np.float32) for c in PATTERN_CLASSES[1:]}
    values["non_tumour"][0] = [0.45, 0.05, np.nan]  # 0.45 beats 0.30 + 0.25 background
    values["spindle"][0] = [0.30, 0.05, np.nan]  # second tile: background 0.9 wins
    maps = [RasterMap(f"pattern_{c}", v, 448.0, "probability") for c, v in values.items()]
    out = pattern_labels(maps)
    assert out is not None
    labels, _ = out
    non_tumour = PATTERN_CLASSES.index("non_tumour")  # 1 + index without background
    assert labels.tolist() == [[non_tumour, 0, 0]]
