"""Celery tasks (thin: a job id in, one plain function called, the outcome in the job store).

``run_job`` is the plain, tested function behind ``atc.analyze``: it claims the job with a lease,
runs ``workers.pipeline.run_pipeline`` with a heart-beating monitor (progress, cancel, lease), and
records success or a failure reason. A run redelivered after its worker died finds the job
claimable once the lease has expired and resumes from the checkpoints in the job's work folder.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from celery import Celery
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_ready, worker_shutting_down
from sqlalchemy.exc import OperationalError

import wsi
from models.errors import ModelError
from workers.celery_app import (
    ANALYZE_TASK,
    EXPAND_BATCH_TASK,
    POLL_PACS_TASK,
    THUMBNAIL_TASK,
    app,
)
from workers.errors import JobError
from workers.jobs import Sender, ServiceContext, get_context, recover, worker_name
from workers.pacs_cache import prepare_job_slide, publish_results
from workers.pipeline import run_pipeline
from workers.store import CANCELLED, FAILED, SUCCEEDED, JobStore, new_id
from wsi.io import atomic_write, atomic_write_json

log = logging.getLogger(__name__)


class RunMonitor:
    """Feeds progress to the store and keeps the job's lease alive from a background thread.

    ``cancelled()`` turns True when the job's cancel flag is set or the lease was lost to another
    run, so the pipeline stops at its next chunk.
    """

    def __init__(
        self,
        store: JobStore,
        job_id: str,
        lease_token: str,
        tick_s: float,
        *,
        grace_s: float | None = None,
    ) -> None:
        self.store, self.job_id, self.token, self.tick_s = store, job_id, lease_token, tick_s
        self.latest: tuple[str | None, int, int] = (None, 0, 0)
        self.lost = False
        self.cancel_requested = False
        self.grace_s = grace_s
        self._cancel_seen_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"lease-{job_id}", daemon=True)

    def progress(self, stage: str, done: int, total: int) -> None:
        """Pipeline progress callback: remember the latest stage and tile counts."""
        self.latest = (stage, int(done), int(total))

    def cancelled(self) -> bool:
        """Pipeline cancel callback."""
        return self.lost or self.cancel_requested

    def beat(self) -> None:
        """Write progress and refresh the lease once; notice lost leases and cancel requests."""
        stage, done, total = self.latest
        fields: dict[str, Any] = {}
        if stage is not None:
            fields = {"stage": stage[:64], "tiles_done": done, "tiles_total": total}
        if not self.store.heartbeat(self.job_id, self.token, **fields):
            self.lost = True
            return
        self.cancel_requested = self.store.get_job(self.job_id).cancel_requested
        if self.cancel_requested and self._cancel_seen_at is None:
            self._cancel_seen_at = time.monotonic()

    def overdue(self) -> bool:
        """True when a cancel was seen more than ``grace_s`` ago and the run has not returned."""
        seen = self._cancel_seen_at
        return (
            self.grace_s is not None and seen is not None and time.monotonic() - seen > self.grace_s
        )

    def end_stuck_run(self) -> None:
        """Watchdog: record the job ``cancelled`` and end this (pool) process.

        The stage did not reach a cancellation point within the grace period (a long C call).
        Celery's master sees its child exit, starts a fresh one and serves the next job; the
        redelivered message finds the job ended and does nothing.
        """
        stage, done, _ = self.latest
        self.store.finish(
            self.job_id,
            self.token,
            CANCELLED,
            reason_code="cancelled",
            reason=f"cancelled in stage {stage or 'open'} after {done} tiles; the stage did not "
            f"stop within {self.grace_s} s, so its worker process was ended",
        )
        log.warning(
            "job %s: stage %s ignored cancel for %s s; ending the process",
            self.job_id,
            stage,
            self.grace_s,
        )
        logging.shutdown()
        os._exit(75)

    def _loop(self) -> None:
        while not self._stop.wait(self.tick_s):
            try:
                self.beat()
                if self.overdue() and not self._stop.is_set():
                    self.end_stuck_run()
            except Exception:  # the database may be briefly away; the next tick retries
                log.warning("heartbeat of job %s failed", self.job_id, exc_info=True)

    def __enter__(self) -> RunMonitor:
        self._thread.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def describe_failure(exc: BaseException, soft_limit_s: int) -> tuple[str, str]:
    """Return a stable code and a readable reason for an exception raised by the analysis."""
    if isinstance(exc, SoftTimeLimitExceeded):
        return "time_limit", f"the analysis exceeded the soft time limit of {soft_limit_s} s"
    if isinstance(exc, wsi.WsiError | ModelError):
        return _snake(type(exc).__name__), str(exc) or type(exc).__name__
    if isinstance(exc, JobError):  # PACS retrieval and storage, DICOM results
        return exc.code, exc.message
    return "internal_error", f"{type(exc).__name__}: {exc}"


def run_job(ctx: ServiceContext, job_id: str, *, watchdog: bool = False) -> str:
    """Run one job to a terminal state; return it, or ``"skipped"``/``"lost"``.

    ``"skipped"``: another run owns the job or it already ended (a duplicate delivery).
    ``"lost"``: this run's lease expired and another run took the job over.
    With ``watchdog`` (the Celery task) a run that has not stopped ``service.cancel_grace_s``
    after its job was cancelled is recorded ``cancelled`` and its process is ended.
    """
    svc = ctx.service
    token = new_id()
    job = ctx.store.claim(job_id, worker_name(), token, svc.lease_s)
    if job is None:
        return "skipped"
    if job.attempts > svc.max_attempts:
        reason = (
            f"the analysis stopped its worker {job.attempts - 1} times (killed, out of memory or "
            "hard time limit); check the slide and the worker logs, then resubmit with force"
        )
        ctx.store.finish(job_id, token, FAILED, reason_code="worker_lost", reason=reason)
        return FAILED
    out_dir = Path(job.out_dir)
    work_dir = out_dir / ".work"
    work_dir.mkdir(parents=True, exist_ok=True)
    tick = min(svc.heartbeat_s, svc.progress_interval_s or svc.heartbeat_s)
    monitor = RunMonitor(
        ctx.store, job_id, token, tick, grace_s=svc.cancel_grace_s if watchdog else None
    )
    t0 = time.monotonic()
    try:
        with monitor:
            monitor.progress("retrieve", 0, 0)
            slide = prepare_job_slide(ctx, job)  # a PACS series is retrieved into the cache
            report = run_pipeline(
                slide,
                out_dir,
                ctx.settings,
                progress=monitor.progress,
                cancel=monitor.cancelled,
                work_dir=work_dir,
            )
            monitor.progress("store", *monitor.latest[1:])
            publish_results(ctx, job)  # PACS jobs: STOW-RS dicom/*.dcm back to the archive
    except Exception as exc:
        return _record_failure(ctx, job_id, token, monitor, exc)
    if not (out_dir / "report.json").exists():
        atomic_write_json(out_dir / "report.json", report)
    total = monitor.latest[2]
    won = ctx.store.finish(
        job_id,
        token,
        SUCCEEDED,
        run_s=time.monotonic() - t0,
        stage="done",
        tiles_done=total,
        tiles_total=total,
        reason=None,
        reason_code=None,
    )
    if won and not svc.keep_work_dir:
        shutil.rmtree(work_dir, ignore_errors=True)
    return SUCCEEDED if won else "lost"


def _record_failure(
    ctx: ServiceContext, job_id: str, token: str, monitor: RunMonitor, exc: Exception
) -> str:
    if monitor.lost:
        log.warning("job %s: lease lost to another run; leaving the job to it", job_id)
        return "lost"
    if monitor.cancel_requested or ctx.store.get_job(job_id).cancel_requested:
        done = monitor.latest[1]
        ctx.store.finish(
            job_id,
            token,
            CANCELLED,
            reason_code="cancelled",
            reason=f"cancelled after {done} tiles",
        )
        return CANCELLED
    code, reason = describe_failure(exc, ctx.service.soft_time_limit_s)
    if code == "internal_error":
        log.error("job %s failed unexpectedly", job_id, exc_info=exc)
    ctx.store.finish(job_id, token, FAILED, reason_code=code, reason=reason)
    return FAILED


def make_sender(ctx: ServiceContext, celery: Celery | None = None) -> Sender:
    """Return a ``send(job_id)`` that queues ``atc.analyze`` and records when it was sent."""
    target = celery or app

    def send(job_id: str) -> None:
        target.send_task(ANALYZE_TASK, args=[job_id], queue=ctx.service.analysis_queue)
        ctx.store.update_job(job_id, sent_at=time.time())

    return send


def write_thumbnail(ctx: ServiceContext, job_id: str) -> Path | None:
    """Write ``thumbnail.jpg`` of the job's slide into its folder (idempotent)."""
    from PIL import Image

    from workers.fingerprint import open_target

    job = ctx.store.get_job(job_id)
    dest = Path(job.out_dir) / "thumbnail.jpg"
    if dest.exists() or job.state != SUCCEEDED:
        return dest if dest.exists() else None
    with wsi.open_slide(open_target(Path(job.slide_path))) as slide:
        pixels = slide.get_thumbnail(ctx.service.thumbnail_px)
    with atomic_write(dest) as fh:
        Image.fromarray(pixels).save(fh, format="JPEG", quality=85)
    return dest


