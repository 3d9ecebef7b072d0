"""Contract: the sections the real analyses build validate against report.json's schema, and the
GeoJSON written from their point sets and circles round-trips their counts.

Uses the analyses' own pure report builders (no model weights needed), so a renamed key in
``models`` fails here instead of in a user's run.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from outputs_factory import SLIDE, make_outputs

from models.analyses import mitosis as mitosis_analysis
from models.analyses import tam as tam_analysis
from models.analyses.grading import GradingInputs, grading_report
from models.analyses.mitosis import summarise_mitoses
from models.analyses.pattern import summarise_patterns
from models.analyses.scope import judge, withheld_note, withhold, withhold_patterns
from models.analyses.settings_cells import GradingSettings, MitosisSettings
from models.analysis import slide_section, tissue_section
from models.cells.stain import StainEvidence
from models.settings import ScopeSettings
from workers.report import validate_report, write_outputs
from workers.report.schema_cells import MITOSIS_COUNTS, TAM_COUNTS
from wsi import TissueSettings, compute_tissue_mask, open_slide
from wsi.synthetic.classes import PATTERN_CLASSES


def detections(n_typical: int, n_tripolar: int, centre: tuple[float, float]) -> np.ndarray:
    """(n, 6) detections (``models.analyses.mitosis.COLS``) spread around ``centre``."""
    rng = np.random.default_rng(11)
    n = n_typical + n_tripolar
    xy = rng.normal(centre, 200.0, size=(n, 2))
    tri = np.arange(n) >= n_typical
    p_typ, p_tri = np.where(tri, 0.2, 0.8), np.where(tri, 0.7, 0.1)
    return np.column_stack([xy, np.full(n, 0.9), p_typ, np.full(n, 0.05), p_tri])


@pytest.fixture(scope="module")
def real_sections() -> dict[str, Any]:
    with open_slide(SLIDE) as slide:
        slide_facts = slide_section(slide)
        tissue = tissue_section(compute_tissue_mask(slide, TissueSettings()))
        mpp, dims = slide.mpp, slide.dimensions
    rng = np.random.default_rng(5)
    probs = rng.dirichlet(np.ones(len(PATTERN_CLASSES)), size=40).astype(np.float32)
    pattern = summarise_patterns(probs, np.full(40, 0.0125), PATTERN_CLASSES, 0.10)
    mitosis, points, circles = summarise_mitoses(
        detections(9, 3, (dims[0] / 2, dims[1] / 2)),
        mpp=mpp,
        region=None,
        viable_tumour_mm2=pattern["viable_tumour_mm2"],
        settings=MitosisSettings(),
    )
    grading = grading_report(
        GradingInputs(
            mitoses_per_2mm2=mitosis["mitoses_per_2mm2_hotspot"],
            mitoses_per_10hpf=mitosis["mitoses_per_10hpf"],
            hpf_area_mm2=mitosis["hpf_area_mm2"],
            tripolar_count=mitosis["count_tripolar"],
        ),
        GradingSettings(),
    )
    return {
        "slide": slide_facts,
        "tissue": tissue,
        "pattern": pattern,
        "mitosis": mitosis,
        "grading": grading,
        "points": points,
        "circles": circles,
    }


def report_with(real: dict[str, Any], **sections: Any) -> dict[str, Any]:
    report = copy.deepcopy(make_outputs().report)
    report["slide"] = real["slide"]
    for key in ("tissue", "pattern", "mitosis", "grading"):
        report[key] = real[key]
    report.update(sections)
    return report


def test_real_sections_validate(real_sections: dict[str, Any]) -> None:
    validate_report(report_with(real_sections))
    # a mitosis-free slide: no hotspot, null percentages
    empty, _, _ = summarise_mitoses(
        np.zeros((0, 6)), mpp=0.5, region=None, viable_tumour_mm2=None, settings=MitosisSettings()
    )
    validate_report(report_with(real_sections, mitosis=empty))
    # a TAM route that could not run reports only its route and why
    validate_report(report_with(real_sections, tam={"route": None, "warnings": ["H&E slide"]}))


def test_scope_verdict_outside_scope_validates_and_shows(
    real_sections: dict[str, Any], tmp_path: Path
) -> None:
    """A no-tumour verdict: pattern without a predominant pattern, grading criteria not assessed."""
    scope = judge(
        stain=StainEvidence(5000, 0.0, 0.5, "eosin"),
        mpp=0.5,
        confidence=np.full(40, 0.9, np.float32),
        tissue_mm2=0.5,
        viable_tumour_mm2=0.0125,
        s=ScopeSettings(),
    )
    assert scope["verdict"] == "no_tumour"
    pattern = copy.deepcopy(real_sections["pattern"])
    withhold_patterns(pattern, scope)
    grading = grading_report(GradingInputs(mitoses_per_2mm2=9), GradingSettings(), scope)
    report = report_with(real_sections, scope=scope)
    report.update(pattern=pattern, grading=grading)
    validate_report(report)
    outputs = make_outputs()
    outputs.report = report
    outputs.maps = outputs.maps[:1]
    page = write_outputs(outputs, tmp_path, SLIDE)["report_html"].read_text(encoding="utf-8")
    assert "No tumour found." in page and "0 of 0 assessed" in page


def test_withheld_keys_are_the_schemas() -> None:
    """The keys the analyses null when withheld are the ones the schema requires null."""
    assert mitosis_analysis.COUNT_KEYS == MITOSIS_COUNTS
    assert tam_analysis.COUNT_KEYS == TAM_COUNTS


def test_withheld_mitosis_section_validates(real_sections: dict[str, Any]) -> None:
    """The mitosis builder's section with its counts withheld (as on a no-tumour slide)."""
    scope = {"verdict": "no_tumour", "reason": "No tumour was found."}
    mitosis, _, _ = summarise_mitoses(
        np.zeros((0, 6)), mpp=0.5, region=None, viable_tumour_mm2=0.03, settings=MitosisSettings()
    )
    withhold(mitosis, mitosis_analysis.COUNT_KEYS, withheld_note(scope))
    mitosis["warnings"].append("no tumour found on this slide (scope): mitoses were not counted")
    tam = {"route": "he", "warnings": []} | dict.fromkeys(tam_analysis.COUNT_KEYS)
    tam["withheld"] = withheld_note(scope)
    validate_report(report_with(real_sections, mitosis=mitosis, tam=tam))


def test_real_points_round_trip_through_geojson(
    real_sections: dict[str, Any], tmp_path: Path
) -> None:
    outputs = make_outputs()
    outputs.report = report_with(real_sections)
    outputs.points = real_sections["points"]
    outputs.circles = real_sections["circles"]
    outputs.maps = outputs.maps[:1]
    paths = write_outputs(outputs, tmp_path, SLIDE)
    fc = json.loads(paths["annotations"].read_text(encoding="utf-8"))
    names = Counter(f["properties"]["classification"]["name"] for f in fc["features"])
    mitosis = real_sections["mitosis"]
    assert names["Mitosis: Typical"] == mitosis["count_typical"] == 9
    assert names["Mitosis: Tripolar"] == mitosis["count_tripolar"] == 3
    hotspot = [
        f
        for f in fc["features"]
        if f["properties"]["classification"]["name"].startswith("Mitosis hotspot")
    ]
    assert len(hotspot) == 1
    assert hotspot[0]["properties"]["measurements"]["count"] == mitosis["mitoses_per_2mm2_hotspot"]
    page = paths["report_html"].read_text(encoding="utf-8")
    assert f"{mitosis['hpf_area_mm2']} mm²" in page
