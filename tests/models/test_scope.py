"""Scope verdict rules, their effect on the pattern, necrosis, mitosis, TAM and grading sections,
real slide."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.analyses import AnalysisOutput
from models.analyses.grading import GradingInputs, grading_report, inputs_from_results
from models.analyses.scope import (
    IN_SCOPE,
    NO_TUMOUR,
    OUTSIDE,
    counts_withheld,
    judge,
    tile_confidence,
    withhold,
    withhold_patterns,
)
from models.analyses.settings_cells import GradingSettings
from models.cells.stain import StainEvidence
from models.settings import ScopeSettings

HE = StainEvidence(10_000, 0.0, 0.6, "eosin")
S = ScopeSettings()


def _judge(**kw: object) -> dict[str, object]:
    args: dict[str, object] = {
        "stain": HE,
        "mpp": 0.5,
        "confidence": np.full(40, 0.9, np.float32),
        "tissue_mm2": 2.0,
        "viable_tumour_mm2": 1.0,
        "s": S,
    }
    args.update(kw)
    return judge(**args)  # type: ignore[arg-type]


def test_tumour_on_he_is_in_scope() -> None:
    v = _judge()
    assert (v["verdict"], v["rule"]) == (IN_SCOPE, "tumour")
    assert v["viable_tumour_fraction"] == 0.5


@pytest.mark.parametrize(
    ("tumour_mm2", "tissue_mm2"),
    [(0.1, 2.0), (0.2, 10.0), (0.0, 2.0)],  # too small an area; too small a share; none
)
def test_little_tumour_is_no_tumour(tumour_mm2: float, tissue_mm2: float) -> None:
    v = _judge(viable_tumour_mm2=tumour_mm2, tissue_mm2=tissue_mm2)
    assert v["verdict"] == NO_TUMOUR
    assert "No tumour" in str(v["reason"])


def test_unknown_stain_coarse_pixels_unsure_tissue_are_outside() -> None:
    unknown = StainEvidence(0, 0.0, 0.0)
    assert _judge(stain=unknown)["rule"] == "stain"
    assert _judge(mpp=2.0)["rule"] == "resolution"
    assert _judge(confidence=np.zeros(0, np.float32))["rule"] == "no_tissue"
    unsure = np.r_[np.full(30, 0.3), np.full(10, 0.9)].astype(np.float32)
    v = _judge(confidence=unsure)
    assert (v["verdict"], v["rule"]) == (OUTSIDE, "uncertain")
    assert v["uncertain_tile_fraction"] == 0.75
    # DAB (CD68/CD163 IHC) is a validated stain: the verdict rests on the tissue.
    assert _judge(stain=StainEvidence(10_000, 0.2, 0.0, "dab"))["verdict"] == IN_SCOPE


def test_rules_apply_in_order() -> None:
    v = _judge(stain=StainEvidence(0, 0.0, 0.0), mpp=4.0, viable_tumour_mm2=0.0)
    assert v["rule"] == "stain"


def test_tile_confidence_ignores_glass_and_unreadable_tiles() -> None:
    probs = np.array(
        [[0.9, 0.1, 0, 0, 0, 0], [0.1, 0.6, 0.3, 0, 0, 0], [np.nan] * 6], dtype=np.float32
    )
    classes = ("background", "spindle", "pleomorphic", "squamoid", "necrosis", "non_tumour")
    top, tissue = tile_confidence(probs, classes)
    assert tissue.tolist() == [False, True, False]
    assert top[1] == pytest.approx(0.6)


def test_outside_scope_withholds_predominant_pattern() -> None:
    rep = {"predominant": "spindle", "predominant_display": "Spindle", "mixed": True,
           "secondary_patterns": ["squamoid"]}  # fmt: skip
    withhold_patterns(rep, {"verdict": IN_SCOPE, "reason": "x"})
    assert rep["predominant"] == "spindle"
    withhold_patterns(rep, {"verdict": NO_TUMOUR, "reason": "No tumour was found."})
    assert rep["predominant"] is None and rep["mixed"] is False and rep["secondary_patterns"] == []
    assert str(rep["withheld"]).startswith("no_tumour")


def test_grading_criteria_not_met_outside_scope() -> None:
    x = GradingInputs(mitoses_per_2mm2=12, mitoses_per_10hpf=9, necrosis_area_mm2=0.5)
    s = GradingSettings()
    inside = grading_report(x, s, {"verdict": IN_SCOPE, "reason": "Tumour found."})
    assert [f["met"] for f in inside["flags"]] == [True, True, True, True]
    assert inside["who2022_high_grade_feature_present"] is True
    for verdict in (NO_TUMOUR, OUTSIDE):
        out = grading_report(x, s, {"verdict": verdict, "reason": "Because."})
        assert all(f["met"] is None for f in out["flags"])
        assert all(verdict in f["note"] for f in out["flags"])
        assert out["who2022_high_grade_feature_present"] is None
        assert out["numbers"]["necrosis_present"] is None
        assert out["scope_verdict"] == verdict


def _results(verdict: str) -> dict[str, AnalysisOutput]:
    reason = {IN_SCOPE: "Tumour found.", NO_TUMOUR: "No tumour was found.", OUTSIDE: "Unsure."}
    return {
        "scope": AnalysisOutput("scope", report={"verdict": verdict, "reason": reason[verdict]})
    }


def test_counts_are_withheld_on_no_tumour_only() -> None:
    """Mitosis and H&E macrophage counts: withheld on no_tumour; IHC counts never."""
    assert counts_withheld(_results(NO_TUMOUR)) == "no_tumour: No tumour was found."
    assert counts_withheld(_results(NO_TUMOUR), ihc=True) is None
    for verdict in (IN_SCOPE, OUTSIDE):
        assert counts_withheld(_results(verdict)) is None
    assert counts_withheld({}) is None  # scope did not run


def test_withheld_counts_reach_grading_as_unknown() -> None:
    """A withheld mitosis and TAM section gives the grading no number to judge (not 0)."""
    from models.analyses.mitosis import COUNT_KEYS as MITOSIS_KEYS
    from models.analyses.tam import COUNT_KEYS as TAM_KEYS

    results = _results(NO_TUMOUR)
    note = counts_withheld(results)
    assert note is not None
    mitosis = {"count_total": 0, "mitoses_per_2mm2_hotspot": 0, "mitoses_per_10hpf": 0,
               "hpf_area_mm2": 0.237, "hotspot_2mm2": {"count": 0}}  # fmt: skip
    tam = {"route": "he", "macrophages": 0, "density_per_mm2": 0.0, "tam_fraction": 0.0}
    withhold(mitosis, MITOSIS_KEYS, note)
    withhold(tam, TAM_KEYS, note)
    assert all(mitosis[k] is None for k in MITOSIS_KEYS) and mitosis["hpf_area_mm2"] == 0.237
    assert all(tam[k] is None for k in TAM_KEYS) and tam["withheld"] == note
    results |= {"mitosis": AnalysisOutput("mitosis", mitosis), "tam": AnalysisOutput("tam", tam)}
    numbers = grading_report(
        inputs_from_results(results, 0.237), GradingSettings(), results["scope"].report
    )["numbers"]
    for key in ("mitoses_per_2mm2_hotspot", "mitoses_per_10hpf", "tam_density_per_mm2"):
        assert numbers[key] is None, key
    assert numbers["tam_high"] is None


def _analyse_real(
    real_slide: Path,
    scope: ScopeSettings,
    analyses: tuple[str, ...] = ("pattern", "scope", "necrosis", "grading"),
) -> Any:
    """The analysis result of the real slide (its report validated against the schema)."""
    from models.analysis import analyze_slide
    from models.settings import EngineSettings, PipelineSettings
    from workers.report import validate_report

    settings = PipelineSettings(
        analyses=analyses,
        engine=EngineSettings(device="cpu", num_workers=0),
        scope=scope,
    )
    result = analyze_slide(real_slide, settings)
    validate_report(result.report)
    return result


@pytest.mark.slow
def test_real_slide_outside_validated_resolution_withholds_everything(real_slide: Path) -> None:
    """CMU-1-Small-Region (0.499 µm/px, H&E) judged against a 0.25 µm/px limit: outside."""
    rep = _analyse_real(real_slide, ScopeSettings(max_mpp=0.25)).report
    scope = rep["scope"]
    assert (scope["verdict"], scope["rule"], scope["stain"]) == (OUTSIDE, "resolution", "eosin")
    assert scope["mpp"] == pytest.approx(0.499, abs=0.001)
    assert "0.50 µm" in scope["reason"]
    assert (
        rep["pattern"]["predominant"] is None and "outside_validated" in rep["pattern"]["withheld"]
    )
    assert rep["necrosis"]["percent_of_tumour_bed"] is None
    assert all(
        f["met"] is None and "outside_validated" in f["note"] for f in rep["grading"]["flags"]
    )
    assert rep["grading"]["who2022_high_grade_feature_present"] is None


@pytest.mark.slow
def test_real_benign_slide_is_no_tumour(real_slide: Path) -> None:
    """CMU-1-Small-Region (benign skin, H&E): no tumour, no necrosis share, no criterion met, and
    no mitosis or macrophage figure: null with the reason, not 0 (no markers, circle or map)."""
    from models.analyses.mitosis import COUNT_KEYS as MITOSIS_KEYS
    from models.analyses.tam import COUNT_KEYS as TAM_KEYS

    everything = ("pattern", "scope", "necrosis", "mitosis", "tam", "grading")
    result = _analyse_real(real_slide, ScopeSettings(), everything)
    rep = result.report
    assert rep["scope"]["verdict"] == NO_TUMOUR, rep["scope"]
    note = f"no_tumour: {rep['scope']['reason']}"
    assert rep["pattern"]["predominant"] is None and rep["pattern"]["withheld"] == note
    shares = [row["percent_of_tumour"] for row in rep["pattern"]["per_class"].values()]
    assert shares and all(v is None for v in shares)  # no mix of a tumour not found
    assert rep["necrosis"]["area_mm2"] <= 0.02
    assert rep["necrosis"]["percent_of_tumour_bed"] is None and rep["necrosis"]["withheld"] == note
    assert not any(f["met"] for f in rep["grading"]["flags"])
    mitosis, tam = rep["mitosis"], rep["tam"]
    assert {k: mitosis[k] for k in MITOSIS_KEYS} == dict.fromkeys(MITOSIS_KEYS)
    assert mitosis["withheld"] == note and mitosis["hpf_area_mm2"] == 0.237
    assert any(w.startswith("no tumour found on this slide") for w in mitosis["warnings"])
    assert not any("not validated" in w for w in mitosis["warnings"])  # nothing was counted
    assert tam["route"] == "he"  # H&E: the macrophage counts are withheld too
    assert {k: tam[k] for k in TAM_KEYS} == dict.fromkeys(TAM_KEYS) and tam["withheld"] == note
    numbers = rep["grading"]["numbers"]
    for key in ("mitoses_per_2mm2_hotspot", "mitoses_per_10hpf", "tam_density_per_mm2"):
        assert numbers[key] is None, key
    assert numbers["tam_high"] is None
    out = result.outputs
    assert out.circles == [], out.circles
    assert not [p.name for p in out.points if p.name.startswith(("Mitosis", "Macrophage"))]
    assert "tam_density" not in {m.name for m in out.maps}
