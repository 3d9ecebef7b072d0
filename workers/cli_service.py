"""Service commands: ``worker``, ``serve``, ``submit``, ``jobs``, ``watch``, ``reanalyze``,
``tokens``.

``submit`` and ``jobs`` talk to the HTTP API (``service.api_url``, token from ``--token`` or
``ATC_API_TOKEN``); ``watch`` and ``reanalyze`` use the job store and broker directly.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import typer

from workers.cli_common import console, handle_errors, progress_bar
from workers.errors import ApiUnreachableError, JobError, PacsError

_TERMINAL = ("succeeded", "failed", "cancelled")


def _client(api: str | None, token: str | None) -> httpx.Client:
    from workers.jobs import get_context

    url = api or get_context().service.api_url
    token = token or os.environ.get("ATC_API_TOKEN")
    if not token:
        raise JobError("no API token; pass --token or set ATC_API_TOKEN (see `atc-wsi tokens`)")
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60)


@contextlib.contextmanager
def _reachable(client: httpx.Client) -> Iterator[None]:
    """Turn a transport failure (API down, DNS, timeout) into one typed error."""
    try:
        yield
    except httpx.TransportError as exc:
        raise ApiUnreachableError(str(client.base_url), type(exc).__name__) from None


def _check(r: httpx.Response) -> Any:
    if r.status_code >= 400:
        try:
            err = r.json()["error"]
            raise JobError(f"{err['code']}: {err['message']}")
        except (ValueError, KeyError):
            raise JobError(f"HTTP {r.status_code}: {r.text[:200]}") from None
    return r.json()


def worker(
    queues: str = typer.Option(
        "", help="comma-separated queues (default: analysis here, io in its own process)"
    ),
    concurrency: int = typer.Option(0, help="processes (default: service.worker_concurrency)"),
    loglevel: str = typer.Option("info", help="Celery log level"),
    name: str = typer.Option("atc@%h", help="worker node name"),
    beat: bool = typer.Option(
        False, "--beat", help="also run the beat scheduler (polls pacs.archives every poll_s)"
    ),
) -> None:
    """Run a Celery worker (one per GPU: set CUDA_VISIBLE_DEVICES per worker).

    Without ``--queues`` the io queue (thumbnails, batch expansion) gets its own worker process
    (``io-<name>``, one pool process), so it never waits behind a long analysis.
    """
    with handle_errors():
        from workers.celery_app import app
        from workers.jobs import get_context

        svc = get_context().service
        argv = ["worker", "-Q", queues or svc.analysis_queue]
        argv += ["-c", str(concurrency or svc.worker_concurrency), "-l", loglevel, "-n", name]
        if beat:  # one process in the deployment: beat schedules, the io worker polls
            argv += ["-B", "-s", str(svc.output_root / "celerybeat-schedule")]
    io_worker = None if queues else _start_io_worker(svc.io_queue, loglevel, name)
    try:
        app.worker_main(argv)
    finally:
        if io_worker is not None and io_worker.poll() is None:
            io_worker.terminate()
            try:
                io_worker.wait(30)
            except subprocess.TimeoutExpired:
                io_worker.kill()


def _start_io_worker(queue: str, loglevel: str, name: str) -> subprocess.Popen[bytes]:
    """Start the io queue's own Celery worker process (stopped with the analysis worker)."""
    cmd = [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "-Q", queue]
    cmd += ["-c", "1", "-l", loglevel, "-n", f"io-{name}"]
    return subprocess.Popen(cmd)


def serve(
    host: str = typer.Option("", help="bind address (default: service.api_host)"),
    port: int = typer.Option(0, help="port (default: service.api_port)"),
) -> None:
    """Serve the HTTP API with uvicorn."""
    import uvicorn

    with handle_errors():
        from workers.jobs import get_context

        svc = get_context().service
    uvicorn.run(
        "workers.api:app_factory",
        factory=True,
        host=host or svc.api_host,
        port=port or svc.api_port,
    )


