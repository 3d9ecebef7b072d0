"""Crash-safe resume: kill -9 a worker mid-slide, start another, the job finishes once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from workers.jobs import submit_slide

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _log_lines(work_dir: Path) -> list[str]:
    log = work_dir / "chunks.log"
    return log.read_text().splitlines() if log.exists() else []


def test_kill9_mid_slide_resumes_from_checkpoint(service_factory: Any) -> None:
    # One tile per chunk and per batch on the real CMU slide: every analysis checkpoints
    # dozens of chunks, several seconds of work in all.
    env = {
        "ATC__ENGINE__CHUNK_TILES": "1",
        "ATC__ENGINE__BATCH_SIZE": "1",
        "ATC__ENGINE__NUM_WORKERS": "0",
    }
    svc = service_factory(extra_env=env, keep_work_dir=True)
    slide = svc.add_slide(svc.shared / "CMU-1-Small-Region.svs", "big.svs")
    first = svc.start_worker(name="doomed")
    job = submit_slide(svc.ctx, slide, svc.send).job
    work = Path(job.out_dir) / ".work"
    svc.wait_for(lambda: len(_log_lines(work)) >= 4, 120, "four chunks before the kill", 0.05)
    first.kill9()
    before = _log_lines(work)
    assert svc.ctx.store.get_job(job.id).state == "running"  # nobody recorded anything
    assert not (Path(job.out_dir) / "report.json").exists()

    svc.start_worker(name="rescuer")
    done = svc.wait_terminal([job.id], 180)[0]
    assert done.state == "succeeded", done.reason
    assert done.attempts == 2
    lines = _log_lines(work)
    n_chunks = len(set(lines))
    assert n_chunks >= 10, f"slide too small for this test: {n_chunks} chunks"
    repeats = [k for k, n in Counter(lines).items() if n > 1]
    assert len(repeats) <= 1, f"chunks computed twice: {repeats}"
    assert len(lines) <= n_chunks + 1
    assert len(lines) - len(before) < n_chunks  # resumed, not restarted
    # one result set: one job for the key, one report
    assert svc.ctx.store.counts()["succeeded"] == 1
    report = Path(done.out_dir) / "report.json"
    assert report.is_file() and not list(Path(done.out_dir).glob(".*.tmp"))


def test_soft_time_limit_fails_the_job_and_the_worker_carries_on(service_factory: Any) -> None:
    env = {"ATC__ENGINE__BATCH_SIZE": "1", "ATC__ENGINE__NUM_WORKERS": "0"}
    limits = {"soft_time_limit_s": 4, "hard_time_limit_s": 30, "visibility_timeout_s": 60}
    svc = service_factory(extra_env=env, **limits)
    slow = svc.add_slide(svc.shared / "CMU-1-Small-Region.svs", "slow.svs")
    quick = svc.add_slide(svc.fixtures / "small.svs", "quick.svs")
    worker = svc.start_worker()
    # the quick slide goes first (it also warms the models), then the slow one times out
    ids = [submit_slide(svc.ctx, p, svc.send).job.id for p in (quick, slow)]
    fine, timed_out = svc.wait_terminal(ids, 90)
    assert timed_out.state == "failed" and timed_out.reason_code == "time_limit"
    assert "4 s" in (timed_out.reason or "")
    assert fine.state == "succeeded" and worker.popen.poll() is None
