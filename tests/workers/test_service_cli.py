"""The service commands through typer: tokens, reanalyze (skip, resume, force), submit --wait."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from workers import jobs as jobs_module
from workers.auth import TokenVerifier
from workers.batch import create_batch, expand_batch
from workers.cli_service import register

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def cli(service: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any]]:
    """The service commands on their own typer app, with the service's environment."""
    app = typer.Typer()
    register(app)
    for key, value in service.env.items():
        monkeypatch.setenv(key, value)
    jobs_module._CONTEXTS.clear()
    runner = CliRunner()

    def invoke(*args: str) -> Any:
        return runner.invoke(app, list(args), catch_exceptions=False)

    yield service, invoke
    jobs_module._CONTEXTS.clear()


def test_tokens_command_stores_only_the_hash(cli: tuple[Any, Any]) -> None:
    svc, invoke = cli
    result = invoke("tokens", "robot", "--scope", "submit", "--scope", "read")
    assert result.exit_code == 0, result.output
    token = result.stdout.strip().splitlines()[0]
    stored = svc.ctx.service.resolved_token_file.read_text()
    assert token not in stored and json.loads(stored)[-1]["name"] == "robot"
    entry = TokenVerifier(svc.ctx.service).verify(f"Bearer {token}", "submit")
    assert entry.scopes == ("submit", "read")
    assert invoke("tokens", "robot").exit_code == 2  # duplicate name: one-line error
    assert invoke("tokens", "x", "--scope", "root").exit_code == 2


def test_reanalyze_skips_done_slides_and_resumes(cli: tuple[Any, Any]) -> None:
    svc, invoke = cli
    svc.add_slide(svc.fixtures / "small.svs", "batch/a.svs")
    svc.add_slide(svc.shared / "CMU-1-Small-Region.svs", "batch/b.svs")
    svc.add_slide(svc.fixtures / "small.svs", "batch/sub/c.svs")  # same content as a.svs
    svc.start_worker()
    # a first run dies after submitting one slide
    batch = create_batch(svc.ctx, root="batch", pattern="**/*.svs", resume=True)

    def crash(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        expand_batch(svc.ctx, batch.id, svc.send, on_item=crash)
    assert len(svc.ctx.store.batch_items(batch.id)) == 1
    result = invoke("reanalyze", "batch", "--glob", "**/*.svs")
    assert result.exit_code == 0, result.output
    assert f"batch {batch.id}" in result.stdout  # the same batch, resumed
    counts = svc.ctx.store.batch_counts(batch.id)
    assert counts["items"] == 3 and counts["succeeded"] == 3 and counts["skipped"] == 1
    assert len(svc.ctx.store.list_jobs()) == 2  # c.svs reused a.svs's analysis
    again = invoke("reanalyze", "batch", "--glob", "**/*.svs")
    assert again.exit_code == 0 and len(svc.ctx.store.list_jobs()) == 2
    forced = invoke("reanalyze", "batch", "--glob", "**/*.svs", "--force")
    assert forced.exit_code == 0, forced.output
    assert len(svc.ctx.store.list_jobs()) == 5
    assert "succeeded=3" in forced.stdout
    bad = invoke("reanalyze", "/etc", "--glob", "*.conf")
    assert bad.exit_code == 2 and "refused" in bad.output


def test_submit_wait_and_jobs_through_the_api(cli: tuple[Any, Any]) -> None:
    svc, invoke = cli
    slide = svc.add_slide(svc.shared / "CMU-1-Small-Region.svs", "w.svs")
    bad = svc.add_slide(svc.fixtures / "unreadable.svs", "bad.svs")
    svc.start_worker()
    _, url = svc.start_api()
    token = svc.tokens["submitter"]
    ok = invoke("submit", str(slide), "--wait", "--api", url, "--token", token)
    assert ok.exit_code == 0, ok.output
    assert "succeeded" in ok.stdout
    failed = invoke("submit", str(bad), "--wait", "--api", url, "--token", token)
    assert failed.exit_code == 1 and "tile_read_error" in failed.output
    too_big = invoke("submit", str(slide), "--upload", "--api", url, "--token", token)
    assert too_big.exit_code == 2 and "upload_too_large" in too_big.output  # 1.9 MB > 1 MB
    tiny = svc.fixtures / "small.svs"
    up = invoke("submit", str(tiny), "--upload", "--force", "--api", url, "--token", token)
    assert up.exit_code == 0 and "created" in up.stdout, up.output
    listing = invoke("jobs", "--api", url, "--token", token)
    assert listing.exit_code == 0 and "succeeded=" in listing.stdout
    refused = invoke("submit", "/etc/passwd", "--api", url, "--token", token)
    assert refused.exit_code == 2 and "path_not_allowed" in refused.output
