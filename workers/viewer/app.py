"""A small FastAPI app serving the viewer of one local output folder (``atc-wsi view``)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse

from workers.report.settings import OutputSettings
from workers.viewer.folder import ViewerDataError, slide_from_report
from workers.viewer.router import DEFAULT_PREFIX, make_viewer_router

#: The id under which the local folder is served: /v1/jobs/local/viewer/ (same routes as the API).
LOCAL_ID = "local"


def make_local_app(
    out_dir: Path, *, slide_path: Path | None = None, settings: OutputSettings | None = None
) -> FastAPI:
    """Return an app serving ``out_dir`` at ``/v1/jobs/local/viewer/`` (``/`` redirects there).

    Args:
        out_dir: an output folder written by ``write_outputs`` (must hold report.json).
        slide_path: the slide to show; default: the path recorded in report.json.
        settings: tile size, quality and cache size.

    Raises:
        ViewerDataError: ``out_dir`` holds no report.json.
    """
    out_dir = Path(out_dir)
    if not (out_dir / "report.json").is_file():
        raise ViewerDataError(
            f"{out_dir} holds no report.json; pass a folder written by `atc-wsi analyze`"
        )

    def resolve(job_id: str) -> Path:
        if job_id != LOCAL_ID:
            raise LookupError(f"unknown id {job_id!r}; this server shows only {LOCAL_ID!r}")
        return out_dir

    def slide(_job_id: str, folder: Path) -> Path | None:
        return slide_path if slide_path is not None else slide_from_report(folder)

    app = FastAPI(title="atc-wsi viewer", docs_url=None, redoc_url=None)
    app.include_router(make_viewer_router(resolve, resolve_slide=slide, settings=settings))
    page = DEFAULT_PREFIX.format(job_id=LOCAL_ID) + "/"

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse(url=page)

    return app
