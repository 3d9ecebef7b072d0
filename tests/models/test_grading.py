"""Grading flags: WHO 2022 and Turin thresholds from the settings, disclaimer present."""

from __future__ import annotations

from models.analyses.grading import DISCLAIMER, GradingInputs, grading_report
from models.analyses.settings_cells import GradingSettings


def _flags(report: dict[str, object]) -> dict[str, dict[str, object]]:
    flags = report["flags"]
    assert isinstance(flags, list)
    return {f["name"]: f for f in flags}


def test_thresholds_are_inclusive_and_configurable() -> None:
    s = GradingSettings()
    x = GradingInputs(
        mitoses_per_2mm2=5, mitoses_per_10hpf=2, hpf_area_mm2=0.237, necrosis_area_mm2=0.0
    )
    rep = grading_report(x, s)
    f = _flags(rep)
    assert f["who2022_mitoses"]["met"] is True
    assert f["who2022_mitoses"]["threshold"] == 5.0
    assert f["turin_mitoses"]["met"] is False
    assert f["who2022_necrosis"]["met"] is False
    assert rep["who2022_high_grade_feature_present"] is True
    assert rep["disclaimer"] == DISCLAIMER and "not a diagnosis" in DISCLAIMER
    assert rep["numbers"]["ten_hpf_area_mm2"] == 2.37  # type: ignore[index]

    strict = GradingSettings(who_mitoses_per_2mm2=6, turin_mitoses_per_10hpf=2)
    f2 = _flags(grading_report(x, strict))
    assert f2["who2022_mitoses"]["met"] is False
    assert f2["turin_mitoses"]["met"] is True


def test_necrosis_area_threshold() -> None:
    s = GradingSettings(necrosis_min_area_mm2=0.5)
    assert (
        _flags(grading_report(GradingInputs(necrosis_area_mm2=0.4), s))["who2022_necrosis"]["met"]
        is False
    )
    assert (
        _flags(grading_report(GradingInputs(necrosis_area_mm2=0.6), s))["who2022_necrosis"]["met"]
        is True
    )


def test_missing_measurements_are_unknown_not_false() -> None:
    rep = grading_report(GradingInputs(), GradingSettings())
    assert all(f["met"] is None for f in _flags(rep).values())
    assert rep["who2022_high_grade_feature_present"] is None


def test_inputs_collected_from_analysis_reports() -> None:
    from models.analyses import AnalysisOutput
    from models.analyses.grading import inputs_from_results

    results = {
        "mitosis": AnalysisOutput(
            "mitosis",
            {
                "mitoses_per_2mm2_hotspot": 7,
                "mitoses_per_10hpf": 8,
                "hpf_area_mm2": 0.196,
                "count_tripolar": 2,
            },
        ),
        "necrosis": AnalysisOutput("necrosis", {"area_mm2": 0.5, "percent_of_tumour_bed": 12.0}),
        "tam": AnalysisOutput("tam", {"density_per_mm2": 250.0, "tam_fraction": 0.4}),
        "pattern": AnalysisOutput(
            "pattern",
            {
                "classes": {
                    "spindle": {"percent_of_tumour": 70.0},
                    "necrosis": {"percent_of_tumour": None},
                }
            },
        ),
    }
    x = inputs_from_results(results, 0.237)
    assert (x.mitoses_per_2mm2, x.mitoses_per_10hpf, x.hpf_area_mm2) == (7, 8, 0.196)
    assert (x.tripolar_count, x.necrosis_area_mm2, x.tam_density_per_mm2) == (2, 0.5, 250.0)
    assert x.pattern_mix == {"spindle": 70.0}
    rep = grading_report(x, GradingSettings())
    assert rep["numbers"]["ten_hpf_area_mm2"] == 1.96
    assert rep["numbers"]["tam_high"] is True
    assert all(f["met"] is True for f in rep["flags"])
    assert inputs_from_results({}, 0.237).mitoses_per_2mm2 is None


def test_upstream_warnings_become_grading_caveats() -> None:
    from models.analyses import AnalysisOutput
    from models.analyses.grading import upstream_warnings

    results = {
        "mitosis": AnalysisOutput("mitosis", {"count_total": 9, "warnings": ["implausibly high"]}),
        "tam": AnalysisOutput("tam", {"warnings": []}),
        "necrosis": AnalysisOutput("necrosis", {"area_mm2": 0.1}),
    }
    assert upstream_warnings(results) == ["mitosis: implausibly high"]
    assert upstream_warnings({}) == []
