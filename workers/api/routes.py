"""The ``/v1`` endpoints: jobs (submit by path or upload, read, list, cancel, report, files) and
batches."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from workers.batch import batch_status, create_batch
from workers.errors import (
    JobError,
    JobStateError,
    OutputNotFoundError,
    PathNotAllowedError,
    UploadTooLargeError,
)
from workers.fingerprint import SLIDE_SUFFIXES
from workers.jobs import (
    Sender,
    ServiceContext,
    cancel_job,
    check_name_lengths,
    resolve_slide_path,
    submit_slide,
)
from workers.pacs import submit_series
from workers.service_settings import Scope, TokenEntry
from workers.store import STATES, SUCCEEDED, Job, new_id

router = APIRouter(prefix="/v1")


def require(scope: Scope) -> Callable[[Request], TokenEntry]:
    """Return a dependency that admits only tokens holding ``scope``."""

    def check(request: Request) -> TokenEntry:
        verifier = request.app.state.verifier
        entry: TokenEntry = verifier.verify(request.headers.get("authorization"), scope)
        return entry

    return check


Reader = Annotated[TokenEntry, Depends(require("read"))]
Submitter = Annotated[TokenEntry, Depends(require("submit"))]


def _ctx(request: Request) -> ServiceContext:
    ctx: ServiceContext = request.app.state.ctx
    return ctx


def _send(request: Request) -> Sender:
    send: Sender = request.app.state.send
    return send


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class JobRequest(_Body):
    """Submit a slide that lies under a slide root, or a slide series of a DICOMweb archive."""

    slide_path: str | None = Field(None, description="absolute, or relative to a slide root")
    series_uid: str | None = Field(
        None, pattern=r"^[0-9.]{1,64}$", description="Series Instance UID in a PACS archive"
    )
    archive: str | None = Field(None, description="archive name (default: the only one)")
    force: bool = Field(False, description="rerun even if the same analysis exists")

    @model_validator(mode="after")
    def _one_slide(self) -> JobRequest:
        if (self.slide_path is None) == (self.series_uid is None):
            raise ValueError("give exactly one of slide_path and series_uid")
        return self


class BatchRequest(_Body):
    """Submit many slides: a list of paths, or a glob under a root."""

    paths: list[str] | None = None
    root: str | None = None
    glob: str | None = None
    pipeline_version: str | None = None
    force: bool = False


def job_view(job: Job) -> dict[str, Any]:
    """Return the job's JSON with the output files it has so far."""
    data = job.to_dict()
    out = Path(job.out_dir)
    data["files"] = (
        sorted(p.name for p in out.iterdir() if p.is_file() and not p.name.startswith("."))
        if out.is_dir()
        else []
    )
    return data


def _submitted(job: Job, created: bool) -> JSONResponse:
    body = {"job": job_view(job), "created": created}
    return JSONResponse(body, status_code=201 if created else 200)


@router.post("/jobs", status_code=201)
async def post_job(request: Request, _: Submitter) -> JSONResponse:
    """Submit a slide: JSON ``{"slide_path", "force"}`` or ``{"series_uid", "archive", "force"}``
    (a PACS series), or the slide bytes as the body (``Content-Type: application/octet-stream``,
    ``?filename=NAME.svs``)."""
    ctype = request.headers.get("content-type", "")
    ctx, send = _ctx(request), _send(request)
    if ctype.startswith("application/json"):
        body = JobRequest.model_validate_json(await request.body())
        if body.series_uid is not None:
            uid = body.series_uid
            sub = await anyio.to_thread.run_sync(
                lambda: submit_series(ctx, uid, send, archive=body.archive, force=body.force)
            )
            return _submitted(sub.job, sub.created)
        raw = str(body.slide_path)
        path = await anyio.to_thread.run_sync(resolve_slide_path, raw, ctx.service)
        sub = await anyio.to_thread.run_sync(
            lambda: submit_slide(ctx, path, send, force=body.force, source="api")
        )
        return _submitted(sub.job, sub.created)
    if ctype.startswith("application/octet-stream"):
        filename = request.query_params.get("filename", "")
        force = request.query_params.get("force", "false").lower() in ("1", "true", "yes")
        path = await _receive_upload(request, ctx, filename)
        try:
            sub = await anyio.to_thread.run_sync(
                lambda: submit_slide(ctx, path, send, force=force, source="upload")
            )
        except BaseException:
            shutil.rmtree(path.parent, ignore_errors=True)
            raise
        if not sub.created:  # the same slide was analysed already: keep no second copy
            shutil.rmtree(path.parent, ignore_errors=True)
        return _submitted(sub.job, sub.created)
    raise JobError(
        f"unsupported Content-Type {ctype!r}; send application/json with a slide_path, or the "
        "slide bytes as application/octet-stream with ?filename=NAME.svs"
    )


