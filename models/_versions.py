"""Trained model versions: model folders, ``name@version`` references and their discovery.

A trained model is a folder written by ``atc-wsi train``::

    <folder>/weights.pt    fp32 state dict
    <folder>/card.json     name, version, base (the shipped model whose architecture it uses),
                           sha256 of weights.pt, training data, metrics, code version

A reference is resolved in this order:

1. a path to such a folder (anything containing ``/`` or naming an existing folder);
2. ``name@version``: the shipped model when the version is the shipped one, else a folder under
   one of the roots in ``$ATC_MODELS_DIR`` (``os.pathsep``-separated) whose card has that name
   and version (folders up to two levels deep are searched, e.g. ``<root>/<name>/<version>/``);
3. a bare name that is not a shipped model: the highest version found under the roots.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.errors import UnknownModelError, WeightsError

if TYPE_CHECKING:
    from models._registry import ModelSpec

#: File names inside a model folder.
CARD_FILE = "card.json"
WEIGHTS_FILE = "weights.pt"
#: Card keys a model folder must have.
REQUIRED_KEYS: tuple[str, ...] = ("name", "version", "base", "sha256", "weights_file")


def model_roots() -> list[Path]:
    """Folders searched for trained versions: ``$ATC_MODELS_DIR`` (``os.pathsep``-separated)."""
    env = os.environ.get("ATC_MODELS_DIR", "")
    return [Path(p) for p in env.split(os.pathsep) if p]


def read_card(folder: Path) -> dict[str, Any]:
    """Return the card of a model folder.

    Raises:
        WeightsError: no readable ``card.json`` or a required key is missing.
    """
    path = folder / CARD_FILE
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WeightsError(
            f"not a model folder: cannot read {CARD_FILE} ({exc}); a model folder is what "
            "`atc-wsi train --out` writes",
            model=str(folder),
            path=str(path),
        ) from exc
    missing = [k for k in REQUIRED_KEYS if not isinstance(card, dict) or k not in card]
    if missing:
        raise WeightsError(
            f"{CARD_FILE} lacks {', '.join(missing)}", model=str(folder), path=str(path)
        )
    return dict(card)


def folder_spec(folder: Path) -> ModelSpec:
    """Return the :class:`ModelSpec` of a model folder (its base model's architecture).

    Raises:
        WeightsError: not a model folder.
        UnknownModelError: the card's base model is not registered.
    """
    from models._registry import get_spec

    folder = folder.resolve()
    card = read_card(folder)
    base = get_spec(str(card["base"]))
    if base.folder is not None:  # a base given as name@version of a trained model
        base = get_spec(str(base.base))
    return dataclasses.replace(
        base,
        name=str(card["name"]),
        version=str(card["version"]),
        sha256=str(card["sha256"]),
        weights_file=str(card["weights_file"]),
        folder=folder,
        base=base.name,
    )


def _candidates(root: Path) -> list[Path]:
    """Model folders directly under ``root`` or one level below."""
    if not root.is_dir():
        return []
    found = [p.parent for p in root.glob(f"*/{CARD_FILE}")]
    found += [p.parent for p in root.glob(f"*/*/{CARD_FILE}")]
    if (root / CARD_FILE).is_file():
        found.append(root)
    return sorted(set(found))


def trained_versions() -> list[tuple[str, str, Path]]:
    """(name, version, folder) of every trained version under the roots, sorted."""
    out: dict[tuple[str, str], Path] = {}
    for root in model_roots():
        for folder in _candidates(root):
            try:
                card = read_card(folder)
            except WeightsError:
                continue
            out.setdefault((str(card["name"]), str(card["version"])), folder)
    return sorted(((n, v, p) for (n, v), p in out.items()), key=lambda r: (r[0], version_key(r[1])))


def version_key(version: str) -> tuple[Any, ...]:
    """Sort key of a version string (PEP 440 when it parses, else the plain text)."""
    try:
        from packaging.version import Version

        return (0, Version(version), version)
    except Exception:  # not PEP 440: order after the parseable ones, by text
        return (1, version, version)


def known_refs() -> list[str]:
    """Every reference that resolves: shipped ``name@version`` and trained ones."""
    from models._registry import get_spec, list_models

    shipped = [f"{n}@{get_spec(n).version}" for n in list_models()]
    return sorted({*shipped, *(f"{n}@{v}" for n, v, _ in trained_versions())})


def _is_path(ref: str) -> bool:
    return "/" in ref or os.sep in ref or Path(ref).is_dir()


def resolve(ref: str) -> ModelSpec:
    """Return the :class:`ModelSpec` of a reference that is not a bare shipped name.

    Raises:
        UnknownModelError: nothing matches; the message lists every known reference.
        WeightsError: a folder that is not a model folder.
    """
    from models._registry import _ENTRIES, get_spec

    if _is_path(ref):
        folder = Path(ref).expanduser()
        if not folder.is_dir():
            raise UnknownModelError(ref, known_refs(), what="model folder")
        return folder_spec(folder)
    name, _, version = ref.partition("@")
    if version and name in _ENTRIES and get_spec(name).version == version:
        return get_spec(name)
    matches = [p for n, v, p in trained_versions() if n == name and (not version or v == version)]
    if not matches:
        raise UnknownModelError(ref, known_refs())
    return folder_spec(matches[-1])
