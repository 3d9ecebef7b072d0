"""Fixtures of the service tests: a real redis-server, Celery worker and uvicorn subprocesses,
a SQLite or PostgreSQL job store, all on 127.0.0.1.

Every test gets its own queues, output folder and store, so a worker of one test never takes a
task of another.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from celery import Celery
from sqlalchemy import create_engine, text

from workers.auth import hash_token
from workers.celery_app import create_app
from workers.jobs import Sender, ServiceContext, build_context
from workers.settings import load_settings
from workers.store import TERMINAL, Job
from workers.tasks import make_sender

SHARED_SLIDES = Path(__file__).resolve().parents[3] / "shared" / "data" / "slides"
FIXTURES = SHARED_SLIDES / "openslide-fixtures"
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
PG_URL = os.environ.get(
    "ATC_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
TOKENS = {"reader": ("read",), "submitter": ("read", "submit"), "admin": ("admin",)}


def free_port() -> int:
    """Return a free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns a truthy value; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server of this test session on a free port (no persistence)."""
    if not Path(REDIS_SERVER).exists():
        pytest.skip("redis-server is not installed (make system-deps installs it)")
    port = free_port()
    log = tmp_path_factory.mktemp("redis") / "redis.log"
    cmd = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    cmd += ["--appendonly", "no", "--logfile", str(log)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port, socket_connect_timeout=1)

    def up() -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    wait_for(up, 15, "redis-server to answer PING")
    yield f"redis://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


@dataclass
class Proc:
    """A started subprocess (its own process group) with its log file."""

    popen: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill9(self) -> None:
        """SIGKILL the whole process group (the worker and its pool children)."""
        os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)

    def stop(self) -> None:
        """SIGTERM the group, SIGKILL after 15 s."""
        if self.popen.poll() is not None:
            return
        os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(15)
        except subprocess.TimeoutExpired:
            self.kill9()


@dataclass
class Service:
    """One isolated service: queues, store, output folder, slide root and token file."""

    root: Path
    env: dict[str, str]
    ctx: ServiceContext
    celery: Celery
    send: Sender
    tokens: dict[str, str]
    procs: list[Proc] = field(default_factory=list)

    fixtures: Path = FIXTURES
    shared: Path = SHARED_SLIDES
    wait_for = staticmethod(wait_for)

    @property
    def slides(self) -> Path:
        return self.root / "slides"

    def add_slide(self, src: Path, name: str) -> Path:
        """Copy a slide (file or folder) into the slide root as ``name``; return its path."""
        return copy_slide(src, self.slides / name)

    def start_worker(self, concurrency: int = 1, name: str = "w") -> Proc:
        """Start a Celery worker subprocess on this service's queues; wait until ready."""
        svc = self.ctx.service
        log = self.root / f"worker-{name}-{len(self.procs)}.log"
        cmd = [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker"]
        cmd += ["-Q", f"{svc.analysis_queue},{svc.io_queue}", "-c", str(concurrency)]
        cmd += ["-n", f"{name}{len(self.procs)}-{uuid.uuid4().hex[:6]}@%h", "-l", "info"]
        cmd += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        proc = self._spawn(cmd, log)
        wait_for(lambda: "ready." in proc.output() or proc.popen.poll() is not None, 60, "worker")
        assert proc.popen.poll() is None, proc.output()[-3000:]
        return proc

    def start_api(self) -> tuple[Proc, str]:
        """Start uvicorn serving the API; wait until /healthz answers; return it and its URL."""
        port = free_port()
        cmd = [sys.executable, "-m", "uvicorn", "--factory", "workers.api:app_factory"]
        cmd += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
        proc = self._spawn(cmd, self.root / f"api-{len(self.procs)}.log")
        url = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            assert proc.popen.poll() is None, proc.output()[-3000:]
            try:
                return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 60, "the API's /healthz")
        return proc, url

    def _spawn(self, cmd: list[str], log: Path) -> Proc:
        with open(log, "wb") as fh:
            popen = subprocess.Popen(
                cmd,
                env={**os.environ, **self.env},
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.root,
            )
        proc = Proc(popen, log)
        self.procs.append(proc)
        return proc

    def wait_terminal(self, job_ids: list[str], timeout: float) -> list[Job]:
        """Wait until every job is succeeded, failed or cancelled; return them."""

        def done() -> list[Job] | None:
            jobs = [self.ctx.store.get_job(i) for i in job_ids]
            return jobs if all(j.state in TERMINAL for j in jobs) else None

        try:
            result: list[Job] = wait_for(done, timeout, f"{len(job_ids)} job(s) to end", 0.25)
        except AssertionError:
            logs = "\n".join(p.output()[-2000:] for p in self.procs)
            raise AssertionError(f"jobs did not end in {timeout} s; logs:\n{logs}") from None
        return result

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}