async def _receive_upload(request: Request, ctx: ServiceContext, filename: str) -> Path:
    """Stream the body to ``<upload_dir>/<id>/<filename>``; 413 past the limit."""
    name = Path(filename).name
    if not name or name != filename or name.startswith(".") or "\\" in name:
        raise PathNotAllowedError(filename, "give a plain file name, e.g. ?filename=slide.svs")
    check_name_lengths(f".{name}.part")  # the temporary name must fit the file system too
    if Path(name).suffix.lower() not in SLIDE_SUFFIXES or name.lower().endswith(".mrxs"):
        raise PathNotAllowedError(
            filename, f"uploads must be single-file slides ({', '.join(sorted(SLIDE_SUFFIXES))})"
        )
    limit = ctx.service.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise UploadTooLargeError(limit)
    dest = ctx.service.resolved_upload_dir.resolve() / new_id() / name
    tmp = dest.with_name(f".{name}.part")
    size = 0
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise UploadTooLargeError(limit)
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(dest.parent, ignore_errors=True)  # no empty uploads/<id>/ left behind
        raise
    return dest


@router.get("/jobs")
def list_jobs(
    request: Request,
    _: Reader,
    state: str | None = None,
    batch_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """List jobs, newest first, with counts per state."""
    if state is not None and state not in STATES:
        raise JobError(f"unknown state {state!r}; use one of {', '.join(STATES)}")
    ctx = _ctx(request)
    jobs = ctx.store.list_jobs(state=state, batch_id=batch_id, limit=limit, offset=offset)
    return {"jobs": [j.to_dict() for j in jobs], "counts": ctx.store.counts(batch_id)}


@router.get("/jobs/{job_id}")
def get_job(request: Request, job_id: str, _: Reader) -> dict[str, Any]:
    """Return one job with its progress and files."""
    return job_view(_ctx(request).store.get_job(job_id))


@router.delete("/jobs/{job_id}", status_code=202)
def delete_job(request: Request, job_id: str, _: Submitter) -> dict[str, Any]:
    """Cancel a job (queued: at once; running: at its next chunk)."""
    return job_view(cancel_job(_ctx(request), job_id))


@router.get("/jobs/{job_id}/report")
def get_report(request: Request, job_id: str, _: Reader) -> Any:
    """Return the job's ``report.json``."""
    job = _ctx(request).store.get_job(job_id)
    if job.state != SUCCEEDED:
        raise JobStateError(f"job {job_id} is {job.state}; a report exists once it succeeded")
    return json.loads((Path(job.out_dir) / "report.json").read_text(encoding="utf-8"))


@router.get("/jobs/{job_id}/files/{name}")
def get_file(request: Request, job_id: str, name: str, _: Reader) -> FileResponse:
    """Return one output file of the job (no sub-folders, no hidden files)."""
    job = _ctx(request).store.get_job(job_id)
    out = Path(job.out_dir).resolve()
    target = (out / name).resolve()
    if name.startswith(".") or "/" in name or "\\" in name or target.parent != out:
        raise PathNotAllowedError(name, "a file name of this job's folder, without folders")
    if not target.is_file():
        raise OutputNotFoundError(f"job {job_id} has no file {name!r}; see its 'files' list")
    return FileResponse(target)


@router.post("/batches", status_code=202)
def post_batch(request: Request, body: BatchRequest, _: Submitter) -> dict[str, Any]:
    """Create a batch; its slides are submitted by an ``io`` worker (``atc.expand_batch``)."""
    ctx = _ctx(request)
    batch = create_batch(
        ctx,
        root=body.root,
        pattern=body.glob,
        paths=body.paths,
        force=body.force,
        pipeline_version=body.pipeline_version,
    )
    request.app.state.send_expand(batch.id)
    return batch_status(ctx, batch.id)


@router.get("/batches/{batch_id}")
def get_batch(request: Request, batch_id: str, _: Reader) -> dict[str, Any]:
    """Return a batch with counts of its jobs per state."""
    return batch_status(_ctx(request), batch_id)
