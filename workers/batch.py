"""Batch reanalysis: a glob under a root (or a list of paths) becomes one job per slide.

Expansion is resumable: every slide submitted is recorded as a batch item, so a restarted
expansion skips what is recorded, and a slide already analysed with the same idempotency key
reuses that job (``skipped``) unless the batch forces a rerun.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path, PurePath

from sqlalchemy import select

import wsi
from workers.errors import JobError, PathNotAllowedError, PipelineVersionError
from workers.fingerprint import SLIDE_SUFFIXES, is_dicom_folder, open_target
from workers.jobs import Sender, ServiceContext, resolve_slide_path, submit_slide
from workers.store import Batch, BatchItem, Job

#: Called after each slide of an expansion with (items recorded, total).
ItemCallback = Callable[[int, int], None]


def _is_slide(path: Path) -> bool:
    if path.is_file():
        return path.suffix.lower() in SLIDE_SUFFIXES and not _in_dicom_folder(path)
    return is_dicom_folder(path)


def _in_dicom_folder(path: Path) -> bool:
    return path.suffix.lower() == ".dcm" and is_dicom_folder(path.parent)


def glob_slides(ctx: ServiceContext, root: str, pattern: str) -> tuple[Path, list[Path]]:
    """Return the confined root and the slides matching ``pattern`` under it, sorted.

    Matches whose real path leaves the slide roots (symlinks out) are dropped. A DICOM folder
    counts once (as one of its instances, which OpenSlide opens as the whole series).

    Raises:
        PathNotAllowedError: the root is outside the slide roots, or the glob is absolute or has
            ``..``.
    """
    if PurePath(pattern).is_absolute() or ".." in PurePath(pattern).parts:
        raise PathNotAllowedError(pattern, "the glob must be relative to the root, without '..'")
    real_root = resolve_slide_path(root, ctx.service)
    if not real_root.is_dir():
        raise PathNotAllowedError(root, "the batch root is not a folder")
    found: dict[Path, None] = {}
    for match in sorted(real_root.glob(pattern)):
        candidate = match.parent if _in_dicom_folder(match) else match
        if not _is_slide(candidate):
            continue
        try:
            found[resolve_slide_path(open_target(candidate), ctx.service)] = None
        except JobError:
            continue
    return real_root, list(found)


def create_batch(
    ctx: ServiceContext,
    *,
    root: str | None = None,
    pattern: str | None = None,
    paths: list[str] | None = None,
    force: bool = False,
    pipeline_version: str | None = None,
    resume: bool = False,
) -> Batch:
    """Record a batch (validated, not yet expanded); with ``resume`` reuse the latest same batch.

    Raises:
        PipelineVersionError: ``pipeline_version`` is not the version this service runs.
        PathNotAllowedError, SlideMissingError: a root or path outside the slide roots.
        ValueError: neither a root with a glob nor a list of paths was given.
    """
    if pipeline_version and pipeline_version != ctx.pipeline_version:
        raise PipelineVersionError(
            f"pipeline version {pipeline_version!r} requested; this service runs "
            f"{ctx.pipeline_version!r}"
        )
    if paths:
        confined = [str(resolve_slide_path(p, ctx.service)) for p in paths]
        batch = Batch(paths_json=json.dumps(confined), force=force)
    elif root and pattern:
        real_root, _ = glob_slides(ctx, root, pattern)
        if resume:
            found = ctx.store.find_open_batch(str(real_root), pattern, force, ctx.config_hash)
            if found is not None:
                return found
        batch = Batch(root=str(real_root), pattern=pattern, force=force)
    else:
        raise ValueError("a batch needs a list of paths, or a root and a glob (e.g. '**/*.svs')")
    batch.pipeline_version = ctx.pipeline_version
    batch.config_hash = ctx.config_hash
    ctx.store.add(batch)
    return ctx.store.get_batch(batch.id)


def batch_slides(ctx: ServiceContext, batch: Batch) -> list[Path]:
    """Return the slides of a batch (re-globbing a root batch)."""
    if batch.paths_json:
        return [Path(p) for p in json.loads(batch.paths_json)]
    assert batch.root is not None and batch.pattern is not None
    return glob_slides(ctx, batch.root, batch.pattern)[1]


def _job_of_batch(ctx: ServiceContext, batch_id: str, slide: Path) -> Job | None:
    stmt = select(Job).where(Job.batch_id == batch_id, Job.slide_path == str(slide)).limit(1)
    with ctx.store.session() as s:
        return s.scalars(stmt).first()


def expand_batch(
    ctx: ServiceContext, batch_id: str, send: Sender, on_item: ItemCallback | None = None
) -> int:
    """Submit each slide of the batch not yet recorded; return the number recorded by this call."""
    batch = ctx.store.get_batch(batch_id)
    slides = batch_slides(ctx, batch)
    done = {item.slide_path for item in ctx.store.batch_items(batch_id)}
    ctx.store.update_batch(batch_id, total=len(slides))
    added = 0
    for slide in slides:
        if str(slide) in done:
            continue
        item = BatchItem(batch_id=batch_id, slide_path=str(slide))
        try:
            earlier = _job_of_batch(ctx, batch_id, slide)  # submitted before a crash
            if earlier is not None:
                item.job_id = earlier.id
            else:
                sub = submit_slide(
                    ctx, slide, send, force=batch.force, source="batch", batch_id=batch_id
                )
                item.job_id, item.skipped = sub.job.id, not sub.created
        except (wsi.WsiError, JobError, OSError) as exc:
            item.error = f"{type(exc).__name__}: {exc}"
        ctx.store.add(item)
        added += 1
        done.add(str(slide))
        if on_item is not None:
            on_item(len(done), len(slides))
    ctx.store.update_batch(batch_id, expanded=True)
    return added


def batch_status(ctx: ServiceContext, batch_id: str) -> dict[str, object]:
    """Return the batch as the API shows it: its definition and counts per job state."""
    batch = ctx.store.get_batch(batch_id)
    return {
        "id": batch.id,
        "root": batch.root,
        "glob": batch.pattern,
        "paths": json.loads(batch.paths_json) if batch.paths_json else None,
        "force": batch.force,
        "pipeline_version": batch.pipeline_version,
        "config_hash": batch.config_hash,
        "total": batch.total,
        "expanded": batch.expanded,
        "created_at": batch.created_at,
        "counts": ctx.store.batch_counts(batch_id),
    }
