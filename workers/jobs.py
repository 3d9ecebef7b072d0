"""Plain, tested service logic: the per-process context, path confinement, submission, cancel.

Celery tasks, the API, the watch folder and the CLI all call these functions; none of them talks to
the broker directly except through the ``send`` callable they are given.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path, PurePath
from typing import TYPE_CHECKING

from workers.errors import JobStateError, PathNotAllowedError, SlideMissingError
from workers.fingerprint import idempotency_key, is_dicom_folder, slide_fingerprint
from workers.service_settings import ServiceSettings
from workers.store import CANCELLED, QUEUED, TERMINAL, Job, JobStore, new_id

if TYPE_CHECKING:
    from workers.settings import Settings

#: Sends a job id to the broker (the Celery task); given to the submit functions.
Sender = Callable[[str], None]

#: Longest file name (one path component) and whole path, in bytes (Linux NAME_MAX, PATH_MAX).
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096


@dataclass(frozen=True)
class ServiceContext:
    """What one process needs to run the service: settings, the store, and the analysis identity.

    Attributes:
        settings: the whole configuration (pipeline + service).
        store: the job store.
        pipeline_version: version of the analysis code, part of the idempotency key.
        config_hash: hash of the analysis settings, part of the idempotency key.
    """

    settings: Settings
    store: JobStore
    pipeline_version: str
    config_hash: str

    @property
    def service(self) -> ServiceSettings:
        """The ``service:`` section."""
        return self.settings.service


def pipeline_version() -> str:
    """Return the analysis pipeline's version (``workers.pipeline.PIPELINE_VERSION``)."""
    from workers import pipeline

    version = getattr(pipeline, "PIPELINE_VERSION", None)
    return str(version) if version else metadata.version("atc-wsi")


def build_context(settings: Settings) -> ServiceContext:
    """Create the store (tables included) and the analysis identity for these settings."""
    service = settings.service
    service.output_root.mkdir(parents=True, exist_ok=True)
    store = JobStore(service.resolved_database_url, service.database_schema)
    store.create_all()
    return ServiceContext(settings, store, pipeline_version(), settings.config_hash())


_CONTEXTS: dict[int, ServiceContext] = {}


def get_context() -> ServiceContext:
    """Return this process's context, built once per process from ``load_settings()``.

    Keyed by pid: a forked Celery child builds its own engine instead of sharing the parent's
    connections.
    """
    pid = os.getpid()
    if pid not in _CONTEXTS:
        from workers.settings import load_settings

        _CONTEXTS.clear()
        _CONTEXTS[pid] = build_context(load_settings())
    return _CONTEXTS[pid]


