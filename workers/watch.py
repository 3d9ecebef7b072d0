"""Scanner hand-off: watch a folder and submit each slide once it is complete.

A slide is complete when the size and mtime of all its files are unchanged over
``watch_stable_polls`` consecutive polls and OpenSlide opens it. An MRXS slide also needs its
companion folder with ``Slidedat.ini`` and every data file it lists; a folder of DICOM instances is
one slide. The state persists in a JSON file, so a restarted watcher submits nothing twice. A slide
that cannot be analysed gets ``<name>.atc-failed.txt`` beside it; nothing is moved or deleted.
"""

from __future__ import annotations

import configparser
import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import wsi
from workers.errors import JobError
from workers.fingerprint import SLIDE_SUFFIXES, is_dicom_folder, open_target
from workers.jobs import Sender, ServiceContext, resolve_slide_path, submit_slide
from workers.store import FAILED, SUCCEEDED
from wsi.io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

FAILED_SUFFIX = ".atc-failed.txt"
_IGNORED_SUFFIXES = (".part", ".tmp", ".partial", ".crdownload", ".txt")

Signature = list[tuple[str, int, int]]


@dataclass
class Candidate:
    """A slide seen in the folder: what to submit, its files' (name, size, mtime), readiness."""

    path: Path
    signature: Signature
    structure_ok: bool
    waiting_for: str = ""


@dataclass
class Entry:
    """What the watcher knows about one slide (persisted)."""

    signature: Signature
    stable: int = 1
    open_failures: int = 0
    status: str = "pending"  # pending | submitted | done | failed
    job_id: str | None = None
    reason: str | None = None
    history: list[str] = field(default_factory=list)


def _stat(files: list[Path], base: Path) -> Signature:
    sig: Signature = []
    for f in sorted(files):
        st = f.stat()
        sig.append((str(f.relative_to(base)), st.st_size, st.st_mtime_ns))
    return sig


