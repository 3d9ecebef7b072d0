"""Typed settings of the service: broker, job store, slide roots, API, worker limits, watch folder.

Defaults live in the ``service:`` section of ``configs/default.yaml``; ``workers.settings`` loads
them (YAML + ``ATC_*`` environment: ``ATC_BROKER_URL``, ``ATC_RESULT_BACKEND``,
``ATC_DATABASE_URL``, ``ATC_SLIDE_ROOTS`` (os.pathsep-separated), ``ATC_OUTPUT_ROOT``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator

Scope = Literal["read", "submit", "admin"]


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}:***@" if parts.username else ":***@"
    host = parts.hostname or ""
    netloc = user + host + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TokenEntry(_Frozen):
    """One API token, stored as the hex sha256 of the token, never the token itself."""

    name: str = Field(min_length=1, description="who or what holds the token")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="hex sha256 of the token")
    scopes: tuple[Scope, ...] = Field(("read",), description="granted scopes")


class ServiceSettings(_Frozen):
    """Everything the workers, the API and the watch folder need to find each other."""

    broker_url: str = Field("redis://127.0.0.1:6379/0", description="Celery broker (Redis)")
    result_backend: str = Field("redis://127.0.0.1:6379/1", description="Celery result backend")
    deployment: str = Field(
        "atc-wsi",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="name of this deployment: every Redis key (queues, results) is prefixed "
        "'<deployment>:' so services sharing one Redis never see each other's keys",
    )
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; None = SQLite file <output_root>/jobs.sqlite"
    )
    database_schema: str | None = Field(
        None, description="PostgreSQL schema for the tables (None = the default schema)"
    )
    slide_roots: tuple[Path, ...] = Field(
        (), description="folders submitted slide paths must resolve into"
    )
    output_root: Path = Field(Path("out/service"), description="job folders live under here")
    upload_dir: Path | None = Field(
        None, description="uploads land here; None = <output_root>/uploads"
    )
    max_upload_bytes: int = Field(20 * 1024**3, gt=0, description="largest accepted upload, bytes")
    token_file: Path | None = Field(
        None, description="JSON list of TokenEntry; None = <output_root>/tokens.json"
    )
    tokens: tuple[TokenEntry, ...] = Field((), description="tokens given inline (hashed)")
    analysis_queue: str = Field("analysis", description="queue of the heavy analysis tasks")
    io_queue: str = Field("io", description="queue of thumbnails, batch expansion, writing")
    soft_time_limit_s: int = Field(6 * 3600, gt=0, description="task soft time limit, seconds")
    hard_time_limit_s: int = Field(6 * 3600 + 600, gt=0, description="task hard time limit, s")
    visibility_timeout_s: int = Field(
        8 * 3600, gt=0, description="Redis redelivers an unacknowledged task after this, s"
    )
    worker_concurrency: int = Field(1, gt=0, description="analysis processes per worker")
    heartbeat_s: float = Field(
        15.0, gt=0, description="a running job refreshes its lease this often"
    )
    lease_s: float = Field(120.0, gt=0, description="a running job silent this long is requeued")
    reaper_interval_s: float = Field(30.0, gt=0, description="how often workers look for them")
    requeue_unsent_after_s: float = Field(
        60.0, gt=0, description="a queued job never handed to the broker is sent after this"
    )
    max_attempts: int = Field(3, gt=0, description="runs before a job that kills workers fails")
    progress_interval_s: float = Field(1.0, ge=0, description="least time between progress writes")
    cancel_grace_s: float = Field(
        5.0,
        gt=0,
        description="a cancelled run that has not stopped this long after the worker saw the "
        "cancel is recorded cancelled and its pool process is ended",
    )
    keep_work_dir: bool = Field(False, description="keep checkpoints after a job succeeds")
    thumbnail_px: int = Field(
        1024, ge=0, description="thumbnail edge written by the io queue; 0 = off"
    )
    api_host: str = Field("127.0.0.1", description="address `serve` binds")
    api_port: int = Field(8000, gt=0, lt=65536, description="port `serve` binds")
    api_url: str = Field("http://127.0.0.1:8000", description="where the CLI finds the API")
    watch_poll_s: float = Field(5.0, gt=0, description="watch folder poll interval, seconds")
    watch_stable_polls: int = Field(
        3, ge=1, description="unchanged polls before a slide is complete"
    )
    watch_open_retries: int = Field(
        3, ge=1, description="stable polls a slide may fail to open before it is marked failed"
    )
    watch_state_dir: Path | None = Field(
        None, description="watch state files; None = <output_root>/watch"
    )

    @model_validator(mode="after")
    def _check_limits(self) -> ServiceSettings:
        if self.hard_time_limit_s <= self.soft_time_limit_s:
            raise ValueError(
                f"hard_time_limit_s ({self.hard_time_limit_s}) must exceed soft_time_limit_s "
                f"({self.soft_time_limit_s})"
            )
        if self.visibility_timeout_s <= self.hard_time_limit_s:
            raise ValueError(
                f"visibility_timeout_s ({self.visibility_timeout_s}) must exceed "
                f"hard_time_limit_s ({self.hard_time_limit_s}) or Redis redelivers running tasks"
            )
        if self.lease_s <= 2 * self.heartbeat_s:
            raise ValueError(
                f"lease_s ({self.lease_s}) must exceed twice heartbeat_s ({self.heartbeat_s})"
            )
        return self

    @property
    def key_prefix(self) -> str:
        """Prefix of every Redis key of this deployment (Celery ``global_keyprefix``)."""
        return f"{self.deployment}:"

    def broker_identity(self) -> dict[str, str]:
        """What ``/healthz`` reports about the broker: URL without password, key prefix, queues."""
        return {
            "url": redact_url(self.broker_url),
            "key_prefix": self.key_prefix,
            "queues": f"{self.analysis_queue},{self.io_queue}",
        }

    @property
    def resolved_database_url(self) -> str:
        """The SQLAlchemy URL, defaulting to a SQLite file under the output root."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.output_root / 'jobs.sqlite').resolve()}"

    @property
    def resolved_upload_dir(self) -> Path:
        """Folder uploads are streamed into."""
        return self.upload_dir or self.output_root / "uploads"

    @property
    def resolved_token_file(self) -> Path:
        """File holding the hashed API tokens."""
        return self.token_file or self.output_root / "tokens.json"

    @property
    def resolved_watch_state_dir(self) -> Path:
        """Folder holding one state file per watched folder."""
        return self.watch_state_dir or self.output_root / "watch"