def submit(
    slide: str = typer.Argument(
        "", help="slide path (under a slide root on the server); omit with --series"
    ),
    wait: bool = typer.Option(False, "--wait", help="show progress until the job ends"),
    force: bool = typer.Option(False, "--force", help="rerun even if already analysed"),
    upload: bool = typer.Option(False, "--upload", help="stream the file to the server"),
    series: str | None = typer.Option(
        None, "--series", help="Series Instance UID of a slide in a DICOMweb archive"
    ),
    archive: str | None = typer.Option(
        None, "--archive", help="archive of --series (default: the only one configured)"
    ),
    api: str | None = typer.Option(None, help="API URL (default: service.api_url)"),
    token: str | None = typer.Option(None, help="API token (default: $ATC_API_TOKEN)"),
) -> None:
    """Submit a slide (a path, an upload or a PACS series) through the API; with --wait, follow
    it to the end (exit 1 if it fails)."""
    with handle_errors(), _client(api, token) as client, _reachable(client):
        local = Path(slide)
        if bool(series) == bool(slide):
            raise JobError("give either a slide path or --series UID (not both)")
        if series:
            payload = {"series_uid": series, "archive": archive, "force": force}
            r = client.post("/v1/jobs", json=payload)
        elif upload:
            with open(local, "rb") as fh:
                r = client.post(
                    "/v1/jobs",
                    params={"filename": local.name, "force": str(force).lower()},
                    content=fh,
                    headers={"Content-Type": "application/octet-stream"},
                )
        else:
            path = str(local.resolve()) if local.exists() else slide
            r = client.post("/v1/jobs", json={"slide_path": path, "force": force})
        body = _check(r)
        job = body["job"]
        print(f"job {job['id']} {'created' if body['created'] else 'reused'}: {job['state']}")
        if wait:
            job = _follow(client, job["id"])
            print(f"job {job['id']} {job['state']}: {job['out_dir']}")
            if job["state"] != "succeeded":
                print(f"reason: {job['reason_code']}: {job['reason']}", file=sys.stderr)
                raise typer.Exit(1)


def _follow(client: httpx.Client, job_id: str) -> dict[str, Any]:
    with progress_bar(f"job {job_id[:8]}") as update:
        while True:
            job: dict[str, Any] = _check(client.get(f"/v1/jobs/{job_id}"))
            prog = job["progress"]
            update(prog["done"], prog["total"] or 1)
            if job["state"] in _TERMINAL:
                return job
            time.sleep(0.5)


def jobs(
    state: str | None = typer.Option(None, help="only jobs in this state"),
    limit: int = typer.Option(20, help="how many, newest first"),
    api: str | None = typer.Option(None, help="API URL (default: service.api_url)"),
    token: str | None = typer.Option(None, help="API token (default: $ATC_API_TOKEN)"),
) -> None:
    """List jobs with their state and progress."""
    from rich.table import Table

    with handle_errors(), _client(api, token) as client, _reachable(client):
        params: dict[str, Any] = {"limit": limit, **({"state": state} if state else {})}
        body = _check(client.get("/v1/jobs", params=params))
    table = Table("id", "state", "progress", "slide", "reason")
    for j in body["jobs"]:
        p = j["progress"]
        table.add_row(
            j["id"], j["state"], f"{p['done']}/{p['total']}", j["slide_path"], j["reason"] or ""
        )
    console.print(table)
    print(" ".join(f"{k}={v}" for k, v in body["counts"].items()))


def watch(
    folder: Path = typer.Argument(..., help="folder the scanner writes into (under a slide root)"),
) -> None:
    """Submit each new slide in FOLDER once it is complete (runs until interrupted)."""
    with handle_errors():
        from workers.jobs import get_context
        from workers.tasks import make_sender
        from workers.watch import Watcher

        ctx = get_context()
        watcher = Watcher(ctx, folder.resolve() if folder.exists() else folder, make_sender(ctx))
        every = ctx.service.watch_poll_s
        print(f"watching {watcher.folder} every {every} s (state {watcher.state_path})")
        try:
            watcher.run()
        except KeyboardInterrupt:
            watcher.save()