def mrxs_candidate(mrxs: Path, base: Path) -> Candidate:
    """Describe an MRXS slide: complete once its folder has Slidedat.ini and the listed files."""
    folder = mrxs.with_suffix("")
    files = [mrxs] + ([p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else [])
    ini = folder / "Slidedat.ini"
    if not ini.is_file():
        return Candidate(mrxs, _stat(files, base), False, f"{folder.name}/Slidedat.ini")
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    try:
        parser.read_string(ini.read_text(encoding="utf-8-sig", errors="replace"))
        count = int(parser.get("DATAFILE", "FILE_COUNT", fallback="0"))
        names = [parser.get("DATAFILE", f"FILE_{i}", fallback="") for i in range(count)]
    except (configparser.Error, ValueError):
        return Candidate(mrxs, _stat(files, base), False, "a readable Slidedat.ini")
    missing = [n for n in names if not n or not (folder / n).is_file()]
    if count == 0 or missing:
        return Candidate(
            mrxs, _stat(files, base), False, f"data files {missing or '(none listed)'}"
        )
    return Candidate(mrxs, _stat(files, base), True)


def scan(folder: Path) -> dict[str, Candidate]:
    """Return the slides in ``folder`` (recursively), keyed by path relative to it."""
    found: dict[str, Candidate] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        mrxs_stems = {Path(n).stem for n in filenames if n.lower().endswith(".mrxs")}
        keep = []
        for d in sorted(dirnames):
            sub = here / d
            if d.startswith(".") or d in mrxs_stems:
                continue  # hidden, or an MRXS companion folder (part of its slide)
            if is_dicom_folder(sub):
                files = [p for p in sub.iterdir() if p.is_file()]
                key = str(sub.relative_to(folder))
                found[key] = Candidate(open_target(sub), _stat(files, folder), True)
                continue
            keep.append(d)
        dirnames[:] = keep
        for name in sorted(filenames):
            path = here / name
            low = name.lower()
            if name.startswith(".") or low.endswith(_IGNORED_SUFFIXES):
                continue
            if Path(low).suffix not in SLIDE_SUFFIXES:
                continue
            key = str(path.relative_to(folder))
            if low.endswith(".mrxs"):
                found[key] = mrxs_candidate(path, folder)
            else:
                found[key] = Candidate(path, _stat([path], folder), True)
    return found


class Watcher:
    """Polls one folder and submits complete slides (``poll_once`` is one step, ``run`` loops).

    Args:
        ctx: the service context (store, settings).
        folder: the watched folder; must lie inside a slide root.
        send: hands job ids to the broker.
    """

    def __init__(self, ctx: ServiceContext, folder: Path, send: Sender) -> None:
        self.ctx, self.send = ctx, send
        self.folder = resolve_slide_path(folder, ctx.service)
        digest = hashlib.sha256(str(self.folder).encode()).hexdigest()[:16]
        self.state_path = ctx.service.resolved_watch_state_dir / f"{digest}.json"
        self.entries: dict[str, Entry] = self._load()

    def _load(self) -> dict[str, Entry]:
        if not self.state_path.exists():
            return {}
        raw: dict[str, Any] = json.loads(self.state_path.read_text(encoding="utf-8"))
        entries = {}
        for key, e in raw.get("entries", {}).items():
            e["signature"] = [tuple(s) for s in e["signature"]]
            entries[key] = Entry(**e)
        return entries

    def save(self) -> None:
        """Write the state file atomically."""
        data = {
            "folder": str(self.folder),
            "entries": {k: asdict(e) for k, e in self.entries.items()},
        }
        atomic_write_json(self.state_path, data)

    def poll_once(self) -> list[str]:
        """Look at the folder once; return the ids of jobs submitted by this poll."""
        submitted: list[str] = []
        for key, cand in scan(self.folder).items():
            entry = self.entries.get(key)
            if entry is None or entry.signature != cand.signature:
                if entry is not None and entry.status != "pending":
                    log.warning("%s changed after it was handled; treating it as a new slide", key)
                self.entries[key] = Entry(signature=cand.signature)
                continue
            if entry.status != "pending":
                continue
            entry.stable += 1
            if entry.stable >= self.ctx.service.watch_stable_polls and cand.structure_ok:
                job_id = self._try_submit(key, cand, entry)
                if job_id:
                    submitted.append(job_id)
        self._follow_jobs()
        self.save()
        return submitted

    def _try_submit(self, key: str, cand: Candidate, entry: Entry) -> str | None:
        try:
            path = resolve_slide_path(cand.path, self.ctx.service)
            with wsi.open_slide(path):
                pass
        except wsi.WsiError as exc:
            entry.open_failures += 1
            if entry.open_failures >= self.ctx.service.watch_open_retries:
                self._fail(key, entry, f"{type(exc).__name__}: {exc}")
            return None
        except JobError as exc:
            self._fail(key, entry, str(exc))
            return None
        sub = submit_slide(self.ctx, path, self.send, source="watch")
        entry.status, entry.job_id = "submitted", sub.job.id
        entry.history.append(f"{time.time():.3f} submitted job {sub.job.id}")
        log.info("submitted %s as job %s", key, sub.job.id)
        return sub.job.id

    def _follow_jobs(self) -> None:
        for key, entry in self.entries.items():
            if entry.status != "submitted" or entry.job_id is None:
                continue
            job = self.ctx.store.get_job(entry.job_id)
            if job.state == SUCCEEDED:
                entry.status = "done"
                self._clear_note(key)
            elif job.state in (FAILED, "cancelled"):
                self._fail(key, entry, f"job {job.id} {job.state}: {job.reason_code}: {job.reason}")

    def _note(self, key: str) -> Path:
        target = self.folder / key
        return target.with_name(target.name + FAILED_SUFFIX)

    def _clear_note(self, key: str) -> None:
        """Remove a failure note left by an earlier attempt (a copy that stalled, then finished)."""
        note = self._note(key)
        if note.is_file():
            note.unlink(missing_ok=True)
            log.info("%s succeeded; removed the stale %s", key, note.name)

    def _fail(self, key: str, entry: Entry, reason: str) -> None:
        entry.status, entry.reason = "failed", reason
        entry.history.append(f"{time.time():.3f} failed: {reason}")
        target = self.folder / key
        note = self._note(key)
        text = (
            f"atc-wsi could not analyse this slide; it was left in place.\n"
            f"slide: {target}\njob: {entry.job_id or '-'}\nreason: {reason}\n"
            f"time: {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n"
            "what to do: fix or re-export the slide, then copy it in again (a changed file is "
            "picked up as a new slide) or submit it with `atc-wsi submit --force`.\n"
        )
        atomic_write_text(note, text)
        log.warning("%s failed: %s (reason file %s)", key, reason, note)

    def run(self, stop: threading.Event | None = None, max_polls: int | None = None) -> None:
        """Poll every ``watch_poll_s`` until ``stop`` is set or ``max_polls`` polls were made."""
        stop = stop or threading.Event()
        polls = 0
        while not stop.is_set() and (max_polls is None or polls < max_polls):
            self.poll_once()
            polls += 1
            stop.wait(self.ctx.service.watch_poll_s)
