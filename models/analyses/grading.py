"""Grading numbers and flags pathologists use for thyroid carcinoma (decision support only).

Pure Python: takes the per-slide numbers the other analyses measured and compares them with the
thresholds in ``GradingSettings``: WHO 2022 high-grade features (≥ 5 mitoses per 2 mm², tumour
necrosis) and the Turin criterion for poorly differentiated carcinoma (≥ 3 mitoses per 10 HPF).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from models.analyses import AnalysisContext, AnalysisOutput, register_analysis
from models.analyses.scope import IN_SCOPE, scope_of
from models.analyses.settings_cells import GradingSettings

DISCLAIMER = (
    "Decision support only, not a diagnosis: these numbers come from automated image analysis "
    "and must be confirmed by a pathologist on the glass slide or the whole-slide image."
)


@dataclass(frozen=True)
class GradingInputs:
    """The measured numbers; ``None`` means the analysis that measures it did not run.

    Attributes:
        mitoses_per_2mm2: mitoses in the 2 mm² hotspot.
        mitoses_per_10hpf: mitoses in the densest 10-HPF-area circle.
        hpf_area_mm2: area of one HPF used for the per-10-HPF count.
        atypical_count: atypical mitoses on the slide (tripolar ones included).
        tripolar_count: atypical tripolar mitoses on the slide.
        necrosis_area_mm2: tumour necrosis area.
        necrosis_percent: necrosis as a percentage of the tumour bed.
        tam_density_per_mm2: macrophages (or DAB-positive cells) per mm² of tumour.
        tam_fraction: macrophages / nucleated cells in tumour (H&E route only).
        pattern_mix: percentage of tumour per pattern.
    """

    mitoses_per_2mm2: int | None = None
    mitoses_per_10hpf: int | None = None
    hpf_area_mm2: float | None = None
    atypical_count: int | None = None
    tripolar_count: int | None = None
    necrosis_area_mm2: float | None = None
    necrosis_percent: float | None = None
    tam_density_per_mm2: float | None = None
    tam_fraction: float | None = None
    pattern_mix: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Flag:
    """One criterion: its measured value, threshold and whether it is met (``None``: unknown)."""

    name: str
    criterion: str
    measured: float | None
    threshold: float
    unit: str
    met: bool | None
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the flag as a JSON-ready dict (``note`` only when there is one)."""
        out: dict[str, Any] = {
            "name": self.name,
            "criterion": self.criterion,
            "measured": self.measured,
            "threshold": self.threshold,
            "unit": self.unit,
            "met": self.met,
        }
        if self.note:
            out["note"] = self.note
        return out


def _at_least(value: float | None, threshold: float) -> bool | None:
    return None if value is None else value >= threshold


def grading_flags(x: GradingInputs, s: GradingSettings) -> list[Flag]:
    """Return the WHO 2022 and Turin flags for the measured numbers."""
    necrosis_met = (
        None if x.necrosis_area_mm2 is None else x.necrosis_area_mm2 > s.necrosis_min_area_mm2
    )
    return [
        Flag(
            "who2022_mitoses",
            "WHO 2022 high-grade feature: mitoses per 2 mm² hotspot ≥ threshold",
            None if x.mitoses_per_2mm2 is None else float(x.mitoses_per_2mm2),
            s.who_mitoses_per_2mm2,
            "mitoses/2 mm²",
            _at_least(x.mitoses_per_2mm2, s.who_mitoses_per_2mm2),
        ),
        Flag(
            "who2022_necrosis",
            "WHO 2022 high-grade feature: tumour necrosis present (area above threshold)",
            x.necrosis_area_mm2,
            s.necrosis_min_area_mm2,
            "mm²",
            necrosis_met,
        ),
        Flag(
            "turin_mitoses",
            "Turin criterion (poorly differentiated carcinoma): mitoses per 10 HPF ≥ threshold",
            None if x.mitoses_per_10hpf is None else float(x.mitoses_per_10hpf),
            s.turin_mitoses_per_10hpf,
            "mitoses/10 HPF",
            _at_least(x.mitoses_per_10hpf, s.turin_mitoses_per_10hpf),
        ),
        Flag(
            "turin_necrosis",
            "Turin criterion (poorly differentiated carcinoma): tumour necrosis present",
            x.necrosis_area_mm2,
            s.necrosis_min_area_mm2,
            "mm²",
            necrosis_met,
        ),
    ]


def withhold_flags(flags: list[Flag], scope: dict[str, Any] | None) -> list[Flag]:
    """Outside ``in_scope`` no criterion is assessed: ``met`` becomes None, the reason a note.

    A slide without tumour, or one the models were not validated for, cannot meet a tumour
    grading criterion, whatever the detectors counted on it.
    """
    if scope is None or scope["verdict"] == IN_SCOPE:
        return flags
    note = f"not assessed ({scope['verdict']}): {scope['reason']}"
    return [replace(f, met=None, note=note) for f in flags]


