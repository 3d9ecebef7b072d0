"""The one settings loader: ``configs/default.yaml`` (or a given file) + ``ATC_*`` environment.

Each package declares typed settings for its own part (``wsi.settings``, ``models.settings``,
``workers.service_settings``, ``workers.pacs_settings``); this module merges YAML and environment
into them, validates the result (unknown keys are errors, so a misspelt option never silently
does nothing) and hashes the analysis-relevant part for idempotency keys.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ConfigDict, Field, ValidationError

from models.settings import PipelineSettings
from workers.pacs_settings import PacsSettings
from workers.report.settings import OutputSettings
from workers.service_settings import ServiceSettings
from wsi.synthetic.settings import SyntheticSettings

#: Default configuration shipped with the package.
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"

#: Short environment names for the settings people set most.
ENV_ALIASES: dict[str, tuple[str, ...]] = {
    "ATC_BROKER_URL": ("service", "broker_url"),
    "ATC_RESULT_BACKEND": ("service", "result_backend"),
    "ATC_DATABASE_URL": ("service", "database_url"),
    "ATC_SLIDE_ROOTS": ("service", "slide_roots"),
    "ATC_OUTPUT_ROOT": ("service", "output_root"),
    "ATC_DEVICE": ("engine", "device"),
    "ATC_PRECISION": ("engine", "precision"),
}
_PATH_LISTS = {("service", "slide_roots")}


class SettingsError(ValueError):
    """The configuration file or environment holds an invalid value."""


class Settings(PipelineSettings):
    """Everything configurable: the analysis pipeline plus the service around it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    service: ServiceSettings = Field(default_factory=ServiceSettings)
    outputs: OutputSettings = Field(default_factory=OutputSettings)
    synthetic: SyntheticSettings = Field(default_factory=SyntheticSettings)
    pacs: PacsSettings = Field(default_factory=PacsSettings)

    def pipeline(self) -> PipelineSettings:
        """The analysis-relevant part (what goes into the configuration hash)."""
        data = self.model_dump(exclude={"service", "outputs", "synthetic", "pacs"})
        return PipelineSettings.model_validate(data)

    def config_hash(self) -> str:
        """Hash of the analysis-relevant settings (engine options such as device excluded)."""
        return self.pipeline().config_hash()


def _set_path(tree: dict[str, Any], keys: tuple[str, ...], value: Any) -> None:
    node = tree
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[keys[-1]] = value


def _deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """Turn ``ATC_*`` variables into a nested override tree.

    ``ATC_BROKER_URL`` style aliases map to fixed fields; ``ATC__SECTION__FIELD=value`` sets any
    field (the value is parsed as YAML, so ``ATC__ENGINE__BATCH_SIZE=64`` is an int).
    """
    tree: dict[str, Any] = {}
    for name, keys in ENV_ALIASES.items():
        if name in environ:
            raw = environ[name]
            value: Any = [p for p in raw.split(os.pathsep) if p] if keys in _PATH_LISTS else raw
            _set_path(tree, keys, value)
    for name, raw in environ.items():
        if name.startswith("ATC__"):
            keys = tuple(part.lower() for part in name[5:].split("__") if part)
            if keys:
                _set_path(tree, keys, yaml.safe_load(raw) if raw else raw)
    return tree


def load_settings(
    config_path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Load settings from YAML, then environment, then explicit overrides (last wins).

    Args:
        config_path: YAML file; defaults to ``$ATC_CONFIG`` or ``configs/default.yaml``.
        environ: environment to read (defaults to ``os.environ``).
        overrides: a nested dict applied last (used by CLI flags).

    Raises:
        SettingsError: the file is missing or unreadable, or a value is invalid.
    """
    env = os.environ if environ is None else environ
    path = Path(config_path or env.get("ATC_CONFIG") or DEFAULT_CONFIG)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise SettingsError(f"{path}: configuration file not found") from None
    except yaml.YAMLError as exc:
        raise SettingsError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: the top level must be a mapping of sections")
    data = _deep_merge(data, env_overrides(env))
    if overrides:
        data = _deep_merge(data, overrides)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise SettingsError(f"{path}: invalid configuration: {problems}") from None
