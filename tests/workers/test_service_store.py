"""The job store on SQLite and PostgreSQL: leases, requeueing, reuse, counts; and ``run_job``."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from workers.errors import JobNotFoundError
from workers.store import Batch, BatchItem, Job, JobStore, new_id
from workers.tasks import run_job


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    if request.param == "sqlite":
        st = JobStore(f"sqlite:///{tmp_path / 'jobs.sqlite'}")
    else:
        url = request.getfixturevalue("pg_url")
        st = JobStore(url, request.getfixturevalue("pg_schema"))
    st.create_all()
    st.create_all()  # idempotent
    yield st
    st.dispose()


def _new_job(key: str = "k", state: str = "queued", force: bool = False) -> Job:
    job_id = new_id()
    return Job(
        id=job_id,
        state=state,
        slide_path="/s.svs",
        fingerprint="fp",
        pipeline_version="v",
        config_hash="c",
        idem_key=key,
        force=force,
        out_dir=f"/out/{job_id}",
    )


def _job(store: JobStore, key: str = "k", state: str = "queued") -> str:
    job = _new_job(key, state)
    store.add(job)
    return job.id


def test_lease_claim_heartbeat_and_takeover(store: JobStore) -> None:
    job_id = _job(store)
    a = store.claim(job_id, "A", "tokA", lease_s=0.3)
    assert a is not None and a.state == "running" and a.attempts == 1
    assert store.claim(job_id, "B", "tokB", lease_s=0.3) is None  # A holds a fresh lease
    assert store.heartbeat(job_id, "tokA", stage="qc", tiles_done=5, tiles_total=10)
    time.sleep(0.45)
    b = store.claim(job_id, "B", "tokB", lease_s=0.3)  # A went silent: B takes over
    assert b is not None and b.attempts == 2 and b.worker == "B" and b.tiles_done == 5
    assert not store.heartbeat(job_id, "tokA")  # A learns it lost the lease
    assert not store.finish(job_id, "tokA", "succeeded")
    assert store.finish(job_id, "tokB", "succeeded", run_s=1.5, tiles_total=10)
    assert store.claim(job_id, "C", "tokC", lease_s=0.0) is None  # terminal: never again
    assert store.get_job(job_id).state == "succeeded"
    assert store.succeeded_totals() == (1, 1.5, 10)
    with pytest.raises(JobNotFoundError):
        store.get_job("missing")


def test_requeue_stale_unsent_and_reuse(store: JobStore) -> None:
    stale = _job(store, "k1")
    store.claim(stale, "A", "t", lease_s=10)
    store.update_job(stale, heartbeat_at=time.time() - 100)
    assert store.requeue_stale(lease_s=10) == [stale]
    assert store.requeue_stale(lease_s=10) == []  # only one caller wins
    assert store.get_job(stale).state == "queued"
    doomed = _job(store, "k9")
    store.claim(doomed, "A", "t2", lease_s=10)
    store.update_job(doomed, heartbeat_at=time.time() - 100, cancel_requested=True)
    assert store.requeue_stale(lease_s=10) == []  # cancel asked while its worker died
    assert store.get_job(doomed).state == "cancelled"
    unsent = _job(store, "k2")
    store.update_job(unsent, created_at=time.time() - 100)
    assert store.unsent_queued(10) == [unsent]  # the requeued one is sent by recover()
    store.update_job(unsent, sent_at=time.time() - 50)
    assert store.unsent_queued(10) == []
    assert store.unsent_queued(10, resend_after_s=40) == [unsent]  # the broker lost it?
    failed = _job(store, "k3", state="failed")
    assert store.find_reusable("k3") is None
    ok = _job(store, "k3", state="succeeded")
    reused = store.find_reusable("k3")
    assert reused is not None and reused.id == ok and failed != ok
    counts = store.counts()
    assert counts == {"queued": 2, "running": 0, "succeeded": 1, "failed": 1, "cancelled": 1}


def test_concurrent_claims_are_exclusive(store: JobStore) -> None:
    ids = [_job(store, f"k{i}") for i in range(40)]
    won: list[tuple[str, str]] = []
    lock = threading.Lock()

    def claimer(name: str) -> None:
        for job_id in ids:
            if store.claim(job_id, name, new_id(), lease_s=60) is not None:
                with lock:
                    won.append((job_id, name))

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(j for j, _ in won) == sorted(ids)  # every job claimed exactly once


def test_batch_counts(store: JobStore) -> None:
    batch = Batch(root="/r", pattern="*.svs", pipeline_version="v", config_hash="c")
    store.add(batch)
    done, queued = _job(store, "a", "succeeded"), _job(store, "b")
    store.add(BatchItem(batch_id=batch.id, slide_path="/r/a.svs", job_id=done, skipped=True))
    store.add(BatchItem(batch_id=batch.id, slide_path="/r/b.svs", job_id=queued))
    store.add(BatchItem(batch_id=batch.id, slide_path="/r/c.svs", error="bad"))
    counts = store.batch_counts(batch.id)
    assert counts["succeeded"] == 1 and counts["queued"] == 1
    assert (counts["skipped"], counts["errors"], counts["items"]) == (1, 1, 3)
    found = store.find_open_batch("/r", "*.svs", False, "c")
    assert found is not None and found.id == batch.id


def test_run_job_cancel_and_worker_lost_limit(service_factory: Any) -> None:
    env = {"ATC__ENGINE__BATCH_SIZE": "1", "ATC__ENGINE__NUM_WORKERS": "0"}
    svc = service_factory(extra_env=env, max_attempts=2)
    slide = svc.add_slide(svc.shared / "CMU-1-Small-Region.svs", "c.svs")
    from workers.jobs import cancel_job, submit_slide

    sent: list[str] = []
    job = submit_slide(svc.ctx, slide, sent.append).job
    assert sent == [job.id]

    def cancel_soon() -> None:
        svc.wait_for(lambda: svc.ctx.store.get_job(job.id).tiles_done > 0, 30, "progress", 0.05)
        cancel_job(svc.ctx, job.id)

    t = threading.Thread(target=cancel_soon)
    t.start()
    assert run_job(svc.ctx, job.id) == "cancelled"
    t.join()
    ended = svc.ctx.store.get_job(job.id)
    assert ended.state == "cancelled"
    assert not (Path(ended.out_dir) / "report.json").exists()
    # a job whose runs keep dying is failed once it used up max_attempts
    doomed = submit_slide(svc.ctx, slide, sent.append, force=True).job
    for _ in range(2):
        svc.ctx.store.claim(doomed.id, "dead", new_id(), lease_s=0)
        svc.ctx.store.update_job(doomed.id, heartbeat_at=0.0)
    assert run_job(svc.ctx, doomed.id) == "failed"
    assert svc.ctx.store.get_job(doomed.id).reason_code == "worker_lost"
    assert run_job(svc.ctx, doomed.id) == "skipped"


def test_one_active_job_per_key(store: JobStore) -> None:
    """Two non-forced submissions that both found nothing to reuse cannot both create a job."""

    def job(state: str = "queued", force: bool = False) -> Job:
        return _new_job("same", state, force)

    first = job()
    assert store.add_job_once(first)
    assert not store.add_job_once(job())  # the loser of the race
    assert store.add_job_once(job(force=True))  # a forced rerun is always a new job
    store.update_job(first.id, state="failed")
    assert store.add_job_once(job())  # once the first ended, a new one may start
    assert store.add_job_once(job(state="succeeded"))
    counts = store.counts()
    assert counts == {"queued": 2, "running": 0, "succeeded": 1, "failed": 1, "cancelled": 0}
    store.create_all()  # the index is created only once


def test_simultaneous_first_submissions_share_one_job(service_factory: Any) -> None:
    """Both callers pass the reuse check before either inserts: one job, sent once."""
    from workers.jobs import submit_slide

    svc = service_factory()
    ctx = svc.ctx
    slide = svc.add_slide(svc.fixtures / "small.svs", "race.svs")
    real_find = ctx.store.find_reusable
    calls = {"n": 0}

    def racing_find(key: str) -> Job | None:
        calls["n"] += 1
        return None if calls["n"] <= 2 else real_find(key)  # both first checks see nothing

    ctx.store.find_reusable = racing_find  # type: ignore[method-assign]
    sent: list[str] = []
    a = submit_slide(ctx, slide, sent.append)
    b = submit_slide(ctx, slide, sent.append)
    assert a.created and not b.created and a.job.id == b.job.id
    assert sent == [a.job.id]


def test_store_with_old_duplicates_still_opens(store: JobStore, caplog: Any) -> None:
    """A store that an old race left with two active jobs of one key opens with a warning."""
    from workers.store import ACTIVE_KEY_INDEX

    ACTIVE_KEY_INDEX.drop(store.engine)  # as in a store made before the index existed
    _job(store, "dup")
    _job(store, "dup")
    store.create_all()
    assert "unique index on active jobs not created" in caplog.text
    assert store.counts()["queued"] == 2
