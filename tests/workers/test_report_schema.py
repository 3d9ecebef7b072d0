"""report.json's JSON Schema: kept in docs/, core required, sections optional but complete."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from outputs_factory import make_outputs

from workers.report.schema import ReportValidationError, build_schema, schema_json, validate_report

DOCS = Path(__file__).resolve().parents[2] / "docs" / "report.schema.json"


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    return make_outputs().report


def test_docs_schema_is_current_and_valid() -> None:
    assert DOCS.read_text(encoding="utf-8") == schema_json(), (
        "docs/report.schema.json is stale; regenerate it with "
        "python -m workers.report.schema > docs/report.schema.json"
    )
    jsonschema.Draft202012Validator.check_schema(json.loads(DOCS.read_text(encoding="utf-8")))


def test_full_report_validates(report: dict[str, Any]) -> None:
    validate_report(report)
    jsonschema.validate(report, build_schema())


def test_core_only_report_validates(report: dict[str, Any]) -> None:
    core = {k: report[k] for k in ("schema_version", "slide", "provenance")}
    validate_report(core)
    validate_report({**core, "pattern": report["pattern"]})  # an analysis subset


@pytest.mark.parametrize("key", ["schema_version", "slide", "provenance"])
def test_core_sections_required(report: dict[str, Any], key: str) -> None:
    bad = {k: v for k, v in report.items() if k != key}
    with pytest.raises(ReportValidationError, match=f"'{key}' is a required property"):
        validate_report(bad)


@pytest.mark.parametrize(
    ("path", "value", "where"),
    [
        (("mitosis", "hotspot_2mm2", "count"), -1, "mitosis/hotspot_2mm2"),
        (("mitosis", "mitoses_per_10hpf"), 2.5, "mitosis/mitoses_per_10hpf"),
        (("mitosis", "hpf_area_mm2"), None, "mitosis/hpf_area_mm2"),
        (
            ("pattern", "per_class", "spindle", "percent_of_tumour"),
            150.0,
            "pattern/per_class/spindle",
        ),
        (("necrosis", "area_mm2"), "big", "necrosis/area_mm2"),
        (("tam", "route"), "pcr", "tam/route"),
        (("tam", "density_per_mm2"), -3.0, "tam/density_per_mm2"),
        (("grading", "flags", 0, "met"), "yes", "grading/flags/0/met"),
        (("qc", "blur_fraction"), 1.5, "qc/blur_fraction"),
        (("scope", "verdict"), "maybe", "scope/verdict"),
        (("scope", "reason"), "", "scope/reason"),
        (("grading", "disclaimer"), "", "grading/disclaimer"),
        (("provenance", "models", 0, "sha256"), "abc", "provenance/models/0/sha256"),
        (("provenance", "started_at"), "yesterday", "provenance/started_at"),
        (("slide", "mpp"), None, "slide/mpp"),
        (("schema_version",), "2.0", "schema_version"),
    ],
)
def test_bad_values_are_named(
    report: dict[str, Any], path: tuple[Any, ...], value: Any, where: str
) -> None:
    bad = copy.deepcopy(report)
    node = bad
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ReportValidationError, match=where):
        validate_report(bad)


def test_sections_are_fully_specified_when_present(report: dict[str, Any]) -> None:
    for section in ("tissue", "pattern", "scope", "necrosis", "mitosis", "tam", "grading", "qc"):
        bad = copy.deepcopy(report)
        bad[section] = {}
        with pytest.raises(ReportValidationError, match=section):
            validate_report(bad)


NOTE = "no_tumour: No tumour was found: tumour-pattern tiles cover 0.029 mm², below 0.15 mm²."


def withheld_report(report: dict[str, Any]) -> dict[str, Any]:
    """The factory report as on a slide judged "no tumour found" (1.2): figures null, reasons."""
    from workers.report.schema_cells import MITOSIS_COUNTS, TAM_COUNTS

    out = copy.deepcopy(report)
    out["scope"] |= {"verdict": "no_tumour", "reason": NOTE.removeprefix("no_tumour: ")}
    out["pattern"] |= {"predominant": None, "mixed": False, "withheld": NOTE}
    out["necrosis"] |= {"percent_of_tumour_bed": None, "withheld": NOTE}
    out["mitosis"] |= dict.fromkeys(MITOSIS_COUNTS) | {
        "withheld": NOTE,
        "warnings": ["no tumour found on this slide (scope): mitoses were not counted"],
    }
    out["tam"] |= dict.fromkeys(TAM_COUNTS) | {"withheld": NOTE}
    return out


def test_withheld_sections_validate(report: dict[str, Any]) -> None:
    validate_report(withheld_report(report))


@pytest.mark.parametrize(
    ("path", "value", "where"),
    [
        (("mitosis", "count_total"), 0, "mitosis"),
        (("mitosis", "hotspot_2mm2"), {"count": 0}, "mitosis"),
        (("mitosis", "mitoses_per_10hpf"), 0, "mitosis"),
        (("mitosis", "warnings"), [], "mitosis"),
        (("tam", "density_per_mm2"), 0.0, "tam"),
        (("tam", "macrophages"), 0, "tam"),
        (("necrosis", "percent_of_tumour_bed"), 10.0, "necrosis"),
        (("pattern", "predominant"), "spindle", "pattern"),
        (("mitosis", "withheld"), "because", "mitosis"),
        (("tam", "withheld"), "in_scope: tumour", "tam"),
    ],
)
def test_withheld_figures_must_be_null(
    report: dict[str, Any], path: tuple[str, ...], value: Any, where: str
) -> None:
    """A section that says it is withheld cannot also hold a number (0 included)."""
    bad = withheld_report(report)
    bad[path[0]][path[1]] = value
    with pytest.raises(ReportValidationError, match=where):
        validate_report(bad)
