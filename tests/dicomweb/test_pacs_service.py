"""Submission by Series UID through the HTTP API, and ``atc-wsi watch-pacs``, against a real
Orthanc (jobs are collected, not analysed: the end-to-end test analyses)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
import typer
import yaml
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tests.dicomweb.conftest import PASSWORD_ENV, write_instance
from tests.orthanc_server import PASSWORD, USER, Orthanc
from workers import jobs as jobs_module
from workers.api.app import create_api
from workers.auth import create_token
from workers.cli_service import register
from workers.jobs import ServiceContext
from workers.pacs import state_file

pytestmark = pytest.mark.integration


def test_api_submits_a_series_once_and_refuses_non_slides(
    orthanc: Orthanc,
    cmu1_files: list[Path],
    make_ctx: Callable[..., ServiceContext],
    tmp_path: Path,
) -> None:
    ct = write_instance(tmp_path / "ct.dcm", modality="CT", sop_class="1.2.840.10008.5.1.4.1.1.2")
    orthanc.upload([*cmu1_files, ct])
    ctx = make_ctx(orthanc.dicomweb)
    token = create_token(ctx.service.resolved_token_file, "lab", ("read", "submit"))
    sent: list[str] = []
    api = TestClient(create_api(ctx, send=sent.append))
    auth = {"Authorization": f"Bearer {token}"}
    slide_uid = str(pydicom.dcmread(cmu1_files[0], stop_before_pixels=True).SeriesInstanceUID)

    first = api.post("/v1/jobs", json={"series_uid": slide_uid}, headers=auth)
    assert first.status_code == 201, first.text
    job = first.json()["job"]
    assert job["source"] == "pacs" and job["slide_path"].endswith(slide_uid)
    again = api.post("/v1/jobs", json={"series_uid": slide_uid, "archive": "orthanc"}, headers=auth)
    assert again.status_code == 200 and again.json()["job"]["id"] == job["id"]
    assert sent == [job["id"]]

    def error(body: dict[str, object]) -> tuple[int, str]:
        r = api.post("/v1/jobs", json=body, headers=auth)
        return r.status_code, r.json()["error"]["code"]

    ct_uid = str(pydicom.dcmread(ct).SeriesInstanceUID)
    assert error({"series_uid": ct_uid}) == (400, "pacs_not_a_slide")
    assert error({"series_uid": "1.2.3.4"}) == (404, "pacs_series_not_found")
    assert error({"series_uid": slide_uid, "archive": "other"}) == (400, "pacs_archive_unknown")
    assert error({"series_uid": slide_uid, "slide_path": "x.svs"})[1] == "invalid_request"
    assert len(sent) == 1


def test_watch_pacs_command(
    orthanc: Orthanc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    orthanc.upload([write_instance(tmp_path / "sc.dcm", modality="SM")])  # not a slide
    archive = {"name": "lab", "base_url": orthanc.dicomweb, "username": USER}
    config = {
        "service": {"output_root": str(tmp_path / "out"), "slide_roots": [str(tmp_path)]},
        "pacs": {
            "archives": [{**archive, "password_env": PASSWORD_ENV}],
            "retries": 1,
            "backoff_s": 0.01,
        },
    }
    (tmp_path / "atc.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setenv("ATC_CONFIG", str(tmp_path / "atc.yaml"))
    app = typer.Typer()
    register(app)
    runner = CliRunner()
    jobs_module._CONTEXTS.clear()
    try:
        monkeypatch.setenv(PASSWORD_ENV, "wrong")
        bad = runner.invoke(app, ["watch-pacs", "--once"])
        assert bad.exit_code == 2 and "HTTP 401" in bad.output
        monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
        for _ in range(3):
            ok = runner.invoke(app, ["watch-pacs", "--once", "--archive", "lab"])
            assert ok.exit_code == 0, ok.output
        ctx = jobs_module.get_context()
        (entry,) = json.loads(state_file(ctx, "lab").read_text())["series"].values()
        assert entry["status"] == "failed" and "pacs_not_a_slide" in entry["reason"]
        unknown = runner.invoke(app, ["watch-pacs", "--once", "--archive", "nope"])
        assert unknown.exit_code == 2 and "unknown archive" in unknown.output
    finally:
        jobs_module._CONTEXTS.clear()
