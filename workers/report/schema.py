"""The versioned JSON Schema of ``report.json`` and its validator.

The schema is built here (one source of truth) and kept as ``docs/report.schema.json``;
regenerate that file with ``python -m workers.report.schema > docs/report.schema.json`` (a test
checks the two agree).

Versioning: ``schema_version`` is ``"MAJOR.MINOR"``. A minor version only adds optional keys, so a
reader of 1.x accepts every 1.y report; a major version changes or removes keys. The core
(``schema_version``, ``slide``, ``provenance``) is always required; analysis sections
(``tissue``, ``pattern``, ``scope``, ``necrosis``, ``mitosis``, ``tam``, ``grading``, ``qc``) are
present only when that analysis ran, and fully specified when present. Sections may carry extra
keys.

A figure the scope verdict withholds is null, and its section says why in ``withheld``
(``"<verdict>: <reason>"``, 1.2; ``models.analyses.scope``).
"""

from __future__ import annotations

import json
import sys
from typing import Any, Final

import jsonschema

from workers.report.schema_cells import mitosis_section, tam_section
from workers.report.schema_types import (
    Schema,
    integer,
    null_when_withheld,
    number,
    obj,
    string,
    withheld_note,
)

#: The version this code writes and validates (any 1.x report validates).
REPORT_SCHEMA_VERSION: Final[str] = "1.2"
SCHEMA_ID: Final[str] = "https://atc-wsi.example/schemas/report-1.json"


class ReportValidationError(ValueError):
    """``report.json`` does not match its schema; the message names the key and the problem."""


def _colour_qc() -> Schema:
    return obj(
        {
            "verdict": {
                "enum": ["neutral", "ycbcr_as_rgb", "off_neutral", "skipped"],
                "description": "glass colour check (wsi.colour): ycbcr_as_rgb = frames in YCbCr "
                "labelled RGB, corrected when `corrected` is true",
            },
            "level": integer(-1, "pyramid level measured (-1: skipped)"),
            "glass_rgb": {
                "type": "array",
                "items": number(0, 255),
                "minItems": 3,
                "maxItems": 3,
                "description": "median RGB (0-255) of the palest 10% of pixels, as read",
            },
            "chroma": number(0, 255, desc="max - min of glass_rgb"),
            "corrected": {"type": "boolean", "description": "pixels converted YCbCr → RGB"},
            "jpeg_markers": string("colour space the first JPEG frame's markers declare"),
            "reason": string("one sentence"),
        },
        "glass (background) colour check at a low level",
    )


_TIMESTAMP = string("ISO 8601 date-time, UTC", pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}")


def _slide() -> Schema:
    return obj(
        {
            "path": string("slide file as analysed"),
            "width": integer(1, "level-0 width, px"),
            "height": integer(1, "level-0 height, px"),
            "mpp": number(0, desc="level-0 pixel size, µm/px"),
            "vendor": string("OpenSlide vendor"),
            "objective_power": number(0, nullable=True, desc="scanner objective magnification"),
            "fingerprint": string("content identity (quickhash1:… or sha256:…)"),
        },
        "slide facts",
    )


def _pattern() -> Schema:
    per_class = obj(
        {
            "area_mm2": number(0, desc="area classified as this pattern, mm²"),
            "percent_of_tumour": number(
                0, 100, nullable=True, desc="share of viable tumour area, %; null outside in_scope"
            ),
        },
        "one pattern's area",
    )
    section = obj(
        {
            "per_class": {
                "type": "object",
                "additionalProperties": per_class,
                "description": "keyed by pattern class (spindle, pleomorphic, squamoid …)",
            },
            "predominant": string("pattern with the largest tumour share", nullable=True),
            "mixed": {
                "type": "boolean",
                "description": "a secondary pattern exceeds 10% of tumour",
            },
            "withheld": withheld_note(),
        },
        "tumour growth patterns",
        optional=("withheld",),
    )
    return null_when_withheld(section, ("predominant",))


def _grading() -> Schema:
    flag = obj(
        {
            "name": string("identifier, e.g. who2022_mitoses"),
            "criterion": string("criterion in words, e.g. 'WHO 2022: ≥ 5 mitoses per 2 mm²'"),
            "measured": number(nullable=True, desc="measured value (null: not measured)"),
            "threshold": number(desc="threshold used"),
            "unit": string("unit of measured and threshold"),
            "met": {
                "type": ["boolean", "null"],
                "description": "null: unknown (not measured, or not assessed outside scope)",
            },
            "note": string("why the criterion was not assessed (1.1)"),
        },
        "one grading criterion",
        optional=("note",),
    )
    return obj(
        {
            "flags": {"type": "array", "items": flag},
            "disclaimer": string("decision support, not a diagnosis", minLength=1),
            "caveats": {
                "type": "array",
                "items": {"type": "string"},
                "description": "warnings of the analyses the flags rest on",
            },
        },
        "grading flags (decision support)",
        optional=("caveats",),
    )


