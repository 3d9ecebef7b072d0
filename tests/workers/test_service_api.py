"""API refusals against a real uvicorn: authentication, scopes, path confinement, upload limit,
JSON errors with stable codes, health."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = [pytest.mark.integration]


@pytest.fixture
def api(service: Any, api_url: str) -> Iterator[tuple[Any, httpx.Client]]:
    """A running API (no worker needed for refusals) and a client without credentials."""
    with httpx.Client(base_url=api_url, timeout=30) as client:
        yield service, client


def _code(r: httpx.Response) -> str:
    code: str = r.json()["error"]["code"]
    return code


def test_tokens_and_scopes(api: tuple[Any, httpx.Client]) -> None:
    svc, client = api
    assert client.get("/v1/jobs").status_code == 401
    assert _code(client.get("/v1/jobs")) == "unauthorized"
    wrong = client.get("/v1/jobs", headers={"Authorization": "Bearer not-a-token"})
    assert wrong.status_code == 401
    basic = client.get("/v1/jobs", headers={"Authorization": "Basic abc"})
    assert basic.status_code == 401
    assert client.get("/v1/jobs", headers=svc.auth("reader")).status_code == 200
    denied = client.post("/v1/jobs", json={"slide_path": "x.svs"}, headers=svc.auth("reader"))
    assert denied.status_code == 403 and _code(denied) == "forbidden"
    cancel = client.delete("/v1/jobs/abc", headers=svc.auth("reader"))
    assert cancel.status_code == 403
    admin = client.get("/v1/jobs/nope", headers=svc.auth("admin"))
    assert admin.status_code == 404 and _code(admin) == "job_not_found"
    # the token file is re-read: a token removed from it stops working without a restart
    svc.ctx.service.resolved_token_file.write_text("[]")
    assert client.get("/v1/jobs", headers=svc.auth("reader")).status_code == 401


def test_paths_are_confined_to_the_slide_roots(api: tuple[Any, httpx.Client]) -> None:
    svc, client = api
    outside = svc.root / "secret.svs"
    outside.write_bytes((svc.fixtures / "small.svs").read_bytes())
    (svc.slides / "escape.svs").symlink_to(outside)
    (svc.slides / "sub").mkdir()
    (svc.slides / "sub" / "up").symlink_to(svc.root)
    headers = svc.auth("submitter")
    for bad in (
        "../secret.svs",
        "sub/../../secret.svs",
        str(outside),
        "/etc/passwd",
        "escape.svs",
        "sub/up/secret.svs",
    ):
        r = client.post("/v1/jobs", json={"slide_path": bad}, headers=headers)
        assert r.status_code == 400, (bad, r.text)
        assert _code(r) == "path_not_allowed"
        assert r.json()["error"]["reason"]
    missing = client.post("/v1/jobs", json={"slide_path": "nothing.svs"}, headers=headers)
    assert missing.status_code == 400 and _code(missing) == "slide_not_found"
    batch = client.post("/v1/batches", json={"root": "..", "glob": "*.svs"}, headers=headers)
    assert batch.status_code == 400 and _code(batch) == "path_not_allowed"
    glob = client.post("/v1/batches", json={"root": ".", "glob": "../*.svs"}, headers=headers)
    assert glob.status_code == 400 and _code(glob) == "path_not_allowed"
    assert svc.ctx.store.counts()["queued"] == 0


def test_uploads_are_limited_and_errors_are_json(api: tuple[Any, httpx.Client]) -> None:
    svc, client = api
    headers = {**svc.auth("submitter"), "Content-Type": "application/octet-stream"}
    limit = svc.ctx.service.max_upload_bytes
    big = client.post("/v1/jobs?filename=big.svs", content=b"\0" * (limit + 1), headers=headers)
    assert big.status_code == 413 and _code(big) == "upload_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is enforced while streaming
        for _ in range(limit // 65536 + 2):
            yield b"\0" * 65536

    streamed = client.post("/v1/jobs?filename=big.svs", content=chunks(), headers=headers)
    assert streamed.status_code == 413
    upload_dir = svc.ctx.service.resolved_upload_dir
    assert not upload_dir.exists() or not any(upload_dir.rglob("*.svs*"))
    sneaky = client.post("/v1/jobs?filename=../x.svs", content=b"abc", headers=headers)
    assert sneaky.status_code == 400 and _code(sneaky) == "path_not_allowed"
    small = (svc.fixtures / "small.svs").read_bytes()
    ok = client.post("/v1/jobs?filename=up.svs", content=small, headers=headers)
    assert ok.status_code == 201, ok.text
    assert ok.json()["job"]["source"] == "upload"
    assert Path(ok.json()["job"]["slide_path"]).read_bytes() == small
    same = client.post("/v1/jobs?filename=again.svs", content=small, headers=headers)
    assert same.status_code == 200 and same.json()["job"]["id"] == ok.json()["job"]["id"]
    assert len(list(upload_dir.rglob("*.svs"))) == 1  # the duplicate upload was not kept
    bad_json = client.post("/v1/jobs", json={"slide": "x"}, headers=svc.auth("submitter"))
    assert bad_json.status_code == 422 and _code(bad_json) == "invalid_request"
    assert _code(client.get("/v1/nowhere")) == "not_found"
    bad_state = client.get("/v1/jobs", params={"state": "exploded"}, headers=svc.auth("reader"))
    assert bad_state.status_code == 400 and _code(bad_state) == "job_error"
    health = client.get("/healthz").json()
    broker = health.pop("broker")
    assert health == {"status": "ok", "redis": "ok", "database": "ok", "deployment": "atc-wsi"}
    assert broker["key_prefix"] == "atc-wsi:" and broker["url"].startswith("redis://")


def test_cancel_and_batches(api: tuple[Any, httpx.Client]) -> None:
    svc, client = api
    for i in range(3):
        svc.add_slide(svc.fixtures / "small.svs", f"b/s{i}.svs")
    headers = svc.auth("submitter")
    job = client.post("/v1/jobs", json={"slide_path": "b/s0.svs"}, headers=headers).json()["job"]
    cancelled = client.delete(f"/v1/jobs/{job['id']}", headers=headers)
    assert cancelled.status_code == 202 and cancelled.json()["state"] == "cancelled"
    again = client.delete(f"/v1/jobs/{job['id']}", headers=headers)
    assert again.status_code == 409 and _code(again) == "job_state"
    report = client.get(f"/v1/jobs/{job['id']}/report", headers=headers)
    assert report.status_code == 409
    wrong = client.post(
        "/v1/batches",
        json={"root": "b", "glob": "*.svs", "pipeline_version": "0.0.0-x"},
        headers=headers,
    )
    assert wrong.status_code == 409 and _code(wrong) == "pipeline_version_mismatch"
    svc.start_worker()
    batch = client.post("/v1/batches", json={"root": "b", "glob": "*.svs"}, headers=headers)
    assert batch.status_code == 202, batch.text
    batch_id = batch.json()["id"]

    def finished() -> dict[str, Any] | None:
        body: dict[str, Any] = client.get(f"/v1/batches/{batch_id}", headers=headers).json()
        counts = body["counts"]
        return body if body["expanded"] and counts["succeeded"] == 3 else None

    body = svc.wait_for(finished, 60, "the batch to finish", 0.25)
    assert body["total"] == 3 and body["counts"]["items"] == 3


def test_healthz_reports_an_unreachable_redis(service: Any) -> None:
    from fastapi.testclient import TestClient

    from workers.api import create_api
    from workers.jobs import build_context
    from workers.settings import load_settings

    env = {**service.env, "ATC_BROKER_URL": "redis://127.0.0.1:1/0"}  # nothing listens there
    ctx = build_context(load_settings(environ=env))
    with TestClient(create_api(ctx, send=lambda _: None)) as client:
        r = client.get("/healthz")
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "unavailable" and body["database"] == "ok"
    assert body["redis"].startswith("error")
