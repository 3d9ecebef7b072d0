"""End-to-end service tests: real redis-server, Celery worker subprocesses and uvicorn."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from workers.jobs import resolve_slide_path, submit_slide

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CMU = "CMU-1-Small-Region.svs"


def test_api_submission_succeeds_with_report_and_reuses_by_key(service_factory: Any) -> None:
    service = service_factory(thumbnail_px=256)
    service.add_slide(service.shared / CMU, "cmu.svs")
    service.start_worker()
    _, url = service.start_api()
    with httpx.Client(base_url=url, headers=service.auth("submitter"), timeout=30) as api:
        r = api.post("/v1/jobs", json={"slide_path": "cmu.svs"})
        assert r.status_code == 201, r.text
        job_id = r.json()["job"]["id"]
        job = service.wait_terminal([job_id], 60)[0]
        assert job.state == "succeeded", job.reason
        body = api.get(f"/v1/jobs/{job_id}").json()
        assert body["progress"]["done"] == body["progress"]["total"] > 0
        assert "report.json" in body["files"]
        thumb = Path(job.out_dir) / "thumbnail.jpg"  # written by the io queue afterwards
        service.wait_for(thumb.exists, 30, "the thumbnail")
        assert api.get(f"/v1/jobs/{job_id}/files/thumbnail.jpg").content[:2] == b"\xff\xd8"
        hidden = api.get(f"/v1/jobs/{job_id}/files/.work")
        assert hidden.status_code == 400
        report = api.get(f"/v1/jobs/{job_id}/report").json()
        assert report["slide"]["fingerprint"] == job.fingerprint
        stage_tiles = {a["tiles"] for a in report["qc"]["analyses"].values() if "tiles" in a}
        assert job.tiles_total in stage_tiles
        raw = api.get(f"/v1/jobs/{job_id}/files/report.json")
        assert raw.status_code == 200 and json.loads(raw.content) == report
        # same slide content under another name: same idempotency key, the job is reused
        service.add_slide(service.shared / CMU, "copy-of-cmu.svs")
        again = api.post("/v1/jobs", json={"slide_path": "copy-of-cmu.svs"})
        assert again.status_code == 200 and again.json()["job"]["id"] == job_id
        assert again.json()["created"] is False
        forced = api.post("/v1/jobs", json={"slide_path": "cmu.svs", "force": True})
        assert forced.status_code == 201 and forced.json()["job"]["id"] != job_id
        service.wait_terminal([forced.json()["job"]["id"]], 60)
        listed = api.get("/v1/jobs", params={"state": "succeeded"}).json()
        assert {j["id"] for j in listed["jobs"]} == {job_id, forced.json()["job"]["id"]}
        metrics = httpx.get(f"{url}/metrics").text
        assert 'atc_jobs{state="succeeded"} 2.0' in metrics
        assert "atc_tiles_per_second" in metrics and "atc_queue_length" in metrics


def test_corrupt_slide_fails_with_reason_and_worker_keeps_serving(
    service: Any, celery_worker: Any
) -> None:
    bad = service.add_slide(service.fixtures / "unreadable.svs", "corrupt.svs")
    unopenable = service.add_slide(service.fixtures / "unopenable.tiff", "broken.tiff")
    good = service.add_slide(service.fixtures / "small.svs", "good.svs")
    worker = celery_worker
    ids = [submit_slide(service.ctx, p, service.send).job.id for p in (bad, unopenable, good)]
    corrupt, broken, fine = service.wait_terminal(ids, 60)
    assert corrupt.state == "failed" and corrupt.reason_code == "tile_read_error"
    assert "corrupt" in (corrupt.reason or "")
    assert broken.state == "failed" and broken.reason_code == "unsupported_slide_error"
    assert "broken.tiff" in (broken.reason or "")
    assert fine.state == "succeeded"
    assert Path(fine.out_dir, "report.json").is_file()
    assert corrupt.worker == fine.worker  # the same worker process carried on
    assert worker.popen.poll() is None


def test_burst_of_200_jobs_all_end_once(service_factory: Any) -> None:
    # The burst tests the queue, not the models: one analysis keeps each job short.
    service = service_factory(extra_env={"ATC__ANALYSES": "[pattern]"})
    src = service.fixtures / "small.svs"
    paths = [service.add_slide(src, f"burst/s{i:03d}.svs") for i in range(200)]
    service.start_worker(concurrency=2)
    ids = [
        submit_slide(service.ctx, p, service.send, force=True, source="test").job.id for p in paths
    ]
    assert len(set(ids)) == 200
    jobs = service.wait_terminal(ids, 150)
    assert [j.state for j in jobs] == ["succeeded"] * 200
    assert all(j.attempts == 1 for j in jobs), "a job ran twice"
    assert {j.slide_path for j in jobs} == {str(p) for p in paths}
    assert all(Path(j.out_dir, "report.json").is_file() for j in jobs)
    assert service.ctx.store.counts()["succeeded"] == 200


def test_restart_of_api_and_worker_loses_nothing(service_factory: Any) -> None:
    service = service_factory(requeue_unsent_after_s=1.0)
    src = service.fixtures / "small.svs"
    names = [f"r{i}.svs" for i in range(12)]
    for name in names:
        service.add_slide(src, name)
    api_proc, url = service.start_api()
    submitted: list[str] = []
    with httpx.Client(base_url=url, headers=service.auth("submitter"), timeout=30) as api:
        for name in names[:6]:  # no worker yet: the tasks wait in Redis
            r = api.post("/v1/jobs", json={"slide_path": name, "force": True})
            submitted.append(r.json()["job"]["id"])
    api_proc.stop()
    worker = service.start_worker()
    api_proc, url = service.start_api()
    with httpx.Client(base_url=url, headers=service.auth("submitter"), timeout=30) as api:
        for name in names[6:]:
            r = api.post("/v1/jobs", json={"slide_path": name, "force": True})
            submitted.append(r.json()["job"]["id"])
        worker.stop()  # a graceful stop between tasks
        service.start_worker()
        # an API that died between recording a job and handing it to the broker
        orphan = service.add_slide(src, "orphan.svs")
        submitted.append(submit_slide(service.ctx, orphan, lambda _: None, force=True).job.id)
        jobs = service.wait_terminal(submitted, 90)
        assert [j.state for j in jobs] == ["succeeded"] * 13
        listed = api.get("/v1/jobs", params={"limit": 100}).json()
        assert {j["id"] for j in listed["jobs"]} == set(submitted)


def test_confinement_of_in_process_submissions(service: Any) -> None:
    outside = service.root / "outside.svs"
    outside.write_bytes(b"x")
    (service.slides / "link.svs").symlink_to(outside)
    from workers.errors import PathNotAllowedError, SlideMissingError

    for bad in ("../outside.svs", str(outside), "link.svs", "/etc/passwd"):
        with pytest.raises(PathNotAllowedError):
            resolve_slide_path(bad, service.ctx.service)
    with pytest.raises(SlideMissingError):
        resolve_slide_path("absent.svs", service.ctx.service)


def test_postgresql_store_end_to_end(service_factory: Any, pg_url: str, pg_schema: str) -> None:
    svc = service_factory(database_url=pg_url, database_schema=pg_schema)
    assert svc.ctx.store.url.startswith("postgresql")
    paths = [svc.add_slide(svc.fixtures / "small.svs", f"pg/s{i}.svs") for i in range(20)]
    paths.append(svc.add_slide(svc.fixtures / "unreadable.svs", "pg/bad.svs"))
    svc.start_worker(concurrency=2)
    ids = [submit_slide(svc.ctx, p, svc.send, force=True).job.id for p in paths]
    jobs = svc.wait_terminal(ids, 60)
    assert [j.state for j in jobs] == ["succeeded"] * 20 + ["failed"]
    assert all(j.attempts == 1 for j in jobs)
    assert svc.ctx.store.counts()["succeeded"] == 20


def test_two_workers_share_a_queue_without_duplicates(service_factory: Any) -> None:
    """Scale-out: two worker processes split one stream of jobs; no slide runs twice."""
    service = service_factory(extra_env={"ATC__ANALYSES": "[pattern]"})
    src = service.fixtures / "small.svs"
    paths = [service.add_slide(src, f"split/s{i:02d}.svs") for i in range(24)]
    service.start_worker(concurrency=1, name="left")
    service.start_worker(concurrency=1, name="right")
    ids = [submit_slide(service.ctx, p, service.send, force=True).job.id for p in paths]
    jobs = service.wait_terminal(ids, 120)
    assert [j.state for j in jobs] == ["succeeded"] * len(ids)
    assert all(j.attempts == 1 for j in jobs), "a slide was processed twice"
    by_worker = Counter(j.worker for j in jobs)
    assert len(by_worker) == 2, f"one worker took every job: {dict(by_worker)}"
