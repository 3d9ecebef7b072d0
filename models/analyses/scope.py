"""Scope verdict: can this slide be judged, and is there tumour on it?

Runs after the pattern classifier and before necrosis, mitosis, TAM and grading. One verdict per
slide, with a one-sentence reason and the evidence behind it:

- ``outside_validated``: the slide is not what the models were validated on: its second stain is
  neither eosin (H&E) nor DAB (CD68/CD163 IHC), its pixels are coarser than ``max_mpp``, it holds
  no classifiable tissue, or the pattern classifier is unsure on too much of it (the share of
  tissue tiles whose top probability is below ``min_tile_confidence`` exceeds
  ``max_uncertain_fraction``; the tile threshold is the 5th percentile of that probability on real
  validation tiles, see ``docs/model-quality.md``);
- ``no_tumour``: judged, and viable tumour covers less than ``min_tumour_mm2`` or less than
  ``min_tumour_fraction`` of the classified tissue;
- ``in_scope``: judged, and tumour found.

What each verdict withholds (the maps stay; a withheld figure is null and its section says why in
``withheld``, :func:`withheld_note`):

- outside ``in_scope`` (``no_tumour`` and ``outside_validated``): the predominant pattern and the
  mix (:func:`withhold_patterns`), the necrosis percentage of the tumour bed (the necrosis
  analysis) and every grading criterion (``models.analyses.grading``);
- on ``no_tumour`` only: the mitosis counts, densities and hotspots, and the H&E macrophage
  counts, density and fraction (:func:`counts_withheld`): there is no tumour to refer them to.
  On ``outside_validated`` they are reported, but no criterion is assessed on them;
- never: the DAB-positive cells of a CD68/CD163 slide (deliberately; that section also reports
  positive cells per mm² of the tissue analysed, which needs no tumour region).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from models.analyses import AnalysisContext, AnalysisOutput, register_analysis
from models.cells.stain import StainEvidence, stain_evidence
from models.settings import ScopeSettings
from wsi.synthetic.classes import TUMOUR_PATTERNS
from wsi.tissue import read_downsampled

IN_SCOPE = "in_scope"
NO_TUMOUR = "no_tumour"
OUTSIDE = "outside_validated"
VERDICTS = (IN_SCOPE, NO_TUMOUR, OUTSIDE)

#: Report keys the scope verdict withholds from the pattern section outside ``in_scope``.
_WITHHELD_PATTERN_KEYS: dict[str, Any] = {
    "predominant": None,
    "predominant_display": None,
    "mixed": False,
    "secondary_patterns": [],
}


def tile_confidence(
    probs: NDArray[np.float32], classes: tuple[str, ...]
) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """Top probability of every tile, and which tiles are tissue (valid, top class not glass)."""
    valid = np.isfinite(probs).all(axis=1)
    safe = np.nan_to_num(probs, nan=0.0)
    top = np.asarray(safe.max(axis=1), dtype=np.float32)
    tissue = np.asarray(valid, dtype=bool)
    if "background" in classes:
        tissue = tissue & (safe.argmax(axis=1) != classes.index("background"))
    return top, tissue


def judge(
    *,
    stain: StainEvidence,
    mpp: float,
    confidence: NDArray[np.float32],
    tissue_mm2: float,
    viable_tumour_mm2: float,
    s: ScopeSettings,
) -> dict[str, Any]:
    """Apply the scope rules in order; return verdict, rule, reason and the evidence.

    Args:
        stain: the slide's stain evidence (``models.cells.stain.stain_evidence``).
        mpp: the slide's level-0 µm/px.
        confidence: top class probability of every tissue tile of the pattern classifier.
        tissue_mm2: tissue classified by the pattern classifier, mm².
        viable_tumour_mm2: tissue whose tiles' top class is a tumour pattern, mm².
        s: thresholds.
    """
    uncertain = float((confidence < s.min_tile_confidence).mean()) if confidence.size else 0.0
    fraction = viable_tumour_mm2 / tissue_mm2 if tissue_mm2 > 0 else 0.0
    evidence: dict[str, Any] = {
        "stain": stain.counterpart,
        "stain_dab_fraction": round(stain.dab_fraction, 4),
        "stain_eosin_fraction": round(stain.eosin_fraction, 4),
        "mpp": round(mpp, 4),
        "max_mpp": s.max_mpp,
        "tissue_tiles": int(confidence.size),
        "uncertain_tile_fraction": round(uncertain, 4),
        "min_tile_confidence": s.min_tile_confidence,
        "max_uncertain_fraction": s.max_uncertain_fraction,
        "classified_tissue_mm2": round(tissue_mm2, 4),
        "viable_tumour_mm2": round(viable_tumour_mm2, 4),
        "viable_tumour_fraction": round(fraction, 4),
        "min_tumour_mm2": s.min_tumour_mm2,
        "min_tumour_fraction": s.min_tumour_fraction,
    }
    rule, verdict, reason = _rule(stain, mpp, confidence.size, uncertain, fraction, evidence, s)
    return {"verdict": verdict, "rule": rule, "reason": reason, **evidence}


def _rule(
    stain: StainEvidence,
    mpp: float,
    n_tiles: int,
    uncertain: float,
    fraction: float,
    ev: dict[str, Any],
    s: ScopeSettings,
) -> tuple[str, str, str]:
    if stain.counterpart not in ("eosin", "dab"):
        return (
            "stain",
            OUTSIDE,
            "The stain could not be recognised as H&E or CD68/CD163 immunohistochemistry, so the "
            "models' results on this slide are not validated.",
        )
    if mpp > s.max_mpp:
        return (
            "resolution",
            OUTSIDE,
            f"The slide's pixels ({mpp:.2f} µm) are coarser than the {s.max_mpp:.2f} µm the "
            "models were validated at.",
        )
    if n_tiles == 0:
        return ("no_tissue", OUTSIDE, "No tissue could be classified on this slide.")
    if uncertain > s.max_uncertain_fraction:
        return (
            "uncertain",
            OUTSIDE,
            f"The tissue is not recognised: the pattern classifier is unsure on "
            f"{100 * uncertain:.0f}% of the tissue tiles (validated inputs: at most "
            f"{100 * s.max_uncertain_fraction:.0f}%).",
        )
    mm2 = ev["viable_tumour_mm2"]
    if mm2 < s.min_tumour_mm2 or fraction < s.min_tumour_fraction:
        return (
            "tumour",
            NO_TUMOUR,
            f"No tumour was found: tumour-pattern tiles cover {mm2:.3f} mm² "
            f"({100 * fraction:.1f}% of the pattern-classified tissue), "
            f"below {s.min_tumour_mm2:g} mm² or "
            f"{100 * s.min_tumour_fraction:g}%.",
        )
    return (
        "tumour",
        IN_SCOPE,
        f"Tumour found on {mm2:.2f} mm² ({100 * fraction:.0f}% of the pattern-classified "
        "tissue) of an H&E or IHC slide within the validated resolution.",
    )


def withhold_patterns(pattern_report: dict[str, Any], verdict: dict[str, Any]) -> None:
    """Outside ``in_scope``: drop the predominant pattern and the mix (maps and areas stay).

    The mix is each pattern's ``percent_of_tumour``: a share of a tumour the slide is not judged
    to hold (CMU-1's benign skin read "100 % pleomorphic" from 0.03 mm² of tiles), so it is None.
    """
    if verdict["verdict"] == IN_SCOPE:
        return
    pattern_report.update(
        {k: (list(v) if isinstance(v, list) else v) for k, v in _WITHHELD_PATTERN_KEYS.items()}
    )
    for row in pattern_report.get("per_class", {}).values():
        if isinstance(row, dict) and "percent_of_tumour" in row:
            row["percent_of_tumour"] = None
    pattern_report["withheld"] = withheld_note(verdict)


def withheld_note(verdict: dict[str, Any]) -> str:
    """Return a section's ``withheld`` value: ``"<verdict>: <reason>"`` (one sentence)."""
    return f"{verdict['verdict']}: {verdict['reason']}"


def withhold(report: dict[str, Any], keys: tuple[str, ...], note: str) -> None:
    """Set ``keys`` of a report section to None and record why in its ``withheld``."""
    report.update(dict.fromkeys(keys))
    report["withheld"] = note


def scope_of(results: dict[str, Any]) -> dict[str, Any] | None:
    """The scope report among the analyses that ran, or None."""
    out = results.get("scope")
    return getattr(out, "report", None) if out is not None else None


def counts_withheld(results: dict[str, Any], *, ihc: bool = False) -> str | None:
    """Return the ``withheld`` note when the verdict withholds a cell count, else None.

    The mitosis counts and the H&E macrophage counts are withheld on "no tumour found"; the
    DAB-positive cells of an IHC slide (``ihc``) are not withheld.
    """
    scope = scope_of(results)
    if ihc or scope is None or scope["verdict"] != NO_TUMOUR:
        return None
    return withheld_note(scope)


@register_analysis
class ScopeAnalysis:
    """Scope verdict from the stain, the pixel size and the pattern classifier (no model)."""

    name = "scope"
    requires: tuple[str, ...] = ("pattern",)
    after: tuple[str, ...] = ()

    def run(self, ctx: AnalysisContext) -> AnalysisOutput:
        """Judge the slide and withhold the pattern summary when it is not in scope."""
        s = ctx.settings.scope
        pattern = ctx.results["pattern"]
        probs = pattern.data["probs"]
        classes = tuple(pattern.report["tissue_classes"])
        top, tissue = tile_confidence(probs, classes)
        low, _ = read_downsampled(ctx.slide, s.stain_mpp)
        stain = stain_evidence(low, ctx.settings.tam.dab_od_threshold)
        areas = {c: float(v["area_mm2"]) for c, v in pattern.report["tissue_classes"].items()}
        tumour = sum(areas[c] for c in TUMOUR_PATTERNS if c in areas)
        report = judge(
            stain=stain,
            mpp=ctx.mpp_override or ctx.slide.mpp,
            confidence=top[tissue],
            tissue_mm2=sum(v for c, v in areas.items() if c != "background"),
            viable_tumour_mm2=float(tumour),
            s=s,
        )
        withhold_patterns(pattern.report, report)
        return AnalysisOutput(self.name, report=report)
