"""The one class vocabulary of the project: tissue patterns and mitotic figures.

Truth (the synthetic generator's GeoJSON, a lab's QuPath annotations), predictions (model outputs,
reports, GeoJSON exports) and the training code all name classes from here. Display names follow
QuPath's convention for derived classes, ``"Base: Sub"``: a QuPath user can filter every mitosis by
the base class ``Mitosis`` and the subtypes by ``Mitosis: Atypical`` or ``Mitosis: Tripolar``.
Tripolar (multipolar) figures are atypical mitoses; reports count them within the atypical total
and on their own (the atypical form the mission asks for).

Indices matter: a pattern label-map value, a pattern-classifier output channel and a
``PATTERN_CLASSES`` position are the same thing; likewise ``MITOSIS_CLASSES`` and the mitosis
crop classifier's outputs.
"""

from __future__ import annotations

from typing import Final

#: Tissue classes. Index = label-map value = pattern-classifier output channel.
PATTERN_CLASSES: Final[tuple[str, ...]] = (
    "background",  # glass, artefact (pen, dust, bubbles, folds)
    "spindle",
    "pleomorphic",  # pleomorphic giant cell
    "squamoid",
    "necrosis",
    "non_tumour",
)

#: Display names used in QuPath GeoJSON ``classification.name`` and in reports.
PATTERN_DISPLAY: Final[dict[str, str]] = {
    "background": "Background",
    "spindle": "Spindle",
    "pleomorphic": "Pleomorphic giant cell",
    "squamoid": "Squamoid",
    "necrosis": "Necrosis",
    "non_tumour": "Non-tumour",
}

#: Viable tumour patterns (the tumour bed is these plus necrosis).
TUMOUR_PATTERNS: Final[tuple[str, ...]] = ("spindle", "pleomorphic", "squamoid")

#: Mitosis crop-classifier classes. Index 0 is "not a mitosis" (look-alikes, ordinary nuclei).
MITOSIS_CLASSES: Final[tuple[str, ...]] = (
    "negative",
    "mitosis_typical",
    "mitosis_atypical",  # atypical forms other than tri/multipolar (segregation errors …)
    "mitosis_tripolar",  # tri- and multipolar figures (atypical)
)

#: The atypical mitosis classes (tripolar figures are atypical).
ATYPICAL_MITOSES: Final[tuple[str, ...]] = ("mitosis_atypical", "mitosis_tripolar")

#: QuPath display names of the mitosis classes (truth and predictions alike).
MITOSIS_DISPLAY: Final[dict[str, str]] = {
    "mitosis_typical": "Mitosis: Typical",
    "mitosis_atypical": "Mitosis: Atypical",
    "mitosis_tripolar": "Mitosis: Tripolar",
}

#: Older and common names of mitosis classes accepted on import (lower case).
MITOSIS_SYNONYMS: Final[dict[str, str]] = {
    "mitosis": "mitosis_typical",
    "mitosis typical": "mitosis_typical",
    "typical mitosis": "mitosis_typical",
    "mitosis atypical": "mitosis_atypical",
    "atypical mitosis": "mitosis_atypical",
    "mitosis tripolar": "mitosis_tripolar",
    "mitosis multipolar": "mitosis_tripolar",
    "mitosis: multipolar": "mitosis_tripolar",
    "mitosis: atypical: tripolar": "mitosis_tripolar",
}


def pattern_index(name: str) -> int:
    """Return the label value of a pattern class name."""
    try:
        return PATTERN_CLASSES.index(name)
    except ValueError:
        raise ValueError(
            f"unknown pattern class {name!r}; expected one of {', '.join(PATTERN_CLASSES)}"
        ) from None


def mitosis_class(display_name: str) -> str:
    """Return the mitosis class (``mitosis_typical`` …) of a display or legacy name.

    Raises:
        ValueError: not a mitosis class name (the message lists the known names).
    """
    key = display_name.strip().lower()
    for cls, disp in MITOSIS_DISPLAY.items():
        if key in (disp.lower(), cls):
            return cls
    if key in MITOSIS_SYNONYMS:
        return MITOSIS_SYNONYMS[key]
    known = ", ".join([*MITOSIS_DISPLAY.values(), *MITOSIS_SYNONYMS])
    raise ValueError(f"unknown mitosis class {display_name!r}; known: {known}")
