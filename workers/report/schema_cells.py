"""Schemas of the cell-count sections of ``report.json`` (mitosis, TAM): counted, skipped or
withheld by the scope verdict."""

from __future__ import annotations

from workers.report.schema_types import (
    XY,
    Schema,
    integer,
    nulls,
    number,
    obj,
    withheld_note,
)


def _circle(desc: str) -> Schema:
    circle = obj(
        {
            "l0_center": XY,
            "l0_radius": number(0, desc="circle radius, level-0 px"),
            "area_mm2": number(0, desc="circle area, mm²"),
            "count": integer(0, "mitoses inside the circle"),
        },
        desc,
    )
    return {
        "oneOf": [circle, {"type": "null"}],
        "description": desc + " (null: no mitoses, or withheld)",
    }


#: Mitosis figures null when withheld (``models.analyses.mitosis.COUNT_KEYS``).
MITOSIS_COUNTS = (
    "count_total",
    "count_typical",
    "count_atypical",
    "count_tripolar",
    "percent_atypical",
    "percent_tripolar",
    "per_mm2_viable_tumour",
    "hotspot_2mm2",
    "mitoses_per_2mm2_hotspot",
    "hpf_circle",
    "mitoses_per_10hpf",
)
#: H&E macrophage figures null when withheld (``models.analyses.tam.COUNT_KEYS``).
TAM_COUNTS = ("macrophages", "nucleated_cells", "density_per_mm2", "tam_fraction")


def mitosis_section() -> Schema:
    skipped = obj(
        {
            "count_total": {"type": "null", "description": "null: the mitosis pass did not run"},
            "warnings": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        },
        "mitosis pass skipped (e.g. an IHC slide), with the reason in warnings",
    )
    withheld = obj(
        {
            "withheld": withheld_note(),
            "hpf_area_mm2": number(0, desc="area of one high-power field used, mm²"),
            "n_hpf": integer(1, "high-power fields in the per-HPF count (10)"),
            "warnings": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        },
        "mitosis pass run, counts withheld by the scope verdict (no tumour found, 1.2): every "
        "count, density and hotspot is null",
    )
    withheld["properties"] |= nulls(MITOSIS_COUNTS)["properties"]
    withheld["required"] = [*withheld["required"], *MITOSIS_COUNTS]
    return {
        "type": "object",
        "if": {"required": ["withheld"]},
        "then": withheld,
        "else": {
            "if": {"properties": {"count_total": {"type": "null"}}, "required": ["count_total"]},
            "then": skipped,
            "else": _mitosis_counts(),
        },
    }


def _mitosis_counts() -> Schema:
    return obj(
        {
            "count_total": integer(0, "mitoses detected"),
            "count_typical": integer(0, "classified 'Mitosis: Typical'"),
            "count_atypical": integer(
                0, "atypical: 'Mitosis: Atypical' plus 'Mitosis: Tripolar' (tripolar is atypical)"
            ),
            "count_tripolar": integer(
                0, "classified 'Mitosis: Tripolar' (tri-/multipolar, atypical)"
            ),
            "percent_atypical": number(0, 100, nullable=True, desc="atypical share of mitoses, %"),
            "percent_tripolar": number(0, 100, nullable=True, desc="tripolar share of mitoses, %"),
            "per_mm2_viable_tumour": number(0, nullable=True, desc="mitoses per mm² of tumour"),
            "hotspot_2mm2": _circle("densest 2 mm² circle within tumour"),
            "mitoses_per_2mm2_hotspot": integer(0, "mitoses in the 2 mm² hotspot"),
            "hpf_area_mm2": number(0, desc="area of one high-power field used, mm²"),
            "n_hpf": integer(1, "high-power fields in the per-HPF count (10)"),
            "mitoses_per_10hpf": integer(0, "mitoses in the densest circle of n_hpf HPF areas"),
            "warnings": {
                "type": "array",
                "items": {"type": "string"},
                "description": "caveats, e.g. an implausibly high count",
            },
        },
        "mitotic figures",
        optional=("warnings",),
    )


def tam_section() -> Schema:
    section = obj(
        {
            "route": {
                "enum": ["he", "ihc", None],
                "description": "H&E detector, CD68/CD163 IHC, or null (route not runnable)",
            },
            "density_per_mm2": number(
                0, nullable=True, desc="macrophages per mm² (basis in area_basis)"
            ),
            "tam_fraction": number(0, 1, nullable=True, desc="TAM share of nucleated cells (H&E)"),
            "macrophages": integer(0, "macrophages counted in tumour (H&E)", nullable=True),
            "nucleated_cells": integer(0, "nucleated cells in tumour (H&E)", nullable=True),
            "dab_positive_area_fraction": number(
                0, 1, nullable=True, desc="DAB-positive share (IHC)"
            ),
            "withheld": withheld_note(),
        },
        "tumour-associated macrophages",
        optional=(
            "density_per_mm2",
            "tam_fraction",
            "macrophages",
            "nucleated_cells",
            "dab_positive_area_fraction",
            "withheld",
        ),
    )
    # A route that ran reports a density; a withheld one (H&E, no tumour found) reports nulls.
    section["allOf"] = [
        {
            "if": {"properties": {"route": {"enum": ["he", "ihc"]}}},
            "then": {"required": ["density_per_mm2"]},
        },
        {
            "if": {"required": ["withheld"]},
            "then": {**nulls(TAM_COUNTS), "required": list(TAM_COUNTS)},
        },
    ]
    return section
