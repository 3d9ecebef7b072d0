"""The watch folder: slow copies, restarts, MRXS companions, DICOM folders, reason files."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from workers.store import Job
from workers.watch import FAILED_SUFFIX, Watcher

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FAST = {"watch_poll_s": 0.1, "watch_stable_polls": 8, "watch_open_retries": 2}


def _jobs_for(svc: Any, path: Path) -> list[Job]:
    return [j for j in svc.ctx.store.list_jobs(limit=1000) if j.slide_path == str(path)]


def test_slow_chunked_copy_is_submitted_once_after_complete(service_factory: Any) -> None:
    svc = service_factory(**FAST)
    inbox = svc.slides / "scanner"
    inbox.mkdir()
    src = (svc.shared / "CMU-1-Small-Region.svs").read_bytes()
    svc.start_worker()
    watcher = Watcher(svc.ctx, inbox, svc.send)
    stop = threading.Event()
    thread = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
    thread.start()
    dest = inbox / "slow.svs"
    step = len(src) // 8 + 1
    with open(dest, "wb") as fh:
        for start in range(0, len(src), step):
            fh.write(src[start : start + step])
            fh.flush()
            assert _jobs_for(svc, dest) == [], "submitted before the copy was complete"
            time.sleep(0.3)
    copied_at = time.time()
    jobs = svc.wait_for(lambda: _jobs_for(svc, dest), 30, "the watcher to submit the slide")
    time.sleep(1.0)  # more polls: still one job
    stop.set()
    thread.join(10)
    jobs = _jobs_for(svc, dest)
    assert len(jobs) == 1 and jobs[0].source == "watch"
    assert jobs[0].created_at >= copied_at
    assert svc.wait_terminal([jobs[0].id], 60)[0].state == "succeeded"
    # a restarted watcher (state from disk) submits nothing again, even with force-like reuse off
    again = Watcher(svc.ctx, inbox, svc.send)
    for _ in range(8):
        assert again.poll_once() == []
    assert len(svc.ctx.store.list_jobs(limit=1000)) == 1
    assert again.entries["slow.svs"].status == "done"


def test_failures_get_a_reason_file_and_stay_in_place(service_factory: Any) -> None:
    svc = service_factory(**FAST)
    inbox = svc.slides / "in"
    inbox.mkdir()
    corrupt = svc.add_slide(svc.fixtures / "unreadable.svs", "in/corrupt.svs")
    broken = svc.add_slide(svc.fixtures / "unopenable.tiff", "in/broken.tiff")
    dicom = svc.add_slide(svc.shared / "dicom" / "cmu-1-small-region", "in/dicom-slide")
    svc.start_worker()
    watcher = Watcher(svc.ctx, inbox, svc.send)
    svc.wait_for(
        lambda: (
            watcher.poll_once() is not None
            and all(e.status in ("done", "failed") for e in watcher.entries.values())
            and len(watcher.entries) == 3
        ),
        60,
        "every slide handled",
        0.1,
    )
    assert watcher.entries["corrupt.svs"].status == "failed"
    assert "tile_read_error" in (watcher.entries["corrupt.svs"].reason or "")
    assert watcher.entries["broken.tiff"].status == "failed"
    assert watcher.entries["dicom-slide"].status == "done"  # the folder is one slide
    assert len(svc.ctx.store.list_jobs(limit=100)) == 2  # corrupt + dicom; broken never opened
    for slide in (corrupt, broken):
        assert slide.exists()
        note = slide.with_name(slide.name + FAILED_SUFFIX).read_text()
        assert str(slide) in note and "reason:" in note
    assert not (dicom.parent / (dicom.name + FAILED_SUFFIX)).exists()


def test_mrxs_waits_for_its_companion_folder(service: Any) -> None:
    inbox = service.slides / "mrxs"
    inbox.mkdir()
    (inbox / "case.mrxs").write_bytes(b"not really a slide")
    watcher = Watcher(service.ctx, inbox, service.send)
    for _ in range(6):
        watcher.poll_once()
    assert watcher.entries["case.mrxs"].status == "pending"
    assert watcher.entries["case.mrxs"].open_failures == 0  # never tried: incomplete
    folder = inbox / "case"
    folder.mkdir()
    (folder / "Slidedat.ini").write_text("[DATAFILE]\nFILE_COUNT=1\nFILE_0=Data0000.dat\n")
    for _ in range(6):
        watcher.poll_once()
    assert watcher.entries["case.mrxs"].open_failures == 0  # data file still missing
    (folder / "Data0000.dat").write_bytes(b"\0" * 100)
    for _ in range(12):
        watcher.poll_once()
    entry = watcher.entries["case.mrxs"]
    assert entry.status == "failed" and entry.open_failures >= 1  # complete, but not a slide
    assert (inbox / ("case.mrxs" + FAILED_SUFFIX)).exists()
    assert "case" not in watcher.entries  # the companion folder is not a slide of its own
