"""Typed settings of the DICOMweb side: the archives to watch, the series cache, retries.

Defaults live in the ``pacs:`` section of ``configs/default.yaml``; ``workers.settings`` loads it
with the rest (unknown keys are errors). A password is never written into the YAML: give the
name of an environment variable in ``password_env`` (or a bearer token in ``token_env``).
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ArchiveSettings(_Frozen):
    """One DICOMweb archive (PACS / VNA): where it is, how to log in, what to take from it."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="short name used in jobs, state and cache"
    )
    base_url: str = Field(
        description="DICOMweb root, e.g. http://pacs:8042/dicom-web (QIDO, WADO and STOW paths "
        "are appended)"
    )
    username: str | None = Field(None, description="HTTP basic user (None: no basic auth)")
    password_env: str | None = Field(
        None, description="environment variable holding the basic-auth password"
    )
    token_env: str | None = Field(
        None, description="environment variable holding a bearer token (instead of basic auth)"
    )
    timeout_s: float = Field(60.0, gt=0, description="connect/read timeout of one request, s")
    verify_tls: bool = Field(True, description="check the server's TLS certificate")
    filters: dict[str, str] = Field(
        default_factory=dict,
        description="extra QIDO-RS match keys for discovery, e.g. {StudyDescription: 'thyroid*'}",
    )
    date_attribute: str | None = Field(
        None,
        description="QIDO date key used as the cursor (StudyDate or SeriesDate); None = list all "
        "SM series every poll (QIDO has no 'received since')",
    )
    lookback_days: int = Field(
        1, ge=0, description="the date cursor queries from this many days before the newest date"
    )
    store_results: bool = Field(True, description="STOW-RS the DICOM results back to this archive")

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"base_url {v!r} must start with http:// or https://")
        return v.rstrip("/")

    def password(self) -> str | None:
        """The basic-auth password, read from ``password_env`` now (None when unset)."""
        return os.environ.get(self.password_env) if self.password_env else None

    def token(self) -> str | None:
        """The bearer token, read from ``token_env`` now (None when unset)."""
        return os.environ.get(self.token_env) if self.token_env else None


class PacsSettings(_Frozen):
    """Discovery, retrieval and storage settings shared by every archive."""

    archives: tuple[ArchiveSettings, ...] = Field((), description="archives to watch and serve")
    poll_s: float = Field(60.0, gt=0, description="QIDO-RS poll interval, seconds")
    stable_polls: int = Field(
        2, ge=2, description="polls with one instance count before a series counts as complete"
    )
    cache_dir: Path | None = Field(
        None, description="retrieved series live here; None = <output_root>/pacs-cache"
    )
    cache_max_bytes: int = Field(
        50 * 1024**3, gt=0, description="the cache evicts least-recently-used series above this"
    )
    state_dir: Path | None = Field(
        None, description="discovery cursor and seen series; None = <output_root>/pacs"
    )
    retries: int = Field(4, ge=0, description="retries of a transient failure (5xx, network)")
    backoff_s: float = Field(1.0, ge=0, description="first retry delay; doubles each retry, s")
    beat: bool = Field(
        True, description="the Celery beat schedule polls the archives (worker started with -B)"
    )
    write_dicom: bool = Field(
        True, description="DICOM slides (from a PACS or a folder) also get dicom/*.dcm results"
    )

    @field_validator("archives")
    @classmethod
    def _unique(cls, v: tuple[ArchiveSettings, ...]) -> tuple[ArchiveSettings, ...]:
        names = [a.name for a in v]
        if len(set(names)) != len(names):
            raise ValueError(f"archive names must be unique: {names}")
        return v

    def archive(self, name: str | None) -> ArchiveSettings:
        """Return the archive called ``name`` (the only one when ``name`` is None).

        Raises:
            ArchiveUnknownError: no such archive, or None with several configured.
        """
        from workers.errors import ArchiveUnknownError

        names = [a.name for a in self.archives]
        if name is None and len(self.archives) == 1:
            return self.archives[0]
        for a in self.archives:
            if a.name == name:
                return a
        raise ArchiveUnknownError(name, names)

    def resolved_cache_dir(self, output_root: Path) -> Path:
        """Folder of the series cache."""
        return self.cache_dir or output_root / "pacs-cache"

    def resolved_state_dir(self, output_root: Path) -> Path:
        """Folder of the discovery state files (one per archive)."""
        return self.state_dir or output_root / "pacs"
