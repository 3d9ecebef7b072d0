"""The generator's own class codes; the shared vocabulary is :mod:`wsi.taxonomy` (re-exported)."""

from __future__ import annotations

from typing import Final

from wsi.taxonomy import (  # the vocabulary lives in wsi.taxonomy; re-exported here
    MITOSIS_DISPLAY,
    PATTERN_CLASSES,
    PATTERN_DISPLAY,
    TUMOUR_PATTERNS,
    pattern_index,
)

#: The generator's figure classes: index = the class code its truth and patch samplers use.
FIGURE_CLASSES: Final[tuple[str, ...]] = ("negative", "mitosis_typical", "mitosis_tripolar")

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


__all__ = [
    "FIGURE_CLASSES",
    "LOOKALIKE_KINDS",
    "MITOSIS_DISPLAY",
    "PATTERN_CLASSES",
    "PATTERN_DISPLAY",
    "STAINS",
    "TUMOUR_PATTERNS",
    "pattern_index",
]
