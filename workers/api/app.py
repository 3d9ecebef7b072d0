"""The FastAPI application: routes, JSON errors with stable codes, health and Prometheus metrics.

Run it with ``atc-wsi serve`` or ``uvicorn --factory workers.api:app_factory``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import redis
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

import wsi
from workers.api.routes import require, router
from workers.auth import TokenVerifier
from workers.celery_app import EXPAND_BATCH_TASK
from workers.errors import JobError
from workers.jobs import Sender, ServiceContext, get_context
from workers.viewer import make_viewer_router

log = logging.getLogger(__name__)

#: Window over which the tiles-per-second gauge is computed, seconds.
RATE_WINDOW_S = 900.0


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """Return the JSON error shape every failure uses."""
    return {"error": {"code": code, "message": message, **extra}}


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(JobError)
    async def _job_error(_: Request, exc: JobError) -> JSONResponse:
        extra = {"reason": exc.reason} if hasattr(exc, "reason") else {}
        return JSONResponse(error_body(exc.code, exc.message, **extra), exc.http_status)

    @app.exception_handler(wsi.WsiError)
    async def _wsi_error(_: Request, exc: wsi.WsiError) -> JSONResponse:
        return JSONResponse(error_body("invalid_slide", str(exc)), 400)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return JSONResponse(error_body("invalid_request", problems), 422)

    @app.exception_handler(ValidationError)
    async def _invalid_body(_: Request, exc: ValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return JSONResponse(error_body("invalid_request", problems), 422)

    @app.exception_handler(ValueError)
    async def _value(_: Request, exc: ValueError) -> JSONResponse:
        return JSONResponse(error_body("invalid_request", str(exc)), 400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(error_body(code, str(exc.detail)), exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", exc_info=exc)
        return JSONResponse(error_body("internal_error", type(exc).__name__), 500)


class ServiceCollector:
    """Prometheus collector reading the job store and the broker at scrape time."""

    def __init__(self, ctx: ServiceContext, broker: redis.Redis) -> None:
        self.ctx, self.broker = ctx, broker

    def collect(self) -> Any:
        """Yield the metric families."""
        jobs = GaugeMetricFamily("atc_jobs", "Jobs per state", labels=["state"])
        for state, n in self.ctx.store.counts().items():
            jobs.add_metric([state], n)
        yield jobs
        queue = GaugeMetricFamily("atc_queue_length", "Tasks waiting in a queue", labels=["queue"])
        for name in (self.ctx.service.analysis_queue, self.ctx.service.io_queue):
            try:
                depth = self.broker.llen(self.ctx.service.key_prefix + name)
                queue.add_metric([name], float(depth))
            except redis.RedisError:
                queue.add_metric([name], float("nan"))
        yield queue
        n, run_s, tiles = self.ctx.store.succeeded_totals()
        yield SummaryMetricFamily(
            "atc_job_run_seconds", "Run time of succeeded jobs", count_value=n, sum_value=run_s
        )
        yield CounterMetricFamily("atc_tiles_processed", "Tiles of succeeded jobs", value=tiles)
        recent = self.ctx.store.finished_since(time.time() - RATE_WINDOW_S)
        busy = sum(j.run_s or 0.0 for j in recent)
        rate = sum(j.tiles_total for j in recent) / busy if busy > 0 else 0.0
        yield GaugeMetricFamily(
            "atc_tiles_per_second", "Tiles per run-second over the last 15 min", value=rate
        )


def create_api(ctx: ServiceContext | None = None, send: Sender | None = None) -> FastAPI:
    """Build the API for a service context (default: this process's, from the settings)."""
    from workers.celery_app import app as celery
    from workers.tasks import make_sender

    ctx = ctx or get_context()
    app = FastAPI(title="atc-wsi", version=ctx.pipeline_version)
    app.state.ctx = ctx
    app.state.send = send or make_sender(ctx)
    app.state.send_expand = lambda batch_id: celery.send_task(
        EXPAND_BATCH_TASK, args=[batch_id], queue=ctx.service.io_queue
    )
    app.state.verifier = TokenVerifier(ctx.service)
    broker = redis.Redis.from_url(
        ctx.service.broker_url, socket_timeout=2, socket_connect_timeout=2
    )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(ctx, broker))
    _install_error_handlers(app)
    app.include_router(router)

    def job_output_dir(job_id: str) -> Path:
        try:
            return Path(ctx.store.get_job(job_id).out_dir)
        except JobError as exc:
            raise LookupError(str(exc)) from exc

    app.include_router(make_viewer_router(job_output_dir, dependencies=[Depends(require("read"))]))

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        checks: dict[str, str] = {}
        try:
            broker.ping()
            checks["redis"] = "ok"
        except redis.RedisError as exc:
            checks["redis"] = f"error: {exc}"
        try:
            ctx.store.ping()
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"error: {type(exc).__name__}: {exc}"
        ok = all(v == "ok" for v in checks.values())
        body: dict[str, Any] = {"status": "ok" if ok else "unavailable", **checks}
        body["broker"] = ctx.service.broker_identity()
        body["deployment"] = ctx.service.deployment
        return JSONResponse(body, 200 if ok else 503)

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")

    return app


def app_factory() -> FastAPI:
    """Uvicorn factory: ``uvicorn --factory workers.api:app_factory``."""
    return create_api()


__all__ = ["app_factory", "create_api"]