def watch_pacs(
    archive: str | None = typer.Option(None, help="only this archive (default: all configured)"),
    once: bool = typer.Option(False, "--once", help="poll once and exit"),
    in_process: bool = typer.Option(
        False, "--in-process", help="analyse submitted series here, one by one (no broker)"
    ),
) -> None:
    """Submit each new slide series of the DICOMweb archives once it is complete."""
    with handle_errors():
        from workers.jobs import get_context
        from workers.pacs import PacsWatcher
        from workers.tasks import make_sender, run_job

        ctx = get_context()
        chosen = [ctx.settings.pacs.archive(archive)] if archive else ctx.settings.pacs.archives
        if not chosen:
            ctx.settings.pacs.archive(None)  # raises: no archive configured

        def inline(job_id: str) -> None:
            print(f"job {job_id}: {run_job(ctx, job_id)}")

        send = inline if in_process else make_sender(ctx)
        watchers = [PacsWatcher(ctx, a, send) for a in chosen]
        for w in watchers:
            print(f"watching {w.archive.name} ({w.archive.base_url}); state {w.state_path}")
        try:
            while True:
                for w in watchers:
                    try:
                        for job_id in w.poll_once():
                            print(f"{w.archive.name}: submitted job {job_id}")
                    except PacsError as exc:
                        if once:
                            raise
                        print(f"{exc.code}: {exc.message} (retrying next poll)", file=sys.stderr)
                if once:
                    break
                time.sleep(ctx.settings.pacs.poll_s)
        except KeyboardInterrupt:
            for w in watchers:
                w.save()


def reanalyze(
    root: str = typer.Argument(..., help="folder under a slide root"),
    glob: str = typer.Option("**/*.svs", "--glob", help="slides to include, relative to ROOT"),
    force: bool = typer.Option(False, "--force", help="rerun slides already analysed"),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="follow the batch to its end"),
) -> None:
    """Analyse every matching slide (resumes the same batch after a restart)."""
    with handle_errors():
        from workers.batch import create_batch, expand_batch
        from workers.jobs import get_context
        from workers.tasks import make_sender

        ctx = get_context()
        local = Path(root)
        root = str(local.resolve()) if local.is_dir() else root
        batch = create_batch(ctx, root=root, pattern=glob, force=force, resume=True)
        print(f"batch {batch.id}: {root} {glob}{' (force)' if force else ''}")
        with progress_bar("submitting") as update:
            expand_batch(ctx, batch.id, make_sender(ctx), on_item=update)
        counts = ctx.store.batch_counts(batch.id)
        if wait:
            with progress_bar("analysing") as update:
                while True:
                    counts = ctx.store.batch_counts(batch.id)
                    update(sum(counts[s] for s in _TERMINAL), counts["items"])
                    if sum(counts[s] for s in _TERMINAL) + counts["errors"] >= counts["items"]:
                        break
                    time.sleep(1.0)
        print(" ".join(f"{k}={v}" for k, v in counts.items()))


def tokens(
    name: str = typer.Argument(..., help="who holds the token"),
    scope: list[str] = typer.Option(["read"], "--scope", help="read, submit or admin (repeat)"),
) -> None:
    """Create an API token; only its sha256 is stored. The token is printed once."""
    with handle_errors():
        from workers.auth import create_token
        from workers.jobs import get_context

        bad = [s for s in scope if s not in ("read", "submit", "admin")]
        if bad:
            raise ValueError(f"unknown scope(s) {bad}; use read, submit or admin")
        path = get_context().service.resolved_token_file
        token = create_token(path, name, tuple(scope))  # type: ignore[arg-type]
    print(token)
    print(f"stored its sha256 in {path} (scopes: {', '.join(scope)})", file=sys.stderr)


def register(app: typer.Typer) -> None:
    """Add the service commands to the ``atc-wsi`` app."""
    for fn in (worker, serve, submit, jobs, watch, reanalyze, tokens):
        app.command()(fn)
    app.command(name="watch-pacs")(watch_pacs)
