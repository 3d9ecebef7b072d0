"""The one analysis call the service makes: slide in, report and output files out.

``run_pipeline`` is a plain function (tested in-process) that Celery tasks, the watch folder and
batch reanalysis all call. With a ``work_dir`` it checkpoints per chunk of tiles and resumes after
a crash: chunks already on disk are loaded, not recomputed, and each computed chunk is logged in
``work_dir/chunks.log``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from workers.settings import Settings
from wsi import TileGrid, TileReader, compute_tissue_mask, open_slide
from wsi.io import atomic_write_json

ProgressFn = Callable[[str, int, int], None]
CancelFn = Callable[[], bool]

PIPELINE_VERSION = "0.1.0"


class PipelineCancelled(RuntimeError):
    """The job was cancelled between chunks."""


def _tile_stats(image: np.ndarray) -> tuple[float, float]:
    """Mean optical density and Laplacian variance (focus) of one tile."""
    gray = image.astype(np.float32).mean(axis=-1)
    od = float(-np.log10(np.clip(gray, 1, 255) / 255.0).mean())
    lap = gray[:-2, 1:-1] + gray[2:, 1:-1] + gray[1:-1, :-2] + gray[1:-1, 2:] - 4 * gray[1:-1, 1:-1]
    return od, float(lap.var())


def _run_chunk(reader: TileReader, start: int, stop: int) -> dict[str, np.ndarray]:
    stats = np.zeros((stop - start, 3), dtype=np.float32)
    for k, i in enumerate(range(start, stop)):
        sample = reader.read(i)
        od, focus = _tile_stats(sample["image"])
        stats[k] = (od, focus, 1.0 if sample["ok"] else 0.0)
    return {"stats": stats}


def run_pipeline(
    slide_path: Path,
    out_dir: Path,
    settings: Settings,
    *,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    work_dir: Path | None = None,
) -> dict[str, Any]:
    """Analyse one slide and write ``report.json`` into ``out_dir``; return the report.

    Raises:
        WsiError: the slide cannot be opened or lacks a pixel size.
        PipelineCancelled: ``cancel()`` returned True between chunks.
    """
    t0 = time.time()
    chunk = settings.engine.chunk_tiles
    with open_slide(slide_path, settings=settings.slide) as slide:
        facts = {
            "path": str(slide_path),
            "width": slide.dimensions[0],
            "height": slide.dimensions[1],
            "mpp": slide.mpp,
            "vendor": slide.vendor,
            "objective_power": slide.objective_power,
            "fingerprint": slide.fingerprint,
        }
        mask = compute_tissue_mask(slide, settings.tissue)
        tiling = settings.tiling
        grid = TileGrid.for_slide(
            slide,
            target_mpp=1.0,
            tile_px=tiling.tile_px,
            overlap_px=tiling.overlap_px,
            mask=mask,
            min_tissue=tiling.min_tissue,
        )
    reader = TileReader(slide_path, grid)
    n = len(grid)
    parts: list[np.ndarray] = []
    for k, start in enumerate(range(0, n, chunk)):
        if cancel is not None and cancel():
            raise PipelineCancelled(f"cancelled after {start} of {n} tiles")
        stop = min(n, start + chunk)
        ckpt = work_dir / f"qc-chunk-{k}.npz" if work_dir else None
        if ckpt is not None and ckpt.exists():
            with np.load(ckpt) as data:
                parts.append(data["stats"])
        else:
            result = _run_chunk(reader, start, stop)
            parts.append(result["stats"])
            if work_dir is not None and ckpt is not None:
                from wsi.io import atomic_write

                with atomic_write(ckpt) as fh:
                    np.savez(fh, stats=result["stats"])
                with open(work_dir / "chunks.log", "a", encoding="utf-8") as log:
                    log.write(f"qc {k}\n")
        if progress is not None:
            progress("qc", stop, n)
    reader.close()
    stats = np.concatenate(parts) if parts else np.zeros((0, 3), np.float32)
    report: dict[str, Any] = {
        "schema_version": "1.0",
        "slide": facts,
        "tissue": {"area_mm2": mask.area_mm2, "pen_fraction": mask.pen_fraction},
        "qc": {
            "tiles": n,
            "unreadable_tiles": int((stats[:, 2] == 0).sum()),
            "mean_od": float(stats[:, 0].mean()) if n else 0.0,
        },
        "provenance": {
            "pipeline_version": PIPELINE_VERSION,
            "config_hash": settings.config_hash(),
            "durations_s": {"total": time.time() - t0},
        },
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "report.json", report)
    return report