def grading_report(
    x: GradingInputs, s: GradingSettings, scope: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Return the ``grading`` section: numbers, flags (withheld outside scope), disclaimer."""
    flags = withhold_flags(grading_flags(x, s), scope)
    who = [f.met for f in flags if f.name.startswith("who2022")]
    return {
        "numbers": {
            "mitoses_per_2mm2_hotspot": x.mitoses_per_2mm2,
            "mitoses_per_10hpf": x.mitoses_per_10hpf,
            "hpf_area_mm2": x.hpf_area_mm2,
            "ten_hpf_area_mm2": None if x.hpf_area_mm2 is None else round(10 * x.hpf_area_mm2, 4),
            "atypical_mitoses": x.atypical_count,
            "tripolar_mitoses": x.tripolar_count,
            "necrosis_area_mm2": x.necrosis_area_mm2,
            "necrosis_percent_of_tumour_bed": x.necrosis_percent,
            "necrosis_present": flags[1].met,
            "tam_density_per_mm2": x.tam_density_per_mm2,
            "tam_fraction_of_nucleated_cells": x.tam_fraction,
            "tam_high": _at_least(x.tam_density_per_mm2, s.tam_high_per_mm2),
            "tam_high_threshold_per_mm2": s.tam_high_per_mm2,
            "pattern_mix_percent": dict(x.pattern_mix),
        },
        "flags": [f.to_dict() for f in flags],
        "who2022_high_grade_feature_present": (
            True if any(m is True for m in who) else (None if None in who else False)
        ),
        "disclaimer": DISCLAIMER,
        **({"scope_verdict": scope["verdict"]} if scope is not None else {}),
    }


def inputs_from_results(results: dict[str, Any], hpf_area_mm2: float) -> GradingInputs:
    """Collect the grading numbers from the reports of the analyses that ran.

    Args:
        results: ``AnalysisContext.results`` (name → output with a ``report`` dict).
        hpf_area_mm2: HPF area used by the mitosis analysis.
    """

    def rep(name: str) -> dict[str, Any] | None:
        out = results.get(name)
        return getattr(out, "report", None) if out is not None else None

    mit, nec, tam, pat = rep("mitosis"), rep("necrosis"), rep("tam"), rep("pattern")
    mix: dict[str, float] = {}
    if pat:
        for cls, row in pat.get("classes", {}).items():
            if row.get("percent_of_tumour") is not None:
                mix[cls] = float(row["percent_of_tumour"])
    return GradingInputs(
        mitoses_per_2mm2=mit.get("mitoses_per_2mm2_hotspot") if mit else None,
        mitoses_per_10hpf=mit.get("mitoses_per_10hpf") if mit else None,
        hpf_area_mm2=mit.get("hpf_area_mm2", hpf_area_mm2) if mit else None,
        atypical_count=mit.get("count_atypical") if mit else None,
        tripolar_count=mit.get("count_tripolar") if mit else None,
        necrosis_area_mm2=nec.get("area_mm2") if nec else None,
        necrosis_percent=nec.get("percent_of_tumour_bed") if nec else None,
        tam_density_per_mm2=tam.get("density_per_mm2") if tam else None,
        tam_fraction=tam.get("tam_fraction") if tam else None,
        pattern_mix=mix,
    )


def upstream_warnings(results: dict[str, Any]) -> list[str]:
    """Return the warnings of the analyses the grading numbers come from, prefixed by name.

    A flag built on an implausible or refused count must carry that caveat beside it.
    """
    out = []
    for name in ("pattern", "necrosis", "mitosis", "tam"):
        rep = getattr(results.get(name), "report", None) or {}
        out += [f"{name}: {w}" for w in rep.get("warnings") or []]
    return out


@register_analysis
class GradingAnalysis:
    """Grading numbers and WHO 2022 / Turin flags from the other analyses (no model)."""

    name = "grading"
    requires: tuple[str, ...] = ("scope",)
    after: tuple[str, ...] = ("pattern", "necrosis", "mitosis", "tam")

    def run(self, ctx: AnalysisContext) -> AnalysisOutput:
        """Compare the measured numbers with the configured thresholds."""
        x = inputs_from_results(dict(ctx.results), ctx.settings.mitosis.hpf_area_mm2)
        report = grading_report(x, ctx.settings.grading, scope_of(dict(ctx.results)))
        report["caveats"] = upstream_warnings(dict(ctx.results))
        return AnalysisOutput(self.name, report=report)