_RETRYABLE = (OperationalError, ConnectionError)


@app.task(name=ANALYZE_TASK, autoretry_for=_RETRYABLE, retry_backoff=True, max_retries=5)  # type: ignore[untyped-decorator]
def analyze(job_id: str) -> str:
    """Run the analysis job ``job_id`` (idempotent: duplicates and finished jobs are no-ops)."""
    ctx = get_context()
    state = run_job(ctx, job_id, watchdog=True)
    if state == SUCCEEDED and ctx.service.thumbnail_px:
        app.send_task(THUMBNAIL_TASK, args=[job_id], queue=ctx.service.io_queue)
    return state


@app.task(name=THUMBNAIL_TASK, autoretry_for=_RETRYABLE, retry_backoff=True, max_retries=5)  # type: ignore[untyped-decorator]
def thumbnail(job_id: str) -> str | None:
    """Write the job's thumbnail (io queue); a slide that cannot be read leaves none."""
    try:
        path = write_thumbnail(get_context(), job_id)
    except wsi.WsiError as exc:
        log.warning("no thumbnail for job %s: %s", job_id, exc)
        return None
    return str(path) if path else None


@app.task(name=EXPAND_BATCH_TASK, autoretry_for=_RETRYABLE, retry_backoff=True, max_retries=5)  # type: ignore[untyped-decorator]
def expand_batch(batch_id: str) -> int:
    """Submit every slide of a batch not yet submitted (io queue); return how many were new."""
    from workers.batch import expand_batch as expand

    ctx = get_context()
    return expand(ctx, batch_id, make_sender(ctx))


@app.task(name=POLL_PACS_TASK, autoretry_for=_RETRYABLE, retry_backoff=True, max_retries=5)  # type: ignore[untyped-decorator]
def poll_pacs() -> dict[str, list[str] | str]:
    """Poll every configured DICOMweb archive once (beat schedule, io queue)."""
    from workers.pacs import poll_archives

    ctx = get_context()
    return poll_archives(ctx, make_sender(ctx))


_REAPER_STOP = threading.Event()


def _reaper_loop() -> None:
    while True:
        try:
            ctx = get_context()
            ids = recover(ctx, make_sender(ctx))
            if ids:
                log.warning(
                    "requeued %d job(s) whose worker died or was never sent: %s", len(ids), ids
                )
        except Exception:
            log.warning("job recovery pass failed", exc_info=True)
        if _REAPER_STOP.wait(get_context().service.reaper_interval_s):
            return


@worker_ready.connect  # type: ignore[untyped-decorator,misc]
def _start_reaper(**_: Any) -> None:
    threading.Thread(target=_reaper_loop, name="atc-reaper", daemon=True).start()


@worker_shutting_down.connect  # type: ignore[untyped-decorator,misc]
def _stop_reaper(**_: Any) -> None:
    _REAPER_STOP.set()
