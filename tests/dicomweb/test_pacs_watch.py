"""Discovery against a real Orthanc: a half-stored series waits, a complete one is submitted once
(across polls, a restarted watcher, the API path), a non-slide series is recorded, 401 is typed;
and the series cache stays within its size."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pydicom
import pytest

from tests.dicomweb.conftest import write_instance
from tests.orthanc_server import Orthanc, start_orthanc
from workers.dicomweb import DicomWebClient
from workers.errors import PacsAuthError, PacsUnreachableError
from workers.jobs import ServiceContext
from workers.pacs import PacsWatcher, poll_archives, state_file, submit_series
from workers.pacs_cache import PACS_SOURCE, SeriesRef, ensure_series, evict, series_ref
from workers.tasks import run_job

pytestmark = pytest.mark.integration


def _watcher(ctx: ServiceContext, sent: list[str]) -> PacsWatcher:
    return PacsWatcher(ctx, ctx.settings.pacs.archives[0], sent.append)


def test_half_stored_series_waits_then_is_submitted_once(
    orthanc: Orthanc, cmu1_files: list[Path], make_ctx: Callable[..., ServiceContext]
) -> None:
    ctx = make_ctx(orthanc.dicomweb)
    sent: list[str] = []
    watcher = _watcher(ctx, sent)
    arrivals = [cmu1_files[:5], cmu1_files[5:9], cmu1_files[9:]]
    for batch in arrivals:  # the scanner is still storing: the count changes between polls
        orthanc.upload(batch)
        assert watcher.poll_once() == []
    assert sent == [] and sum(ctx.store.counts().values()) == 0
    submitted = watcher.poll_once()  # unchanged over two polls: complete
    assert len(submitted) == 1 and sent == submitted
    for _ in range(2):
        assert watcher.poll_once() == []
    again = _watcher(ctx, sent)  # a restarted watcher reads its state
    assert again.poll_once() == [] and len(sent) == 1
    job = ctx.store.get_job(sent[0])
    assert job.source == PACS_SOURCE and job.fingerprint.startswith("dicom-series:")
    ref = series_ref(ctx, Path(job.slide_path))
    sub = submit_series(ctx, ref.series_uid, sent.append)  # the API / CLI path: same key
    assert not sub.created and sub.job.id == job.id and len(sent) == 1
    state = json.loads(state_file(ctx, "orthanc").read_text())
    entry = state["series"][ref.series_uid]
    assert entry["status"] == "submitted" and entry["instances"] == len(cmu1_files)
    folder = ensure_series(ctx, ref)  # what the worker does before analysing
    assert sorted(p.name for p in folder.glob("*.dcm")) != [] and folder == Path(job.slide_path)


def test_non_slide_series_is_recorded_and_never_submitted(
    orthanc: Orthanc, make_ctx: Callable[..., ServiceContext], tmp_path: Path
) -> None:
    orthanc.upload([write_instance(tmp_path / "sc.dcm", modality="SM")])
    ctx = make_ctx(orthanc.dicomweb)
    sent: list[str] = []
    watcher = _watcher(ctx, sent)
    for _ in range(4):
        watcher.poll_once()
    assert sent == []
    (entry,) = json.loads(state_file(ctx, "orthanc").read_text())["series"].values()
    assert entry["status"] == "failed" and entry["reason"].startswith("pacs_not_a_slide")


def test_wrong_credentials_stop_the_poll_with_a_typed_error(
    orthanc: Orthanc, make_ctx: Callable[..., ServiceContext]
) -> None:
    ctx = make_ctx(orthanc.dicomweb, password="not-the-password")
    with pytest.raises(PacsAuthError) as err:
        _watcher(ctx, []).poll_once()
    assert err.value.code == "pacs_unauthorized" and "password_env" in err.value.message


def test_cache_evicts_least_recently_used_series(
    orthanc: Orthanc, cmu1_files: list[Path], make_ctx: Callable[..., ServiceContext]
) -> None:
    orthanc.upload(cmu1_files)
    ctx = make_ctx(orthanc.dicomweb)
    sub = submit_series(ctx, _only_series(ctx), [].append)
    ref = series_ref(ctx, Path(sub.job.slide_path))
    t0 = time.monotonic()
    folder = ensure_series(ctx, ref)
    retrieve_s = time.monotonic() - t0
    size = sum(f.stat().st_size for f in folder.glob("*.dcm"))
    assert ensure_series(ctx, ref) == folder  # a hit: nothing retrieved
    old = folder.parent / "1.2.3.old"  # an older cached series, used long ago
    old.mkdir()
    (old / "a.dcm").write_bytes(b"x" * 1000)
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    assert evict(folder.parents[2], max_bytes=size + 10, keep=folder) == [old]
    assert folder.is_dir() and not old.exists()
    assert evict(folder.parents[2], max_bytes=1, keep=folder) == []  # never the one in use
    assert retrieve_s < 5.0
    assert SeriesRef(ref.archive, ref.study_uid, ref.series_uid) == ref


def _only_series(ctx: ServiceContext) -> str:
    with DicomWebClient(ctx.settings.pacs.archives[0], ctx.settings.pacs) as client:
        (info,) = client.search_series({"Modality": "SM"})
    return info.series_uid


def test_a_job_failed_by_an_outage_is_submitted_again(
    orthanc: Orthanc, cmu1_files: list[Path], make_ctx: Callable[..., ServiceContext]
) -> None:
    """The archive goes down before the worker retrieves the series (job: pacs_unreachable);
    once it is back, the next poll submits the series again, once."""
    orthanc.upload(cmu1_files)
    ctx = make_ctx(orthanc.dicomweb)
    sent: list[str] = []
    watcher = _watcher(ctx, sent)
    watcher.poll_once()
    (first,) = watcher.poll_once()
    orthanc.stop()
    run_job(ctx, first)  # the worker: retrieval fails after the retries
    assert ctx.store.get_job(first).reason_code == "pacs_unreachable"
    with pytest.raises(PacsUnreachableError):
        watcher.poll_once()  # the poll itself fails too; the state is kept
    back = start_orthanc(orthanc.folder, http_port=orthanc.http_port)  # same storage
    try:
        assert watcher.poll_once() == []  # sees the failure, schedules a resubmission
        (second,) = watcher.poll_once()
        assert second != first and watcher.poll_once() == []
        uid = next(iter(watcher.series))
        assert watcher.series[uid].resubmits == 1 and sent == [first, second]
    finally:
        back.stop()


def test_beat_task_polls_every_archive_and_reports_failures(
    orthanc: Orthanc, cmu1_files: list[Path], make_ctx: Callable[..., ServiceContext]
) -> None:
    """``poll_archives`` (what the beat task ``atc.poll_pacs`` runs): one archive down does not
    stop the others."""
    orthanc.upload(cmu1_files)
    ctx = make_ctx(orthanc.dicomweb)
    good = ctx.settings.pacs.archives[0]
    down = good.model_copy(update={"name": "down", "base_url": "http://127.0.0.1:9/dicom-web"})
    pacs = ctx.settings.pacs.model_copy(update={"archives": (down, good), "retries": 0})
    both = replace(ctx, settings=ctx.settings.model_copy(update={"pacs": pacs}))
    sent: list[str] = []
    first = poll_archives(both, sent.append)  # first sight of the series
    assert first["orthanc"] == [] and str(first["down"]).startswith("pacs_unreachable")
    third = poll_archives(both, sent.append)  # stable: submitted
    assert str(third["down"]).startswith("pacs_unreachable") and third["orthanc"] == sent
    assert len(sent) == 1


def test_date_cursor_advances_and_narrows_the_query(
    orthanc: Orthanc,
    cmu1_files: list[Path],
    make_ctx: Callable[..., ServiceContext],
    tmp_path: Path,
) -> None:
    """With ``date_attribute: StudyDate`` the cursor is the newest StudyDate seen; later
    queries start ``lookback_days`` before it, so an older study is not listed."""
    dated = []
    for f in cmu1_files:  # the same slide as a new study dated 2026-12-01
        ds = pydicom.dcmread(f)
        ds.StudyDate = "20261201"
        dated.append(tmp_path / f"dated-{f.name}")
        ds.save_as(dated[-1])
    old = write_instance(tmp_path / "old.dcm", modality="SM")
    old_ds = pydicom.dcmread(old)
    old_ds.StudyDate = "20250101"
    old_ds.save_as(old)
    orthanc.upload([*dated, old])
    ctx = make_ctx(orthanc.dicomweb, archive={"date_attribute": "StudyDate", "lookback_days": 2})
    watcher = _watcher(ctx, [])
    assert watcher._match() == {"Modality": "SM"}  # no cursor yet: everything
    watcher.poll_once()
    assert watcher.cursor == "20261201" and len(watcher.series) == 2
    assert watcher._match()["StudyDate"] == "20261129-"
    again = _watcher(ctx, [])  # the cursor persists
    assert again.cursor == "20261201"
    with DicomWebClient(ctx.settings.pacs.archives[0], ctx.settings.pacs) as client:
        listed = client.search_series(again._match())
    assert [s.date for s in listed] == ["20261201"]  # the 2025 study is left out
