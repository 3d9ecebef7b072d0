"""One class vocabulary for truth and predictions (``wsi.taxonomy``)."""

from __future__ import annotations

import pytest

from wsi import taxonomy as T
from wsi.synthetic import classes as generator_classes


def test_generator_reexports_the_shared_vocabulary() -> None:
    assert generator_classes.PATTERN_CLASSES is T.PATTERN_CLASSES
    assert generator_classes.MITOSIS_DISPLAY is T.MITOSIS_DISPLAY
    # the generator's figure codes are names of the shared vocabulary
    assert set(generator_classes.FIGURE_CLASSES) <= set(T.MITOSIS_CLASSES)


def test_mitosis_names_follow_qupath_derived_classes() -> None:
    for cls in T.MITOSIS_CLASSES[1:]:
        name = T.MITOSIS_DISPLAY[cls]
        base, _, sub = name.partition(": ")
        assert base == "Mitosis" and sub  # QuPath "Base: Sub"
        assert T.mitosis_class(name) == cls
    assert set(T.ATYPICAL_MITOSES) == {"mitosis_atypical", "mitosis_tripolar"}


@pytest.mark.parametrize(
    ("legacy", "cls"),
    [
        ("Mitosis", "mitosis_typical"),
        ("Mitosis tripolar", "mitosis_tripolar"),
        ("mitosis typical", "mitosis_typical"),
        ("Mitosis: Multipolar", "mitosis_tripolar"),
    ],
)
def test_legacy_names_are_read(legacy: str, cls: str) -> None:
    assert T.mitosis_class(legacy) == cls


def test_unknown_names_list_the_known_ones() -> None:
    with pytest.raises(ValueError, match="Mitosis: Atypical"):
        T.mitosis_class("Prophase-ish")
    with pytest.raises(ValueError, match="spindle"):
        T.pattern_index("sarcoma")
