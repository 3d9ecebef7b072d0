"""FastAPI router serving the browser viewer of one output folder per id.

Mount it once per application; the id in the URL picks the folder::

    from workers.viewer import make_viewer_router
    app.include_router(make_viewer_router(lambda job_id: store.output_dir(job_id)))
    # → GET /v1/jobs/{job_id}/viewer/  (page), …/slide.dzi, …/overlays/NAME.dzi, …/markers.geojson

Routes under the prefix (all relative, so the page works under any prefix):
``/`` page · ``/static/…`` JS/CSS/OpenSeadragon · ``/layers.json`` · ``/markers.geojson`` ·
``/slide.dzi`` + ``/slide_files/L/C_R.jpeg`` · ``/overlays/NAME.dzi`` +
``/overlays/NAME_files/L/C_R.png`` · ``/report.html``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response

from workers.report.settings import OutputSettings
from workers.viewer.folder import FolderCache, ViewerDataError, ViewerFolder, slide_from_report
from wsi import WsiError
from wsi.export import ExportError
from wsi.export.dzi import DeepZoom

STATIC_DIR = Path(__file__).resolve().parent / "static"
DEFAULT_PREFIX = "/v1/jobs/{job_id}/viewer"
_IMMUTABLE = {"Cache-Control": "private, max-age=3600"}

#: Maps an id from the URL to an output folder; raise LookupError (→ 404) for unknown ids.
ResolveOutputDir = Callable[[str], Path]
#: Maps (id, output folder) to the slide to show, or None for overlays only.
ResolveSlide = Callable[[str, Path], Path | None]
FolderLookup = Callable[[str], ViewerFolder]


def _default_slide(_job_id: str, out_dir: Path) -> Path | None:
    return slide_from_report(out_dir)


def make_viewer_router(
    resolve_output_dir: ResolveOutputDir,
    *,
    resolve_slide: ResolveSlide = _default_slide,
    prefix: str = DEFAULT_PREFIX,
    settings: OutputSettings | None = None,
    cache: FolderCache | None = None,
    dependencies: Sequence[Any] = (),
) -> APIRouter:
    """Build the viewer router.

    Args:
        resolve_output_dir: id → output folder; raise ``LookupError`` (or ``HTTPException``)
            for an unknown id.
        resolve_slide: (id, folder) → slide path; default: the path in ``report.json``.
        prefix: URL prefix holding ``{job_id}``.
        settings: tile size, JPEG quality, cache size.
        cache: share (or inspect) the folder and tile cache; default: a new one.
        dependencies: FastAPI ``Depends(...)`` run on every data route (layers, markers, Deep
            Zoom, report), e.g. the API's token check. The page and its static files stay
            open: the page sends ``Authorization: Bearer <token>`` itself when opened as
            ``…/viewer/#token=<token>``.
    """
    if "{job_id}" not in prefix:
        raise ValueError(f"viewer prefix must contain '{{job_id}}', got {prefix!r}")
    cache = cache if cache is not None else FolderCache(settings or OutputSettings())
    router = APIRouter(prefix=prefix, tags=["viewer"])

    def folder(job_id: str) -> ViewerFolder:
        try:
            out_dir = Path(resolve_output_dir(job_id))
            return cache.get(out_dir, resolve_slide(job_id, out_dir))
        except LookupError as exc:  # includes ViewerDataError and KeyError
            raise HTTPException(status_code=404, detail=str(exc)) from None

    _add_page_routes(router, prefix)
    data = APIRouter(dependencies=list(dependencies))
    _add_data_routes(data, folder)
    _add_tile_routes(data, folder, cache)
    router.include_router(data)
    return router


def _add_page_routes(router: APIRouter, prefix: str) -> None:
    """The page and its static files (no folder data, so no authorisation needed)."""

    @router.get("", include_in_schema=False)
    def page_redirect(job_id: str) -> RedirectResponse:
        return RedirectResponse(url=f"{prefix.format(job_id=job_id)}/", status_code=307)

    @router.get("/", response_class=HTMLResponse)
    def page(job_id: str) -> HTMLResponse:
        return HTMLResponse((STATIC_DIR / "index.html").read_text(encoding="utf-8"))

    @router.get("/static/{path:path}")
    def static(job_id: str, path: str) -> FileResponse:
        target = (STATIC_DIR / path).resolve()
        if not target.is_relative_to(STATIC_DIR) or not target.is_file():
            hint = " (run `make viewer-assets`)" if path.startswith("openseadragon/") else ""
            raise HTTPException(status_code=404, detail=f"no static file {path!r}{hint}")
        return FileResponse(target, headers=_IMMUTABLE)


def _add_data_routes(router: APIRouter, folder: FolderLookup) -> None:
    """Layer list, markers and the HTML report of one folder."""

    @router.get("/layers.json")
    def layers(job_id: str) -> JSONResponse:
        return JSONResponse(folder(job_id).layers())

    @router.get("/markers.geojson")
    def markers(job_id: str) -> JSONResponse:
        return JSONResponse(folder(job_id).markers(), media_type="application/geo+json")

    @router.get("/report.html", response_class=HTMLResponse)
    def report_html(job_id: str) -> FileResponse:
        path = folder(job_id).out_dir / "report.html"
        if not path.is_file():
            raise HTTPException(status_code=404, detail="no report.html in this output folder")
        return FileResponse(path, media_type="text/html")


def _add_tile_routes(router: APIRouter, folder: FolderLookup, cache: FolderCache) -> None:
    """Deep Zoom descriptors and tiles of the slide and of each overlay."""

    def tile(job_id: str, layer: str, dz: DeepZoom, level: int, col: int, row: int) -> Response:
        f = folder(job_id)
        key = (str(f.out_dir), f.report["slide"]["fingerprint"], layer, level, col, row)
        try:
            data = cache.tiles.get_or_create(key, lambda: dz.tile(level, col, row))
        except ExportError as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from None
        except WsiError as exc:
            raise HTTPException(status_code=500, detail=f"tile unreadable: {exc}") from None
        media = "image/jpeg" if dz.fmt == "jpeg" else "image/png"
        return Response(content=data, media_type=media, headers=_IMMUTABLE)

    @router.get("/slide.dzi")
    def slide_dzi(job_id: str) -> Response:
        return Response(_slide(folder(job_id)).dzi_xml(), media_type="application/xml")

    @router.get("/slide_files/{level}/{col}_{row}.jpeg")
    def slide_tile(job_id: str, level: int, col: int, row: int) -> Response:
        return tile(job_id, "slide", _slide(folder(job_id)), level, col, row)

    @router.get("/overlays/{name}.dzi")
    def overlay_dzi(job_id: str, name: str) -> Response:
        return Response(_overlay(folder(job_id), name).dzi_xml(), media_type="application/xml")

    @router.get("/overlays/{name}_files/{level}/{col}_{row}.png")
    def overlay_tile(job_id: str, name: str, level: int, col: int, row: int) -> Response:
        return tile(job_id, f"overlay:{name}", _overlay(folder(job_id), name), level, col, row)


def _slide(f: ViewerFolder) -> DeepZoom:
    return f.slide_pyramid()


def _overlay(f: ViewerFolder, name: str) -> DeepZoom:
    try:
        return f.overlay_pyramid(name)
    except ViewerDataError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None
    except WsiError as exc:
        raise HTTPException(status_code=500, detail=f"overlay unreadable: {exc}") from None