@cache
def worker_name() -> str:
    """Return ``host:pid`` naming this process in job records."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _roots(service: ServiceSettings) -> list[Path]:
    return [r.resolve() for r in service.slide_roots]


def resolve_slide_path(
    raw: str | Path, service: ServiceSettings, *, must_exist: bool = True
) -> Path:
    """Return the real path of a slide, refusing anything outside the configured slide roots.

    A relative path is taken relative to each root in turn. ``..`` components are refused before
    anything is resolved; the result must lie inside a root after symlinks are resolved.

    Raises:
        PathNotAllowedError: ``..``, no roots configured, or the real path lies outside them.
        SlideMissingError: nothing exists at the path (when ``must_exist``).
    """
    text = str(raw)
    if not text.strip() or "\x00" in text:
        raise PathNotAllowedError(text, "empty or malformed path")
    check_name_lengths(text)
    if ".." in PurePath(text).parts:
        raise PathNotAllowedError(text, "'..' components are not allowed; give a path in a root")
    roots = _roots(service)
    if not roots:
        raise PathNotAllowedError(
            text, "no slide roots configured; set service.slide_roots or ATC_SLIDE_ROOTS"
        )
    given = Path(text)
    candidates = [given] if given.is_absolute() else [root / given for root in roots]
    for cand in candidates:
        try:
            real = cand.resolve()
            exists = real.exists()
        except OSError as exc:  # a loop of symlinks, a name the file system refuses
            why = f"the file system refuses it ({exc.strerror})"
            raise PathNotAllowedError(text, why) from None
        inside = any(real == root or real.is_relative_to(root) for root in roots)
        if given.is_absolute() and not inside:
            why = "it resolves outside the slide roots" + (" (symlink)" if cand != real else "")
            raise PathNotAllowedError(text, f"{why}; allowed roots: {', '.join(map(str, roots))}")
        if not inside:
            raise PathNotAllowedError(text, "it resolves outside the slide roots (symlink)")
        if exists or not must_exist:
            return real
    raise SlideMissingError(text)


def check_name_lengths(text: str) -> None:
    """Refuse a path whose components or whole exceed the file system's limits (255 / 4096 bytes).

    Raises:
        PathNotAllowedError: naming the first offending component.
    """
    if len(text.encode("utf-8", "surrogateescape")) > MAX_PATH_BYTES:
        raise PathNotAllowedError(text[:80] + "…", f"longer than {MAX_PATH_BYTES} bytes")
    for part in PurePath(text).parts:
        if len(part.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
            raise PathNotAllowedError(
                text[:80] + "…",
                f"a component is {len(part.encode('utf-8', 'surrogateescape'))} bytes, longer "
                f"than the {MAX_NAME_BYTES} bytes a file name may have",
            )


def check_slide_target(path: Path) -> None:
    """Apply the one folder rule of the API, watch folder and batches: a folder is a slide only
    when it is a DICOM series (``.dcm`` files and nothing else).

    Raises:
        PathNotAllowedError: any other folder.
    """
    if path.is_dir() and not is_dicom_folder(path):
        raise PathNotAllowedError(
            path,
            "is a folder but not a DICOM series (only .dcm files); give one slide file",
        )


@dataclass(frozen=True)
class Submission:
    """The outcome of a submit: the job and whether it was created now (False = reused)."""

    job: Job
    created: bool


def submit_slide(
    ctx: ServiceContext,
    path: Path,
    send: Sender,
    *,
    force: bool = False,
    source: str = "api",
    batch_id: str | None = None,
    fingerprint: str | None = None,
) -> Submission:
    """Create a job for an already confined slide path and hand it to the broker.

    With the same idempotency key already succeeded, queued or running, that job is returned
    instead, unless ``force``.
    """
    check_slide_target(path)
    fp = fingerprint or slide_fingerprint(path)
    key = idempotency_key(fp, ctx.pipeline_version, ctx.config_hash)
    if not force:
        existing = ctx.store.find_reusable(key)
        if existing is not None:
            return Submission(existing, created=False)
    job_id = new_id()
    job = Job(
        id=job_id,
        state=QUEUED,
        slide_path=str(path),
        fingerprint=fp,
        pipeline_version=ctx.pipeline_version,
        config_hash=ctx.config_hash,
        idem_key=key,
        force=force,
        source=source,
        batch_id=batch_id,
        out_dir=str((ctx.service.output_root / "jobs" / job_id).resolve()),
    )
    if not ctx.store.add_job_once(job):  # a simultaneous submission of the slide won the race
        existing = ctx.store.find_reusable(key)
        if existing is None:  # it ended in the meantime (failed or cancelled): try once more
            return submit_slide(
                ctx, path, send, force=force, source=source, batch_id=batch_id, fingerprint=fp
            )
        return Submission(existing, created=False)
    send(job_id)
    return Submission(ctx.store.get_job(job_id), created=True)


def cancel_job(ctx: ServiceContext, job_id: str) -> Job:
    """Cancel a job: a queued one at once, a running one at its next progress check.

    Raises:
        JobNotFoundError: unknown id.
        JobStateError: the job already ended.
    """
    job = ctx.store.get_job(job_id)
    if job.state in TERMINAL:
        raise JobStateError(f"job {job_id} already {job.state}; nothing to cancel")
    ctx.store.update_job(job_id, cancel_requested=True)
    ctx.store.update_job(
        job_id, Job.state == QUEUED, state=CANCELLED, reason_code="cancelled", reason="cancelled"
    )
    return ctx.store.get_job(job_id)


def recover(ctx: ServiceContext, send: Sender) -> list[str]:
    """Requeue jobs whose worker died, send queued jobs the broker never got; return their ids.

    A queued job sent longer ago than the broker's visibility timeout is sent again (Redis may
    have restarted without persistence); a duplicate message is harmless, as the claim is atomic.
    """
    lost = ctx.store.requeue_stale(ctx.service.lease_s)
    svc = ctx.service
    unsent = ctx.store.unsent_queued(svc.requeue_unsent_after_s, svc.visibility_timeout_s)
    ids = list(dict.fromkeys(lost + unsent))
    for job_id in ids:
        send(job_id)
    return ids
