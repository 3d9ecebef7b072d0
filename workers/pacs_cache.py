"""The bounded local cache of retrieved DICOM series, and the worker's side of a PACS job.

A series lives in ``<cache>/<archive>/<study uid>/<series uid>/`` as the ``.dcm`` files WADO-RS
returned (plus a hidden ``.atc-used`` stamp): a DICOM series folder OpenSlide opens like any other.
The path alone names the archive, study and series, so a job whose series was evicted is
retrieved again by whichever worker runs it. Above ``pacs.cache_max_bytes`` the least recently
used series are deleted (never the one just retrieved).
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from workers.dicomweb import DicomWebClient, SeriesInfo
from workers.errors import PathNotAllowedError
from workers.jobs import ServiceContext
from workers.pacs_settings import PacsSettings
from workers.store import Job
from wsi.slide import is_dicom_folder

log = logging.getLogger(__name__)

#: ``Job.source`` of jobs whose slide comes from a DICOMweb archive.
PACS_SOURCE = "pacs"
_STAMP = ".atc-used"


@dataclass(frozen=True)
class SeriesRef:
    """Where a cached series comes from.

    Attributes:
        archive: the archive's configured name.
        study_uid: Study Instance UID.
        series_uid: Series Instance UID.
    """

    archive: str
    study_uid: str
    series_uid: str

    def info(self) -> SeriesInfo:
        """A ``SeriesInfo`` enough for retrieval."""
        return SeriesInfo(self.study_uid, self.series_uid, "SM", None)


def cache_root(ctx: ServiceContext) -> Path:
    """The cache folder (resolved)."""
    return ctx.settings.pacs.resolved_cache_dir(ctx.service.output_root).resolve()


def series_path(ctx: ServiceContext, ref: SeriesRef) -> Path:
    """Return the cache folder of a series (it may not exist yet)."""
    return cache_root(ctx) / ref.archive / ref.study_uid / ref.series_uid


def series_ref(ctx: ServiceContext, path: Path) -> SeriesRef:
    """Return the series a cache path names.

    Raises:
        PathNotAllowedError: the path is not ``<cache>/<archive>/<study>/<series>``.
    """
    try:
        parts = Path(path).resolve().relative_to(cache_root(ctx)).parts
    except ValueError:
        parts = ()
    if len(parts) != 3:
        raise PathNotAllowedError(path, f"not a series folder of the PACS cache {cache_root(ctx)}")
    return SeriesRef(*parts)


def folder_bytes(folder: Path) -> int:
    """Total size of the files in ``folder``, bytes."""
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def _touch(folder: Path) -> None:
    (folder / _STAMP).touch()


def _last_used(folder: Path) -> float:
    stamp = folder / _STAMP
    return stamp.stat().st_mtime if stamp.exists() else folder.stat().st_mtime


def evict(root: Path, max_bytes: int, keep: Path | None = None) -> list[Path]:
    """Delete least-recently-used series folders until the cache holds at most ``max_bytes``.

    Returns:
        The deleted folders.
    """
    folders = [p for p in root.glob("*/*/*") if p.is_dir() and not p.name.startswith(".")]
    sizes = {p: folder_bytes(p) for p in folders}
    total = sum(sizes.values())
    deleted = []
    for folder in sorted(folders, key=_last_used):
        if total <= max_bytes:
            break
        if keep is not None and folder == keep:
            continue
        shutil.rmtree(folder, ignore_errors=True)
        total -= sizes[folder]
        deleted.append(folder)
        log.info("PACS cache: evicted %s (%d bytes)", folder, sizes[folder])
    return deleted


def ensure_series(ctx: ServiceContext, ref: SeriesRef) -> Path:
    """Return the series' cache folder, retrieving it (WADO-RS, streamed) when absent.

    Raises:
        PacsError: retrieval failed (unreachable after retries, 401/403, series gone).
    """
    pacs: PacsSettings = ctx.settings.pacs
    folder = series_path(ctx, ref)
    if is_dicom_folder(folder):
        _touch(folder)
        return folder
    archive = pacs.archive(ref.archive)
    t0 = time.monotonic()
    with DicomWebClient(archive, pacs) as client:
        files = client.retrieve_series(ref.info(), folder)
    _touch(folder)
    size = sum(f.stat().st_size for f in files)
    log.info(
        "PACS %s: retrieved series %s (%d instances, %d bytes) in %.2f s",
        ref.archive,
        ref.series_uid,
        len(files),
        size,
        time.monotonic() - t0,
    )
    evict(cache_root(ctx), pacs.cache_max_bytes, keep=folder)
    return folder


def prepare_job_slide(ctx: ServiceContext, job: Job) -> Path:
    """Return the slide path a job analyses, retrieving a PACS series into the cache first."""
    path = Path(job.slide_path)
    if job.source != PACS_SOURCE:
        return path
    return ensure_series(ctx, series_ref(ctx, path))


def publish_results(ctx: ServiceContext, job: Job) -> int:
    """STOW-RS the job's ``dicom/*.dcm`` back to the series' archive; return how many.

    Raises:
        StowRejectedError: the archive refused some objects.
        PacsUnreachableError, PacsAuthError: as for any request.
    """
    if job.source != PACS_SOURCE:
        return 0
    ref = series_ref(ctx, Path(job.slide_path))
    archive = ctx.settings.pacs.archive(ref.archive)
    files = sorted((Path(job.out_dir) / "dicom").glob("*.dcm"))
    if not archive.store_results or not files:
        return 0
    with DicomWebClient(archive, ctx.settings.pacs) as client:
        client.store(files)
    log.info("PACS %s: stored %d result objects of job %s", ref.archive, len(files), job.id)
    return len(files)
