"""Building blocks of the ``report.json`` schema (``workers.report.schema``)."""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]


def number(
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    nullable: bool = False,
    desc: str = "",
) -> Schema:
    """A number schema (nullable: or null), with its range and description."""
    out: Schema = {"type": ["number", "null"] if nullable else "number"}
    if minimum is not None:
        out["minimum"] = minimum
    if maximum is not None:
        out["maximum"] = maximum
    if desc:
        out["description"] = desc
    return out


def integer(minimum: int = 0, desc: str = "", *, nullable: bool = False) -> Schema:
    """An integer schema (≥ ``minimum``; nullable: or null)."""
    return {
        "type": ["integer", "null"] if nullable else "integer",
        "minimum": minimum,
        **({"description": desc} if desc else {}),
    }


def withheld_note() -> Schema:
    """The ``withheld`` key of a section: ``"<verdict>: <reason>"`` (1.2)."""
    return string(
        "why the scope verdict withholds this section's figures (null): '<verdict>: <reason>' "
        "(1.2)",
        pattern=r"^(no_tumour|outside_validated): \S",
    )


def nulls(keys: tuple[str, ...]) -> Schema:
    """A section whose ``keys`` are all null (present or not)."""
    return {"properties": {k: {"type": "null"} for k in keys}}


def null_when_withheld(section: Schema, keys: tuple[str, ...]) -> Schema:
    """Return ``section`` requiring ``keys`` to be null when it carries ``withheld``."""
    section["if"] = {"required": ["withheld"]}
    section["then"] = nulls(keys)
    return section


def string(desc: str = "", *, nullable: bool = False, **extra: Any) -> Schema:
    """A string schema (nullable: or null); ``extra`` adds keywords such as ``pattern``."""
    return {
        "type": ["string", "null"] if nullable else "string",
        **extra,
        **({"description": desc} if desc else {}),
    }


def obj(props: dict[str, Schema], desc: str, *, optional: tuple[str, ...] = ()) -> Schema:
    """An object schema: every property required except ``optional``; extra keys allowed."""
    return {
        "type": "object",
        "description": desc,
        "properties": props,
        "required": [k for k in props if k not in optional],
        "additionalProperties": True,
    }


XY = {
    "type": "array",
    "items": {"type": "number"},
    "minItems": 2,
    "maxItems": 2,
    "description": "level-0 (x, y) in pixels",
}
