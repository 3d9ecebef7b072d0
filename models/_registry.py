"""Private plumbing of the model registry: the spec type, the name table and the weights loader."""

from __future__ import annotations

import fnmatch
import hashlib
import importlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from models.errors import WeightsError

Task = Literal["classify", "segment", "detect", "crop_classify"]
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: Modules whose import registers the built-in models (missing ones are skipped).
BUILTIN_MODULES: tuple[str, ...] = ("models.zoo", "models.cells.zoo")


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to build, feed and trust one set of weights.

    Attributes:
        name: registry name, e.g. ``"atc-pattern-v1"``.
        arch: factory building the untrained network (nothing downloaded).
        arch_name: human-readable architecture name for cards and reports.
        task: what the output means (``classify``: (B, C) logits; ``segment``: (B, C, H, W)).
        input_mpp: µm/px the network expects.
        tile_px: input edge in pixels at ``input_mpp``.
        classes: output channel names.
        mean: per-channel RGB mean of inputs scaled to [0, 1].
        std: per-channel RGB standard deviation of inputs scaled to [0, 1].
        weights_file: file name inside ``models/weights`` (or ``$ATC_WEIGHTS_DIR``).
        sha256: hex digest the weights file must have.
        version: semantic version of the weights.
        overlap_px: tile overlap in input pixels the model is meant to be run with.
        extra: model-specific constants (e.g. the stitching margin).
        folder: the model folder of a trained version (``weights_file`` and ``card.json``
            inside it), or None for a shipped model in ``models/weights``.
        base: registry name of the shipped model a trained version was derived from (its
            architecture), or None.
    """

    name: str
    arch: Callable[[], nn.Module]
    arch_name: str
    task: Task
    input_mpp: float
    tile_px: int
    classes: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights_file: str
    sha256: str
    version: str
    overlap_px: int = 0
    extra: Mapping[str, float] = field(default_factory=dict)
    folder: Path | None = None
    base: str | None = None

    @property
    def ref(self) -> str:
        """``name@version``: the reference that selects exactly these weights."""
        return f"{self.name}@{self.version}"

    @property
    def weights_path(self) -> Path:
        """Absolute path of the weights file."""
        if self.folder is not None:
            return self.folder / self.weights_file
        return weights_dir() / self.weights_file

    @property
    def card_path(self) -> Path:
        """Absolute path of the model card JSON (``card.json`` in a model folder, else the
        weights file name with ``.json``)."""
        if self.folder is not None:
            return self.folder / "card.json"
        return self.weights_path.with_suffix(".json")

    def card(self) -> dict[str, Any]:
        """Return the model card (architecture, training command, seeds, metrics), or ``{}``."""
        try:
            data = json.loads(self.card_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def provenance(self) -> dict[str, Any]:
        """Name, version and weights digest as written in reports."""
        return {
            "name": self.name,
            "version": self.version,
            "arch": self.arch_name,
            "input_mpp": self.input_mpp,
            "tile_px": self.tile_px,
            "weights_sha256": self.sha256,
        }


_ENTRIES: dict[str, Callable[[], ModelSpec]] = {}
_SPECS: dict[str, ModelSpec] = {}
_VERIFIED: dict[tuple[str, int, int], str] = {}


def weights_dir() -> Path:
    """Folder holding weights: ``$ATC_WEIGHTS_DIR`` when set, else ``models/weights``."""
    env = os.environ.get("ATC_WEIGHTS_DIR")
    return Path(env) if env else WEIGHTS_DIR


def register_model(name: str) -> Callable[[Callable[[], ModelSpec]], Callable[[], ModelSpec]]:
    """Bind ``name`` to an entry function returning its :class:`ModelSpec`.

    Raises:
        ValueError: the name is already registered to another function.
    """

    def deco(fn: Callable[[], ModelSpec]) -> Callable[[], ModelSpec]:
        old = _ENTRIES.get(name)
        if old is not None and old.__qualname__ != fn.__qualname__:
            raise ValueError(f"model name {name!r} is already registered by {old.__module__}")
        _ENTRIES[name] = fn
        _SPECS.pop(name, None)
        return fn

    return deco


def _load_builtin() -> None:
    """Import the modules that register the built-in models."""
    for mod in BUILTIN_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style ``pattern``, sorted."""
    _load_builtin()
    return sorted(n for n in _ENTRIES if fnmatch.fnmatchcase(n, pattern))


def get_spec(name: str) -> ModelSpec:
    """Return the spec of a model reference.

    Args:
        name: a registered name (``atc-pattern-v1``: the shipped weights), ``name@version``
            (a shipped or trained version, trained ones found under ``$ATC_MODELS_DIR``), or the
            path of a model folder written by ``atc-wsi train``.

    Raises:
        UnknownModelError: no such model or version; the message lists the known ones.
        WeightsError: a model folder without a readable card.
    """
    _load_builtin()
    if name not in _ENTRIES:
        from models import _versions

        return _versions.resolve(name)
    if name not in _SPECS:
        spec = _ENTRIES[name]()
        if spec.name != name:
            raise ValueError(f"entry for {name!r} returned a spec named {spec.name!r}")
        _SPECS[name] = spec
    return _SPECS[name]


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_state_dict(spec: ModelSpec) -> dict[str, torch.Tensor]:
    """Load and checksum the weights of ``spec`` (``weights_only=True``: no code is executed).

    Raises:
        WeightsError: the file is missing, its sha256 differs from the registry, or it is not a
            state dict.
    """
    path = spec.weights_path
    if not path.is_file():
        raise WeightsError(
            "weights file not found; reinstall the package or run the training script named in "
            "the model card",
            model=spec.name,
            path=str(path),
        )
    st = path.stat()
    key = (str(path), st.st_mtime_ns, st.st_size)
    if _VERIFIED.get(key) != spec.sha256:
        actual = file_sha256(path)
        if actual != spec.sha256:
            raise WeightsError(
                f"sha256 mismatch: file has {actual[:16]}…, registry expects {spec.sha256[:16]}…; "
                "the file is corrupt or was replaced: restore it from the release, or retrain and "
                "update the sha256 in the model's registry entry",
                model=spec.name,
                path=str(path),
            )
        _VERIFIED[key] = spec.sha256
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a bad pickle
        raise WeightsError(f"cannot read weights: {exc}", model=spec.name, path=str(path)) from exc
    if not isinstance(state, dict):
        raise WeightsError("file holds no state dict", model=spec.name, path=str(path))
    return state


def create_model(name: str, *, pretrained: bool = True) -> nn.Module:
    """Build the network registered as ``name`` on CPU, in eval mode.

    Args:
        name: registry name, ``name@version`` or model folder (see :func:`get_spec`).
        pretrained: load the checksummed shipped weights (``False``: random initialisation, for
            training and tests).

    Raises:
        UnknownModelError, WeightsError.
    """
    spec = get_spec(name)
    model = spec.arch()
    if pretrained:
        state = load_state_dict(spec)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise WeightsError(
                f"weights do not fit architecture {spec.arch_name}: {exc}",
                model=name,
                path=str(spec.weights_path),
            ) from exc
    return model.eval()