def make_service(
    tmp: Path,
    redis_url: str,
    database_url: str | None = None,
    extra_env: dict[str, str] | None = None,
    **service: Any,
) -> Service:
    """Build an isolated service under ``tmp`` (extra keyword arguments set service fields)."""
    uid = uuid.uuid4().hex[:8]
    (tmp / "slides").mkdir(parents=True)
    tokens = {who: f"tok-{who}-{uuid.uuid4().hex}" for who in TOKENS}
    token_file = tmp / "tokens.json"
    entries = [
        {"name": who, "sha256": hash_token(tok), "scopes": list(TOKENS[who])}
        for who, tok in tokens.items()
    ]
    token_file.write_text(__import__("json").dumps(entries))
    fields: dict[str, Any] = {
        "analysis_queue": f"analysis-{uid}",
        "io_queue": f"io-{uid}",
        "heartbeat_s": 0.5,
        "lease_s": 3.0,
        "reaper_interval_s": 1.0,
        "requeue_unsent_after_s": 5.0,
        "progress_interval_s": 0.25,
        "token_file": str(token_file),
        "thumbnail_px": 0,
        "max_upload_bytes": 1_000_000,
        **service,
    }
    env = {
        "ATC_BROKER_URL": f"{redis_url}/0",
        "ATC_RESULT_BACKEND": f"{redis_url}/1",
        "ATC_OUTPUT_ROOT": str(tmp / "out"),
        "ATC_SLIDE_ROOTS": str(tmp / "slides"),
        "ATC_DATABASE_URL": database_url or f"sqlite:///{tmp / 'jobs.sqlite'}",
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": "1",
    }
    env.update(
        {
            f"ATC__SERVICE__{k.upper()}": str(v).lower() if isinstance(v, bool) else str(v)
            for k, v in fields.items()
        }
    )
    env.update(extra_env or {})
    settings = load_settings(environ=env)
    ctx = build_context(settings)
    celery = create_app(settings.service)
    return Service(tmp, env, ctx, celery, make_sender(ctx, celery), tokens)


@pytest.fixture
def service_factory(tmp_path: Path, redis_url: str) -> Iterator[Any]:
    """``make(database_url, extra_env, **service_fields) -> Service``; stopped at the end."""
    made: list[Service] = []

    def make(
        database_url: str | None = None, extra_env: dict[str, str] | None = None, **fields: Any
    ) -> Service:
        tmp = tmp_path / f"svc{len(made)}"
        svc = make_service(tmp, redis_url, database_url, extra_env, **fields)
        made.append(svc)
        return svc

    yield make
    for svc in made:
        for proc in svc.procs:  # throwaway processes: no graceful shutdown needed
            if proc.popen.poll() is None:
                proc.kill9()
        svc.ctx.store.dispose()


@pytest.fixture
def service(service_factory: Any) -> Service:
    """An isolated service on SQLite with default test timings."""
    svc: Service = service_factory()
    return svc


@pytest.fixture
def celery_worker(service: Service) -> Proc:
    """A running Celery worker subprocess of ``service`` (one pool process)."""
    return service.start_worker()


@pytest.fixture
def api_url(service: Service) -> str:
    """The base URL of a running uvicorn serving ``service``'s API."""
    return service.start_api()[1]


@pytest.fixture(scope="session")
def pg_url() -> str:
    """The PostgreSQL URL for store tests; skipped (reason printed) when unreachable."""
    try:
        engine = create_engine(PG_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:
        pytest.skip(f"PostgreSQL unreachable at {PG_URL} ({type(exc).__name__}: {exc})")
    return PG_URL


@pytest.fixture
def pg_schema(pg_url: str) -> Iterator[str]:
    """A fresh PostgreSQL schema, dropped after the test."""
    schema = f"atc_test_{uuid.uuid4().hex[:10]}"
    yield schema
    engine = create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()


def copy_slide(src: Path, dest: Path) -> Path:
    """Copy a slide (file or folder) to ``dest``; return ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dest)
    else:
        shutil.copyfile(src, dest)
    return dest
