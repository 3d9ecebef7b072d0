"""The job store: jobs, batches and batch items in SQLAlchemy 2 (SQLite default, PostgreSQL by URL).

Times are UNIX seconds (float) so SQLite and PostgreSQL behave alike. Every state change that
races (claiming a job, heart-beating, finishing, requeueing) is one conditional ``UPDATE`` whose
row count says who won, so any number of workers, API processes and watchers may share a store.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

from sqlalchemy import (
    Boolean,
    Engine,
    Float,
    Index,
    Integer,
    String,
    Text,
    create_engine,
    event,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from workers.errors import BatchNotFoundError, JobNotFoundError

log = logging.getLogger(__name__)

QUEUED: Final = "queued"
RUNNING: Final = "running"
SUCCEEDED: Final = "succeeded"
FAILED: Final = "failed"
CANCELLED: Final = "cancelled"
STATES: Final[tuple[str, ...]] = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
TERMINAL: Final[frozenset[str]] = frozenset({SUCCEEDED, FAILED, CANCELLED})


def new_id() -> str:
    """Return a fresh 32-hex-digit identifier."""
    return uuid.uuid4().hex


class Base(DeclarativeBase):
    """Declarative base of the store's tables."""


class Job(Base):
    """One analysis of one slide."""

    __tablename__ = "atc_jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    state: Mapped[str] = mapped_column(String(16), index=True, default=QUEUED)
    slide_path: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(80))
    pipeline_version: Mapped[str] = mapped_column(String(64))
    config_hash: Mapped[str] = mapped_column(String(64))
    idem_key: Mapped[str] = mapped_column(String(240), index=True)
    force: Mapped[bool] = mapped_column(Boolean, default=False)
    source: Mapped[str] = mapped_column(String(16), default="api")
    batch_id: Mapped[str | None] = mapped_column(String(32), index=True, default=None)
    out_dir: Mapped[str] = mapped_column(Text)
    reason_code: Mapped[str | None] = mapped_column(String(64), default=None)
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    stage: Mapped[str | None] = mapped_column(String(64), default=None)
    tiles_done: Mapped[int] = mapped_column(Integer, default=0)
    tiles_total: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(200), default=None)
    lease_token: Mapped[str | None] = mapped_column(String(32), default=None)
    heartbeat_at: Mapped[float | None] = mapped_column(Float, default=None)
    sent_at: Mapped[float | None] = mapped_column(Float, default=None)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    started_at: Mapped[float | None] = mapped_column(Float, default=None)
    finished_at: Mapped[float | None] = mapped_column(Float, default=None)
    run_s: Mapped[float | None] = mapped_column(Float, default=None)

    def to_dict(self) -> dict[str, Any]:
        """Return the job as the API shows it (no lease token)."""
        return {
            "id": self.id,
            "state": self.state,
            "slide_path": self.slide_path,
            "fingerprint": self.fingerprint,
            "pipeline_version": self.pipeline_version,
            "config_hash": self.config_hash,
            "idempotency_key": self.idem_key,
            "force": self.force,
            "source": self.source,
            "batch_id": self.batch_id,
            "out_dir": self.out_dir,
            "reason_code": self.reason_code,
            "reason": self.reason,
            "progress": {"stage": self.stage, "done": self.tiles_done, "total": self.tiles_total},
            "attempts": self.attempts,
            "worker": self.worker,
            "cancel_requested": self.cancel_requested,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "run_s": self.run_s,
        }


#: At most one queued or running non-forced job per idempotency key: two submissions of one new
#: slide that both found nothing to reuse cannot both create a job (the second insert fails and
#: its caller returns the first job). Forced reruns are outside the index.
ACTIVE_KEY_INDEX = Index(
    "uq_atc_jobs_active_key",
    Job.idem_key,
    unique=True,
    sqlite_where=text("state IN ('queued', 'running') AND NOT force"),
    postgresql_where=text("state IN ('queued', 'running') AND NOT force"),
)


class Batch(Base):
    """A set of slides submitted together (a glob under a root, or a list of paths)."""

    __tablename__ = "atc_batches"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    root: Mapped[str | None] = mapped_column(Text, default=None)
    pattern: Mapped[str | None] = mapped_column(Text, default=None)
    paths_json: Mapped[str | None] = mapped_column(Text, default=None)
    force: Mapped[bool] = mapped_column(Boolean, default=False)
    pipeline_version: Mapped[str] = mapped_column(String(64))
    config_hash: Mapped[str] = mapped_column(String(64))
    total: Mapped[int | None] = mapped_column(Integer, default=None)
    expanded: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)


