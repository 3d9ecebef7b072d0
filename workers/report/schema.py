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
"""

from __future__ import annotations

import json
import sys
from typing import Any, Final

import jsonschema

#: The version this code writes and validates (any 1.x report validates).
REPORT_SCHEMA_VERSION: Final[str] = "1.1"
SCHEMA_ID: Final[str] = "https://atc-wsi.example/schemas/report-1.json"

Schema = dict[str, Any]


class ReportValidationError(ValueError):
    """``report.json`` does not match its schema; the message names the key and the problem."""


def _num(
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    nullable: bool = False,
    desc: str = "",
) -> Schema:
    out: Schema = {"type": ["number", "null"] if nullable else "number"}
    if minimum is not None:
        out["minimum"] = minimum
    if maximum is not None:
        out["maximum"] = maximum
    if desc:
        out["description"] = desc
    return out


def _int(minimum: int = 0, desc: str = "") -> Schema:
    return {"type": "integer", "minimum": minimum, **({"description": desc} if desc else {})}


def _str(desc: str = "", *, nullable: bool = False, **extra: Any) -> Schema:
    return {
        "type": ["string", "null"] if nullable else "string",
        **extra,
        **({"description": desc} if desc else {}),
    }


def _obj(props: dict[str, Schema], desc: str, *, optional: tuple[str, ...] = ()) -> Schema:
    return {
        "type": "object",
        "description": desc,
        "properties": props,
        "required": [k for k in props if k not in optional],
        "additionalProperties": True,
    }


def _colour_qc() -> Schema:
    return _obj(
        {
            "verdict": {
                "enum": ["neutral", "ycbcr_as_rgb", "off_neutral", "skipped"],
                "description": "glass colour check (wsi.colour): ycbcr_as_rgb = frames in YCbCr "
                "labelled RGB, corrected when `corrected` is true",
            },
            "level": _int(-1, "pyramid level measured (-1: skipped)"),
            "glass_rgb": {
                "type": "array",
                "items": _num(0, 255),
                "minItems": 3,
                "maxItems": 3,
                "description": "median RGB (0-255) of the palest 10% of pixels, as read",
            },
            "chroma": _num(0, 255, desc="max - min of glass_rgb"),
            "corrected": {"type": "boolean", "description": "pixels converted YCbCr → RGB"},
            "jpeg_markers": _str("colour space the first JPEG frame's markers declare"),
            "reason": _str("one sentence"),
        },
        "glass (background) colour check at a low level",
    )


_TIMESTAMP = _str("ISO 8601 date-time, UTC", pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}")
_XY = {
    "type": "array",
    "items": {"type": "number"},
    "minItems": 2,
    "maxItems": 2,
    "description": "level-0 (x, y) in pixels",
}


def _slide() -> Schema:
    return _obj(
        {
            "path": _str("slide file as analysed"),
            "width": _int(1, "level-0 width, px"),
            "height": _int(1, "level-0 height, px"),
            "mpp": _num(0, desc="level-0 pixel size, µm/px"),
            "vendor": _str("OpenSlide vendor"),
            "objective_power": _num(0, nullable=True, desc="scanner objective magnification"),
            "fingerprint": _str("content identity (quickhash1:… or sha256:…)"),
        },
        "slide facts",
    )


def _pattern() -> Schema:
    per_class = _obj(
        {
            "area_mm2": _num(0, desc="area classified as this pattern, mm²"),
            "percent_of_tumour": _num(0, 100, desc="share of viable tumour area, %"),
        },
        "one pattern's area",
    )
    return _obj(
        {
            "per_class": {
                "type": "object",
                "additionalProperties": per_class,
                "description": "keyed by pattern class (spindle, pleomorphic, squamoid …)",
            },
            "predominant": _str("pattern with the largest tumour share", nullable=True),
            "mixed": {
                "type": "boolean",
                "description": "a secondary pattern exceeds 10% of tumour",
            },
        },
        "tumour growth patterns",
    )


def _circle(desc: str) -> Schema:
    circle = _obj(
        {
            "l0_center": _XY,
            "l0_radius": _num(0, desc="circle radius, level-0 px"),
            "area_mm2": _num(0, desc="circle area, mm²"),
            "count": _int(0, "mitoses inside the circle"),
        },
        desc,
    )
    return {"oneOf": [circle, {"type": "null"}], "description": desc + " (null: no mitoses)"}


def _mitosis() -> Schema:
    skipped = _obj(
        {
            "count_total": {"type": "null", "description": "null: the mitosis pass did not run"},
            "warnings": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        },
        "mitosis pass skipped (e.g. an IHC slide), with the reason in warnings",
    )
    return {
        "type": "object",
        "if": {"properties": {"count_total": {"type": "null"}}, "required": ["count_total"]},
        "then": skipped,
        "else": _mitosis_counts(),
    }


def _mitosis_counts() -> Schema:
    return _obj(
        {
            "count_total": _int(0, "mitoses detected"),
            "count_typical": _int(0, "classified 'Mitosis: Typical'"),
            "count_atypical": _int(
                0, "atypical: 'Mitosis: Atypical' plus 'Mitosis: Tripolar' (tripolar is atypical)"
            ),
            "count_tripolar": _int(0, "classified 'Mitosis: Tripolar' (tri-/multipolar, atypical)"),
            "percent_atypical": _num(0, 100, nullable=True, desc="atypical share of mitoses, %"),
            "percent_tripolar": _num(0, 100, nullable=True, desc="tripolar share of mitoses, %"),
            "per_mm2_viable_tumour": _num(0, nullable=True, desc="mitoses per mm² of tumour"),
            "hotspot_2mm2": _circle("densest 2 mm² circle within tumour"),
            "mitoses_per_2mm2_hotspot": _int(0, "mitoses in the 2 mm² hotspot"),
            "hpf_area_mm2": _num(0, desc="area of one high-power field used, mm²"),
            "n_hpf": _int(1, "high-power fields in the per-HPF count (10)"),
            "mitoses_per_10hpf": _int(0, "mitoses in the densest circle of n_hpf HPF areas"),
            "warnings": {
                "type": "array",
                "items": {"type": "string"},
                "description": "caveats, e.g. an implausibly high count",
            },
        },
        "mitotic figures",
        optional=("warnings",),
    )


def _tam() -> Schema:
    section = _obj(
        {
            "route": {
                "enum": ["he", "ihc", None],
                "description": "H&E detector, CD68/CD163 IHC, or null (route not runnable)",
            },
            "density_per_mm2": _num(
                0, nullable=True, desc="macrophages per mm² (basis in area_basis)"
            ),
            "tam_fraction": _num(0, 1, nullable=True, desc="TAM share of nucleated cells (H&E)"),
            "dab_positive_area_fraction": _num(
                0, 1, nullable=True, desc="DAB-positive share (IHC)"
            ),
        },
        "tumour-associated macrophages",
        optional=("density_per_mm2", "tam_fraction", "dab_positive_area_fraction"),
    )
    # A route that ran reports a density.
    section["if"] = {"properties": {"route": {"enum": ["he", "ihc"]}}}
    section["then"] = {"required": ["density_per_mm2"]}
    return section


def _grading() -> Schema:
    flag = _obj(
        {
            "name": _str("identifier, e.g. who2022_mitoses"),
            "criterion": _str("criterion in words, e.g. 'WHO 2022: ≥ 5 mitoses per 2 mm²'"),
            "measured": _num(nullable=True, desc="measured value (null: not measured)"),
            "threshold": _num(desc="threshold used"),
            "unit": _str("unit of measured and threshold"),
            "met": {
                "type": ["boolean", "null"],
                "description": "null: unknown (not measured, or not assessed outside scope)",
            },
            "note": _str("why the criterion was not assessed (1.1)"),
        },
        "one grading criterion",
        optional=("note",),
    )
    return _obj(
        {
            "flags": {"type": "array", "items": flag},
            "disclaimer": _str("decision support, not a diagnosis", minLength=1),
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
    return _obj(
        {
            "verdict": {
                "enum": ["in_scope", "no_tumour", "outside_validated"],
                "description": "in_scope: tumour found; no_tumour: judged, none found; "
                "outside_validated: not an input the models were validated on",
            },
            "reason": _str("one sentence for the reader", minLength=1),
            "rule": _str("the rule that decided: stain, resolution, no_tissue, uncertain, tumour"),
            "stain": _str("second stain besides haematoxylin: eosin, dab or unknown"),
            "mpp": _num(0, desc="level-0 µm/px"),
            "uncertain_tile_fraction": _num(
                0, 1, desc="share of tissue tiles the pattern classifier is unsure on"
            ),
            "viable_tumour_mm2": _num(0, desc="tissue in tumour-pattern tiles, mm²"),
        },
        "scope verdict (1.1): can the slide be judged, and is there tumour",
    )


def _provenance() -> Schema:
    model = _obj(
        {
            "name": _str("registry name"),
            "version": _str("model version"),
            "sha256": _str("weights file SHA-256", pattern="^[0-9a-f]{64}$"),
        },
        "one model used",
    )
    return _obj(
        {
            "package_version": _str("atc-wsi version"),
            "git_commit": _str("source commit when known", nullable=True),
            "models": {"type": "array", "items": model},
            "config_hash": _str("hash of the effective configuration"),
            "device": _str("e.g. cpu, cuda:0"),
            "dtype": _str("inference precision, e.g. float32, bfloat16"),
            "durations_s": {
                "type": "object",
                "additionalProperties": _num(0),
                "description": "seconds per stage",
            },
            "started_at": _TIMESTAMP,
            "finished_at": _TIMESTAMP,
        },
        "how this report was produced",
    )


def _outputs() -> Schema:
    overlay = _obj(
        {
            "name": _str("map name"),
            "form": {"enum": ["rgba", "u8"]},
            "path": _str("TIFF path relative to the output folder"),
            "kind": {"enum": ["probability", "mask", "density", "label"]},
            "unit": _str("unit of the values"),
            "vmax": _num(desc="value at code 255"),
            "value_per_code": _num(0, desc="value of one u8 code step"),
        },
        "one overlay TIFF",
    )
    return _obj(
        {
            "files": {
                "type": "object",
                "additionalProperties": _str(),
                "description": "role → path relative to the output folder",
            },
            "overlays": {"type": "array", "items": overlay},
        },
        "files written beside report.json",
    )


def build_schema() -> Schema:
    """Return the JSON Schema (draft 2020-12) of ``report.json``."""
    sections: dict[str, Schema] = {
        "schema_version": _str("report schema version MAJOR.MINOR", pattern=r"^1\.\d+$"),
        "slide": _slide(),
        "provenance": _provenance(),
        "tissue": _obj({"area_mm2": _num(0, desc="tissue area, mm²")}, "tissue detection"),
        "pattern": _pattern(),
        "scope": _scope(),
        "necrosis": _obj(
            {
                "area_mm2": _num(0, desc="necrosis area, mm²"),
                "percent_of_tumour_bed": _num(
                    0, 100, nullable=True, desc="necrosis / (viable tumour + necrosis), %"
                ),
            },
            "tumour necrosis",
        ),
        "mitosis": _mitosis(),
        "tam": _tam(),
        "grading": _grading(),
        "qc": _obj(
            {
                "unreadable_tiles": _int(0, "tiles whose pixels could not be decoded"),
                "pen_fraction": _num(0, 1, desc="share of the mask removed as pen ink"),
                "blur_fraction": _num(0, 1, desc="share of tissue tiles judged blurred"),
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
