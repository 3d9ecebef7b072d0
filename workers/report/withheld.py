"""Reading a report section's ``withheld`` note: ``"<verdict>: <reason>"``, written by
``models.analyses.scope.withheld_note`` when the scope verdict withholds the section's figures."""

from __future__ import annotations

from typing import Any

NOT_ASSESSED = "not assessed"
#: The reason as the reader sees it beside a withheld figure (the scope verdict's own sentence,
#: with its measurements, is shown once, at the top).
_SHORT_REASONS = {
    "no_tumour": "no tumour was found on this slide",
    "outside_validated": "the slide is outside the inputs the models were validated on",
}


def withheld_reason(section: dict[str, Any] | None) -> str | None:
    """Return the one-sentence reason a section's figures are withheld, or None (not withheld)."""
    note = (section or {}).get("withheld")
    if not note:
        return None
    verdict, sep, reason = str(note).partition(": ")
    return reason if sep else verdict


def withheld_verdict(section: dict[str, Any] | None) -> str | None:
    """Return the verdict that withholds a section's figures (e.g. ``no_tumour``), or None."""
    note = (section or {}).get("withheld")
    return str(note).partition(": ")[0] if note else None


def not_assessed(section: dict[str, Any] | None) -> str | None:
    """Return ``"not assessed — <one-sentence reason>"`` for a withheld section, else None."""
    verdict = withheld_verdict(section)
    if verdict is None:
        return None
    return f"{NOT_ASSESSED} — {_SHORT_REASONS.get(verdict) or withheld_reason(section)}"