class BatchItem(Base):
    """One slide of a batch and the job that analyses it (new, or an existing one reused)."""

    __tablename__ = "atc_batch_items"

    batch_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    slide_path: Mapped[str] = mapped_column(Text, primary_key=True)
    job_id: Mapped[str | None] = mapped_column(String(32), default=None)
    skipped: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text, default=None)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def make_engine(url: str, schema: str | None = None) -> Engine:
    """Create an engine; SQLite gets WAL and a busy timeout, a schema maps the tables into it."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    engine = create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)
    if schema:
        engine = engine.execution_options(schema_translate_map={None: schema})
    return engine


class JobStore:
    """Access to the jobs and batches tables.

    Args:
        url: SQLAlchemy URL (``sqlite:///…`` or ``postgresql+psycopg://…``).
        schema: PostgreSQL schema to keep the tables in (created when missing).
    """

    def __init__(self, url: str, schema: str | None = None) -> None:
        self.url = url
        self.schema = schema
        self.engine = make_engine(url, schema)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def create_all(self) -> None:
        """Create the schema and tables when missing (idempotent)."""
        if self.schema and not self.url.startswith("sqlite"):
            with self.engine.begin() as conn:
                conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"'))
        Base.metadata.create_all(self.engine)
        try:  # stores made before the index existed get it now
            ACTIVE_KEY_INDEX.create(self.engine, checkfirst=True)
        except IntegrityError as exc:  # an old race left two active jobs with one key
            log.warning(
                "job store: unique index on active jobs not created (%s); duplicate "
                "submissions stay possible until those jobs end and a service starts again",
                exc.orig,
            )

    def dispose(self) -> None:
        """Close pooled connections (call after fork and at shutdown)."""
        self.engine.dispose(close=False)

    def ping(self) -> None:
        """Run ``SELECT 1``; raises the driver's error when the database is unreachable."""
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    @contextmanager
    def session(self) -> Iterator[Session]:
        """Yield a session committed on success, rolled back on error."""
        with self._sessions.begin() as s:
            yield s

    # ----- jobs -------------------------------------------------------------------------------
    def add(self, obj: Job | Batch | BatchItem) -> None:
        """Insert one row."""
        with self.session() as s:
            s.add(obj)

    def add_job_once(self, job: Job) -> bool:
        """Insert ``job``; False when another active non-forced job holds its key already."""
        try:
            self.add(job)
        except IntegrityError:
            return False
        return True

    def get_job(self, job_id: str) -> Job:
        """Return the job; raises JobNotFoundError."""
        with self.session() as s:
            job = s.get(Job, job_id)
            if job is None:
                raise JobNotFoundError(job_id)
            return job

    def find_reusable(self, idem_key: str) -> Job | None:
        """Return the newest job with this key that succeeded or is still queued/running."""
        stmt = (
            select(Job)
            .where(Job.idem_key == idem_key, Job.state.in_((QUEUED, RUNNING, SUCCEEDED)))
            .order_by(Job.created_at.desc())
            .limit(1)
        )
        with self.session() as s:
            return s.scalars(stmt).first()

    def list_jobs(
        self,
        state: str | None = None,
        batch_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Job]:
        """Return jobs, newest first, optionally filtered by state and batch."""
        stmt = select(Job).order_by(Job.created_at.desc()).limit(limit).offset(offset)
        if state:
            stmt = stmt.where(Job.state == state)
        if batch_id:
            stmt = stmt.where(Job.batch_id == batch_id)
        with self.session() as s:
            return list(s.scalars(stmt))

    def update_job(self, job_id: str, *conds: Any, **values: Any) -> bool:
        """Set ``values`` on the job when every condition holds; return whether a row changed."""
        stmt = update(Job).where(Job.id == job_id, *conds).values(**values)
        with self.session() as s:
            return bool(s.execute(stmt).rowcount)  # type: ignore[attr-defined]

    def claim(self, job_id: str, worker: str, lease_token: str, lease_s: float) -> Job | None:
        """Take the job for a run: it must be queued, or running with an expired lease.

        Returns:
            The claimed job (attempts incremented), or None when another run owns it or it is
            terminal or cancelled.
        """
        now = time.time()
        claimable = or_(
            Job.state == QUEUED,
            (Job.state == RUNNING) & (Job.heartbeat_at < now - lease_s),
        )
        won = self.update_job(
            job_id,
            claimable,
            Job.cancel_requested.is_(False),
            state=RUNNING,
            attempts=Job.attempts + 1,
            worker=worker,
            lease_token=lease_token,
            heartbeat_at=now,
            started_at=func.coalesce(Job.started_at, now),
        )
        return self.get_job(job_id) if won else None

    def heartbeat(self, job_id: str, lease_token: str, **progress: Any) -> bool:
        """Refresh the lease (and progress fields); False means the lease was lost."""
        return self.update_job(
            job_id,
            Job.lease_token == lease_token,
            Job.state == RUNNING,
            heartbeat_at=time.time(),
            **progress,
        )

    def finish(self, job_id: str, lease_token: str, state: str, **values: Any) -> bool:
        """Record a terminal state for the run holding ``lease_token``."""
        return self.update_job(
            job_id,
            Job.lease_token == lease_token,
            Job.state == RUNNING,
            state=state,
            finished_at=time.time(),
            lease_token=None,
            **values,
        )

    def requeue_stale(self, lease_s: float) -> list[str]:
        """Put running jobs whose lease expired back to queued (cancelled if a cancel was asked);
        return the ids this call requeued."""
        stale = (Job.state == RUNNING) & (Job.heartbeat_at < time.time() - lease_s)
        gone = {"lease_token": None, "sent_at": None}
        self.update_where(stale & Job.cancel_requested, state=CANCELLED, reason="cancelled", **gone)
        with self.session() as s:
            ids = list(s.scalars(select(Job.id).where(stale)))
        why = "requeued: its worker stopped heart-beating (died or lost)"
        return [i for i in ids if self.update_job(i, stale, state=QUEUED, reason=why, **gone)]

    def update_where(self, cond: Any, **values: Any) -> int:
        """Set ``values`` on every job matching ``cond``; return how many rows changed."""
        with self.session() as s:
            return int(s.execute(update(Job).where(cond).values(**values)).rowcount)  # type: ignore[attr-defined]

    def unsent_queued(self, older_than_s: float, resend_after_s: float | None = None) -> list[str]:
        """Return queued jobs never handed to the broker for ``older_than_s`` seconds, and (with
        ``resend_after_s``) queued jobs sent that long ago (the broker may have lost them)."""
        now = time.time()
        never = Job.sent_at.is_(None) & (Job.created_at < now - older_than_s)
        lost = Job.sent_at < now - resend_after_s if resend_after_s else never
        stmt = select(Job.id).where(Job.state == QUEUED, or_(never, lost))
        with self.session() as s:
            return list(s.scalars(stmt))

    def counts(self, batch_id: str | None = None) -> dict[str, int]:
        """Return the number of jobs per state (every state present, zeros included)."""
        stmt = select(Job.state, func.count()).group_by(Job.state)
        if batch_id:
            stmt = stmt.where(Job.batch_id == batch_id)
        with self.session() as s:
            found = {str(k): int(v) for k, v in s.execute(stmt).all()}
        return {st: found.get(st, 0) for st in STATES}

    def finished_since(self, since: float) -> list[Job]:
        """Return jobs that succeeded after ``since`` (UNIX s), for throughput metrics."""
        stmt = select(Job).where(Job.state == SUCCEEDED, Job.finished_at >= since)
        with self.session() as s:
            return list(s.scalars(stmt))

    def succeeded_totals(self) -> tuple[int, float, int]:
        """Return (count, summed run seconds, summed tiles) over all succeeded jobs."""
        stmt = select(
            func.count(),
            func.coalesce(func.sum(Job.run_s), 0.0),
            func.coalesce(func.sum(Job.tiles_total), 0),
        ).where(Job.state == SUCCEEDED)
        with self.session() as s:
            n, run_s, tiles = s.execute(stmt).one()
        return int(n), float(run_s or 0.0), int(tiles or 0)

    # ----- batches ----------------------------------------------------------------------------
    def get_batch(self, batch_id: str) -> Batch:
        """Return the batch; raises BatchNotFoundError."""
        with self.session() as s:
            batch = s.get(Batch, batch_id)
            if batch is None:
                raise BatchNotFoundError(batch_id)
            return batch

    def find_open_batch(
        self, root: str, pattern: str, force: bool, config_hash: str
    ) -> Batch | None:
        """Return the newest batch with the same root, glob, force and config (for resuming)."""
        stmt = (
            select(Batch)
            .where(
                Batch.root == root,
                Batch.pattern == pattern,
                Batch.force == force,
                Batch.config_hash == config_hash,
            )
            .order_by(Batch.created_at.desc())
            .limit(1)
        )
        with self.session() as s:
            return s.scalars(stmt).first()

    def update_batch(self, batch_id: str, **values: Any) -> None:
        """Set fields of a batch."""
        with self.session() as s:
            s.execute(update(Batch).where(Batch.id == batch_id).values(**values))

    def batch_items(self, batch_id: str) -> list[BatchItem]:
        """Return the items recorded so far for a batch."""
        with self.session() as s:
            return list(s.scalars(select(BatchItem).where(BatchItem.batch_id == batch_id)))

    def batch_counts(self, batch_id: str) -> dict[str, int]:
        """Return per-state counts of the batch's jobs (reused ones included), skipped, errors."""
        stmt = (
            select(Job.state, func.count())
            .join(BatchItem, BatchItem.job_id == Job.id)
            .where(BatchItem.batch_id == batch_id)
            .group_by(Job.state)
        )
        with self.session() as s:
            found = {str(k): int(v) for k, v in s.execute(stmt).all()}
            items = list(s.scalars(select(BatchItem).where(BatchItem.batch_id == batch_id)))
        out = {st: found.get(st, 0) for st in STATES}
        out["skipped"] = sum(1 for i in items if i.skipped)
        out["errors"] = sum(1 for i in items if i.error)
        out["items"] = len(items)
        return out