def _scope() -> Schema:
    return obj(
        {
            "verdict": {
                "enum": ["in_scope", "no_tumour", "outside_validated"],
                "description": "in_scope: tumour found; no_tumour: judged, none found; "
                "outside_validated: not an input the models were validated on",
            },
            "reason": string("one sentence for the reader", minLength=1),
            "rule": string(
                "the rule that decided: stain, resolution, no_tissue, uncertain, tumour"
            ),
            "stain": string("second stain besides haematoxylin: eosin, dab or unknown"),
            "mpp": number(0, desc="level-0 µm/px"),
            "uncertain_tile_fraction": number(
                0, 1, desc="share of tissue tiles the pattern classifier is unsure on"
            ),
            "viable_tumour_mm2": number(0, desc="tissue in tumour-pattern tiles, mm²"),
        },
        "scope verdict (1.1): can the slide be judged, and is there tumour",
    )


def _provenance() -> Schema:
    model = obj(
        {
            "name": string("registry name"),
            "version": string("model version"),
            "sha256": string("weights file SHA-256", pattern="^[0-9a-f]{64}$"),
        },
        "one model used",
    )
    return obj(
        {
            "package_version": string("atc-wsi version"),
            "git_commit": string("source commit when known", nullable=True),
            "models": {"type": "array", "items": model},
            "config_hash": string("hash of the effective configuration"),
            "device": string("e.g. cpu, cuda:0"),
            "dtype": string("inference precision, e.g. float32, bfloat16"),
            "durations_s": {
                "type": "object",
                "additionalProperties": number(0),
                "description": "seconds per stage",
            },
            "started_at": _TIMESTAMP,
            "finished_at": _TIMESTAMP,
        },
        "how this report was produced",
    )


def _outputs() -> Schema:
    overlay = obj(
        {
            "name": string("map name"),
            "form": {"enum": ["rgba", "u8"]},
            "path": string("TIFF path relative to the output folder"),
            "kind": {"enum": ["probability", "mask", "density", "label"]},
            "unit": string("unit of the values"),
            "vmax": number(desc="value at code 255"),
            "value_per_code": number(0, desc="value of one u8 code step"),
        },
        "one overlay TIFF",
    )
    return obj(
        {
            "files": {
                "type": "object",
                "additionalProperties": string(),
                "description": "role → path relative to the output folder",
            },
            "overlays": {"type": "array", "items": overlay},
        },
        "files written beside report.json",
    )


def build_schema() -> Schema:
    """Return the JSON Schema (draft 2020-12) of ``report.json``."""
    sections: dict[str, Schema] = {
        "schema_version": string("report schema version MAJOR.MINOR", pattern=r"^1\.\d+$"),
        "slide": _slide(),
        "provenance": _provenance(),
        "tissue": obj({"area_mm2": number(0, desc="tissue area, mm²")}, "tissue detection"),
        "pattern": _pattern(),
        "scope": _scope(),
        "necrosis": null_when_withheld(
            obj(
                {
                    "area_mm2": number(0, desc="necrosis area, mm²"),
                    "percent_of_tumour_bed": number(
                        0, 100, nullable=True, desc="necrosis / (viable tumour + necrosis), %"
                    ),
                    "withheld": withheld_note(),
                },
                "tumour necrosis (outside in_scope the percentage is withheld, the area stays)",
                optional=("withheld",),
            ),
            ("percent_of_tumour_bed",),
        ),
        "mitosis": mitosis_section(),
        "tam": tam_section(),
        "grading": _grading(),
        "qc": obj(
            {
                "unreadable_tiles": integer(0, "tiles whose pixels could not be decoded"),
                "pen_fraction": number(0, 1, desc="share of the mask removed as pen ink"),
                "blur_fraction": number(0, 1, desc="share of tissue tiles judged blurred"),
                "colour": _colour_qc(),
            },
            "quality control",
            optional=("colour",),
        ),
        "outputs": _outputs(),
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "atc-wsi slide report",
        "description": "One slide's analysis: slide facts, results per analysis, provenance.",
        "type": "object",
        "properties": sections,
        "required": ["schema_version", "slide", "provenance"],
        "additionalProperties": True,
    }


_VALIDATOR = jsonschema.Draft202012Validator(build_schema())


def validate_report(report: dict[str, Any]) -> None:
    """Raise :class:`ReportValidationError` listing every mismatch (key path and reason)."""
    errors = sorted(_VALIDATOR.iter_errors(report), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [
            f"{'/'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
            for e in errors[:10]
        ]
        more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
        raise ReportValidationError(
            f"report.json does not match schema {REPORT_SCHEMA_VERSION}: " + "; ".join(lines) + more
        )


def schema_json() -> str:
    """Return the schema as the text kept in ``docs/report.schema.json``."""
    return json.dumps(build_schema(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    sys.stdout.write(schema_json())
