"""Hostile and odd inputs against the running service (real redis-server, Celery worker, uvicorn):
cancel that cancels, the watchdog, the io process, namespaced Redis keys, refusals that are 4xx."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.hostile_files import write_repeated_tile_tiff
from workers.jobs import cancel_job, submit_slide
from workers.store import new_id

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _wait_stage(svc: Any, job_id: str, stage: str, min_done: int, timeout: float) -> None:
    def there() -> bool:
        job = svc.ctx.store.get_job(job_id)
        assert job.state in ("queued", "running"), (job.state, job.reason)
        return job.stage == stage and job.tiles_done >= min_done

    svc.wait_for(there, timeout, f"job {job_id} in stage {stage}", 0.1)


def test_delete_cancels_a_running_tissue_stage_and_the_worker_serves_the_next(
    service: Any, celery_worker: Any
) -> None:
    # one 40,000² level (51 KB on disk): the tissue mask decodes 400 chunks, ~80 s in all
    slow = write_repeated_tile_tiff(service.slides / "one-level.tif", 40_000, 40_000, tile=512)
    good = service.add_slide(service.fixtures / "small.svs", "good.svs")
    _, url = service.start_api()
    with httpx.Client(base_url=url, headers=service.auth("submitter"), timeout=30) as api:
        job_id = api.post("/v1/jobs", json={"slide_path": slow.name}).json()["job"]["id"]
        _wait_stage(service, job_id, "tissue", 2, 60)
        t0 = time.monotonic()
        assert api.delete(f"/v1/jobs/{job_id}").status_code == 202
        job = service.wait_terminal([job_id], 10)[0]
        took = time.monotonic() - t0
        assert job.state == "cancelled" and took <= 10, (job.state, took)
        assert job.tiles_done < job.tiles_total  # stopped mid-stage, not after it
        nxt = api.post("/v1/jobs", json={"slide_path": good.name}).json()["job"]["id"]
        done = service.wait_terminal([nxt], 60)[0]
        assert done.state == "succeeded" and done.worker == job.worker  # same pool process
        assert celery_worker.popen.poll() is None
        health = httpx.get(f"{url}/healthz").json()
    prefix = service.ctx.service.key_prefix
    assert health["broker"]["key_prefix"] == prefix and health["deployment"]
    client = redis.Redis.from_url(service.env["ATC_BROKER_URL"])
    keys = [k.decode() for k in client.keys("*")]
    mine = [k for k in keys if service.ctx.service.analysis_queue in k]
    assert mine and all(k.startswith(prefix) for k in mine), mine


_STUCK_RUN = textwrap.dedent(
    """
    import sys, time
    from workers.jobs import get_context
    from workers.store import new_id
    from workers.tasks import RunMonitor
    ctx = get_context()
    job_id, token = sys.argv[1], new_id()
    assert ctx.store.claim(job_id, "stuck", token, 60) is not None
    monitor = RunMonitor(ctx.store, job_id, token, 0.1, grace_s=0.5)
    with monitor:
        monitor.progress("pattern", 3, 10)
        print("running", flush=True)
        time.sleep(60)  # a stage stuck in one long call that never polls cancellation
    sys.exit(3)
    """
)


def test_watchdog_ends_a_run_that_ignores_cancel(service: Any) -> None:
    good = service.add_slide(service.fixtures / "small.svs", "good.svs")
    job = submit_slide(service.ctx, good, lambda _: None).job
    env = {**os.environ, **service.env, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(
        [sys.executable, "-c", _STUCK_RUN, job.id],
        env=env,
        cwd=service.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"running"
    t0 = time.monotonic()
    cancel_job(service.ctx, job.id)
    assert proc.wait(10) == 75  # ended by the watchdog, not by the sleep
    ended = service.ctx.store.get_job(job.id)
    assert time.monotonic() - t0 <= 10
    assert ended.state == "cancelled" and "worker process was ended" in (ended.reason or "")
    assert "pattern" in (ended.reason or "")


def test_worker_command_runs_the_io_queue_in_its_own_process(service: Any) -> None:
    log = service.root / "cli-worker.log"
    cmd = [
        sys.executable,
        "-c",
        "from workers.cli import main; main()",
        "worker",
        "--loglevel",
        "info",
    ]
    cmd += ["--name", f"cli-{new_id()[:6]}@%h"]
    proc = service._spawn(cmd, log)
    service.wait_for(
        lambda: proc.output().count("ready.") >= 2 or proc.popen.poll() is not None,
        90,
        "two worker nodes",
    )
    assert proc.popen.poll() is None, proc.output()[-3000:]
    queues = service.celery.control.inspect(timeout=5).active_queues() or {}
    by_node = {node: sorted(q["name"] for q in qs) for node, qs in queues.items()}
    svc = service.ctx.service
    assert sorted(by_node.values()) == [[svc.analysis_queue], [svc.io_queue]], by_node
    assert any(node.startswith("io-") for node in by_node)
    proc.stop()


def test_refusals_are_typed_and_leave_nothing_behind(service: Any, api_url: str) -> None:
    headers = service.auth("submitter")
    long_name = "a" * 300 + ".svs"
    dicom = service.add_slide(service.shared / "dicom" / "cmu-1-small-region", "dicom-series")
    (service.slides / "not-a-slide").mkdir()
    (service.slides / "not-a-slide" / "notes.txt").write_text("x")
    with httpx.Client(base_url=api_url, timeout=30) as api:
        r = api.post("/v1/jobs", json={"slide_path": long_name}, headers=headers)
        assert r.status_code == 400 and r.json()["error"]["code"] == "path_not_allowed", r.text
        r = api.post(
            "/v1/jobs",
            params={"filename": long_name},
            content=b"x" * 100,
            headers={**headers, "Content-Type": "application/octet-stream"},
        )
        assert r.status_code == 400 and r.json()["error"]["code"] == "path_not_allowed", r.text
        uploads = service.ctx.service.resolved_upload_dir
        assert not uploads.exists() or not any(uploads.iterdir())  # no empty uploads/<id>/
        lower = {"Authorization": headers["Authorization"].replace("Bearer", "bearer")}
        assert api.get("/v1/jobs", headers=lower).status_code == 200
        bad = api.get("/v1/jobs", headers={"Authorization": "Bearer nope"})
        assert "atc-wsi tokens NAME" in bad.json()["error"]["message"]
        r = api.post("/v1/jobs", json={"slide_path": "not-a-slide"}, headers=headers)
        assert r.status_code == 400 and "DICOM" in r.json()["error"]["message"], r.text
        r = api.post("/v1/jobs", json={"slide_path": dicom.name}, headers=headers)
        assert r.status_code == 201, r.text
        assert r.json()["job"]["slide_path"] == str(dicom.resolve())


def test_first_send_after_the_context_logs_no_recursion_error(service: Any) -> None:
    # what `serve` and `watch` do: build the context, then send the first task
    code = (
        "import logging; logging.basicConfig(level=logging.WARNING)\n"
        "from workers.jobs import get_context\n"
        "ctx = get_context()\n"
        "from workers.celery_app import app\n"
        "app.send_task('atc.thumbnail', args=['x'], queue=ctx.service.io_queue)\n"
        "print(app.conf.broker_transport_options['global_keyprefix'])\n"
    )
    env = {**os.environ, **service.env, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "RecursionError" not in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert out.stdout.strip() == service.ctx.service.key_prefix
    client = redis.Redis.from_url(service.env["ATC_BROKER_URL"])
    assert client.llen(service.ctx.service.key_prefix + service.ctx.service.io_queue) == 1


def test_stale_failure_note_is_removed_when_the_slide_finally_succeeds(
    service_factory: Any,
) -> None:
    from workers.watch import FAILED_SUFFIX, Watcher

    svc = service_factory(watch_poll_s=0.1, watch_stable_polls=3, watch_open_retries=2)
    inbox = svc.slides / "in"
    inbox.mkdir()
    data = (svc.fixtures / "small.svs").read_bytes()
    slide = inbox / "stalled.svs"
    slide.write_bytes(data[:700])  # the copy stalls part-way: the slide does not open
    watcher = Watcher(svc.ctx, inbox, svc.send)
    note = slide.with_name(slide.name + FAILED_SUFFIX)
    svc.wait_for(lambda: watcher.poll_once() is not None and note.exists(), 30, "the note", 0.05)
    assert watcher.entries["stalled.svs"].status == "failed"
    slide.write_bytes(data)  # the copy completes
    svc.start_worker()
    svc.wait_for(
        lambda: watcher.poll_once() is not None and watcher.entries["stalled.svs"].status == "done",
        60,
        "the completed slide's job to succeed",
        0.1,
    )
    assert not note.exists()
