"""Take slides from a DICOMweb archive: discover new SM series, submit each once.

``PacsWatcher.poll_once`` asks QIDO-RS for series of modality SM (plus the archive's
``filters``; with ``date_attribute`` set, only from the stored date cursor minus
``lookback_days``). A series is complete when its instance count is unchanged over
``pacs.stable_polls`` polls (a scanner still storing instances changes it); it is then checked
(a VL Whole Slide Microscopy instance must be present) and submitted by ``submit_series``. The
state (cursor and every series seen, with its job) is one JSON file per archive, written
atomically, so a restarted watcher submits nothing twice; the idempotency key (Series Instance
UID + pipeline version + configuration hash) makes a second submission through the API or the
CLI reuse the job as well.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from workers.dicomweb import DicomWebClient, SeriesInfo
from workers.errors import NotASlideError, PacsError, SeriesNotFoundError
from workers.jobs import Sender, ServiceContext, Submission, submit_slide
from workers.pacs_cache import PACS_SOURCE, SeriesRef, series_path
from workers.pacs_settings import ArchiveSettings
from workers.store import FAILED, SUCCEEDED
from wsi.io import atomic_write_json

log = logging.getLogger(__name__)

#: Job reason codes of a transient archive failure: the watcher submits the series again.
TRANSIENT_CODES = frozenset({"pacs_unreachable"})
#: Resubmissions of one series after transient failures.
MAX_RESUBMITS = 3


def series_fingerprint(series_uid: str) -> str:
    """The slide identity of a PACS series in idempotency keys: its Series Instance UID."""
    return f"dicom-series:{series_uid}"


def submit_series(
    ctx: ServiceContext,
    series_uid: str,
    send: Sender,
    *,
    archive: str | None = None,
    force: bool = False,
    info: SeriesInfo | None = None,
) -> Submission:
    """Submit a series of an archive by its Series Instance UID (checked, not yet retrieved).

    The worker that runs the job retrieves the series into the cache (``workers.pacs_cache``).

    Raises:
        ArchiveUnknownError: ``archive`` is not configured.
        SeriesNotFoundError, NotASlideError, PacsUnreachableError, PacsAuthError.
    """
    settings = ctx.settings.pacs.archive(archive)
    if info is None:
        with DicomWebClient(settings, ctx.settings.pacs) as client:
            info = client.get_series(series_uid)
            client.check_slide(info)
    ref = SeriesRef(settings.name, info.study_uid, info.series_uid)
    return submit_slide(
        ctx,
        series_path(ctx, ref),
        send,
        force=force,
        source=PACS_SOURCE,
        fingerprint=series_fingerprint(info.series_uid),
    )


@dataclass
class SeriesEntry:
    """What the watcher knows about one series (persisted)."""

    study_uid: str
    instances: int
    stable: int = 1
    status: str = "pending"  # pending | submitted | done | failed
    job_id: str | None = None
    reason: str | None = None
    resubmits: int = 0
    history: list[str] = field(default_factory=list)


class PacsWatcher:
    """Polls one archive and submits complete slide series (``poll_once`` is one step).

    Args:
        ctx: the service context.
        archive: the archive's settings.
        send: hands job ids to the broker (or runs them in-process).
    """

    def __init__(self, ctx: ServiceContext, archive: ArchiveSettings, send: Sender) -> None:
        self.ctx, self.archive, self.send = ctx, archive, send
        state_dir = ctx.settings.pacs.resolved_state_dir(ctx.service.output_root)
        self.state_path = state_dir / f"{archive.name}.json"
        self.cursor: str | None = None
        self.series: dict[str, SeriesEntry] = {}
        self._load()

    def _load(self) -> None:
        if not self.state_path.exists():
            return
        raw: dict[str, Any] = json.loads(self.state_path.read_text(encoding="utf-8"))
        self.cursor = raw.get("cursor")
        self.series = {uid: SeriesEntry(**e) for uid, e in raw.get("series", {}).items()}

    def save(self) -> None:
        """Write the state file atomically."""
        data = {
            "archive": self.archive.name,
            "base_url": self.archive.base_url,
            "cursor": self.cursor,
            "series": {uid: asdict(e) for uid, e in self.series.items()},
        }
        atomic_write_json(self.state_path, data)

    def _match(self) -> dict[str, str]:
        match = {"Modality": "SM", **self.archive.filters}
        key = self.archive.date_attribute
        if key and self.cursor:
            start = dt.datetime.strptime(self.cursor, "%Y%m%d").date()
            start -= dt.timedelta(days=self.archive.lookback_days)
            match[key] = f"{start:%Y%m%d}-"
        return match

    def poll_once(self) -> list[str]:
        """Query the archive once; return the ids of jobs submitted by this poll.

        Raises:
            PacsUnreachableError, PacsAuthError: the query failed (after retries).
        """
        submitted: list[str] = []
        pacs = self.ctx.settings.pacs
        with DicomWebClient(self.archive, pacs) as client:
            for info in client.search_series(self._match()):
                self._advance_cursor(info.date)
                count = info.instances
                if count is None:
                    count = len(client.instance_classes(info))
                entry = self.series.get(info.series_uid)
                if entry is None or (entry.status == "pending" and entry.instances != count):
                    self.series[info.series_uid] = SeriesEntry(info.study_uid, count)
                    continue
                if entry.status != "pending":
                    if entry.instances != count:
                        log.warning("series %s changed after it was handled", info.series_uid)
                    continue
                entry.stable += 1
                if entry.stable >= pacs.stable_polls:
                    job_id = self._try_submit(client, info, entry)
                    if job_id:
                        submitted.append(job_id)
        self._follow_jobs()
        self.save()
        return submitted

    def _advance_cursor(self, date: str | None) -> None:
        if date and len(date) >= 8 and date[:8].isdigit() and date[:8] > (self.cursor or ""):
            self.cursor = date[:8]

    def _try_submit(self, client: DicomWebClient, info: SeriesInfo, entry: SeriesEntry) -> str:
        now = f"{time.time():.3f}"
        try:
            client.check_slide(info)
            sub = submit_series(
                self.ctx, info.series_uid, self.send, archive=self.archive.name, info=info
            )
        except (NotASlideError, SeriesNotFoundError) as exc:
            entry.status, entry.reason = "failed", f"{exc.code}: {exc.message}"
            entry.history.append(f"{now} not submitted: {exc.message}")
            log.warning("%s", exc.message)
            return ""
        entry.status, entry.job_id = "submitted", sub.job.id
        entry.history.append(f"{now} {'submitted' if sub.created else 'reused'} job {sub.job.id}")
        log.info("series %s: job %s (%s)", info.series_uid, sub.job.id, sub.job.state)
        return sub.job.id if sub.created else ""

    def _follow_jobs(self) -> None:
        """Record finished jobs; a job failed by a transient archive outage is submitted again
        at the next poll (at most ``MAX_RESUBMITS`` times)."""
        for uid, entry in self.series.items():
            if entry.status != "submitted" or entry.job_id is None:
                continue
            job = self.ctx.store.get_job(entry.job_id)
            if job.state == SUCCEEDED:
                entry.status = "done"
            elif job.state in (FAILED, "cancelled"):
                entry.reason = f"job {job.id} {job.state}: {job.reason_code}: {job.reason}"
                entry.history.append(f"{time.time():.3f} {entry.reason}")
                if job.reason_code in TRANSIENT_CODES and entry.resubmits < MAX_RESUBMITS:
                    entry.status, entry.resubmits = "pending", entry.resubmits + 1
                    entry.stable = self.ctx.settings.pacs.stable_polls - 1  # next poll submits
                    log.warning("series %s: %s; submitting again next poll", uid, entry.reason)
                else:
                    entry.status = "failed"

    def run(self, stop: threading.Event | None = None, max_polls: int | None = None) -> None:
        """Poll every ``pacs.poll_s`` until ``stop`` is set; a failed poll is logged and retried."""
        stop = stop or threading.Event()
        polls = 0
        while not stop.is_set() and (max_polls is None or polls < max_polls):
            try:
                self.poll_once()
            except PacsError as exc:
                log.warning("poll of %s failed: %s", self.archive.name, exc.message)
            polls += 1
            stop.wait(self.ctx.settings.pacs.poll_s)


def poll_archives(ctx: ServiceContext, send: Sender) -> dict[str, list[str] | str]:
    """Poll every configured archive once (the Celery beat task); return job ids or errors."""
    out: dict[str, list[str] | str] = {}
    for archive in ctx.settings.pacs.archives:
        try:
            out[archive.name] = PacsWatcher(ctx, archive, send).poll_once()
        except PacsError as exc:
            out[archive.name] = f"{exc.code}: {exc.message}"
            log.warning("poll of %s failed: %s", archive.name, exc.message)
    return out


def state_file(ctx: ServiceContext, archive: str) -> Path:
    """The discovery state file of an archive."""
    return ctx.settings.pacs.resolved_state_dir(ctx.service.output_root) / f"{archive}.json"
