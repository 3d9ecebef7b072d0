"""Class vocabularies shared by the synthetic generator, the models and the reports.

These tuples are the contract between ground truth and predictions: the integer value of a
label-map pixel, a pattern-classifier output index and a ``PATTERN_CLASSES`` position are the
same thing.
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
MITOSIS_CLASSES: Final[tuple[str, ...]] = ("negative", "mitosis_typical", "mitosis_tripolar")

MITOSIS_DISPLAY: Final[dict[str, str]] = {
    "mitosis_typical": "Mitosis",
    "mitosis_tripolar": "Mitosis tripolar",
}

#: Look-alike negative kinds the generator plants (GeoJSON class "Lookalike <kind>").
LOOKALIKE_KINDS: Final[tuple[str, ...]] = (
    "apoptotic",
    "pyknotic",
    "lymphocyte",
    "karyorrhectic",
    "tangential",
)

#: Stains the generator renders and the TAM analysis understands.
STAINS: Final[tuple[str, ...]] = ("he", "cd68", "cd163")


def pattern_index(name: str) -> int:
    """Return the label value of a pattern class name."""
    try:
        return PATTERN_CLASSES.index(name)
    except ValueError:
        raise ValueError(
            f"unknown pattern class {name!r}; expected one of {', '.join(PATTERN_CLASSES)}"
        ) from None
