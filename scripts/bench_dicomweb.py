"""DICOMweb figures for docs/dicom.md, measured against a real local Orthanc.

1. Reads: level-0 tiles (224 px) of a DICOM WSI read from the local folder (the read limit), from
   the series cache after one WADO-RS series retrieval (retrieval time included), and frame by
   frame over WADO-RS ``/frames`` (each 500 × 500 JPEG frame fetched and decoded).
2. End to end: the same slide analysed from the local folder (``run_pipeline``) and from Orthanc
   (discovered by two polls, retrieved, analysed, results stored back and visible to QIDO-RS),
   alternated ``--repeats`` times; medians reported.

Usage::

    .venv/bin/python scripts/bench_dicomweb.py [--series DIR] [--repeats 2] \
        [--json out/bench/dicomweb.json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.orthanc_server import PASSWORD, USER, start_orthanc  # noqa: E402
from workers.dicomweb import DicomWebClient  # noqa: E402
from workers.jobs import build_context  # noqa: E402
from workers.pacs import PacsWatcher  # noqa: E402
from workers.pipeline import run_pipeline  # noqa: E402
from workers.settings import load_settings  # noqa: E402
from workers.tasks import run_job  # noqa: E402
from wsi import open_slide  # noqa: E402

DEFAULT_SERIES = REPO.parent / "shared" / "data" / "slides" / "dicom" / "cmu-1-small-region"
TILE = 224


def read_tiles(folder: Path) -> tuple[int, float]:
    """Read every level-0 tile of the slide; return (pixels, seconds)."""
    t0 = time.perf_counter()
    n = 0
    with open_slide(folder) as slide:
        w, h = slide.dimensions
        for y in range(0, h - TILE + 1, TILE):
            for x in range(0, w - TILE + 1, TILE):
                tile = np.asarray(slide.read_region((x, y), 0, (TILE, TILE)))
                n += tile.shape[0] * tile.shape[1]
    return n, time.perf_counter() - t0


def _frame(client: DicomWebClient, level0: pydicom.Dataset, index: int) -> np.ndarray:
    data = client.retrieve_frame(
        level0.StudyInstanceUID, level0.SeriesInstanceUID, level0.SOPInstanceUID, index + 1
    )
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def frame_tiles(client: DicomWebClient, level0: pydicom.Dataset, cached: bool) -> tuple[int, float]:
    """Read the same level-0 tiles from WADO-RS frames (TILED_FULL); return (pixels, seconds).

    ``cached=False``: each tile fetches and decodes the frames it overlaps (a reader without a
    frame cache). ``cached=True``: each frame is fetched and decoded once (an unbounded cache).
    """
    fw, fh = int(level0.Columns), int(level0.Rows)
    w, h = int(level0.TotalPixelMatrixColumns), int(level0.TotalPixelMatrixRows)
    across = -(-w // fw)
    cache: dict[int, np.ndarray] = {}
    t0 = time.perf_counter()
    n = 0
    for y in range(0, h - TILE + 1, TILE):
        for x in range(0, w - TILE + 1, TILE):
            tile = np.zeros((TILE, TILE, 3), np.uint8)
            for fy in range(y // fh, (y + TILE - 1) // fh + 1):
                for fx in range(x // fw, (x + TILE - 1) // fw + 1):
                    i = fy * across + fx
                    frame = cache.get(i) if cached else None
                    if frame is None:
                        frame = _frame(client, level0, i)
                        if cached:
                            cache[i] = frame
                    x0, y0 = max(x, fx * fw), max(y, fy * fh)
                    x1, y1 = min(x + TILE, (fx + 1) * fw), min(y + TILE, (fy + 1) * fh)
                    tile[y0 - y : y1 - y, x0 - x : x1 - x] = frame[
                        y0 - fy * fh : y1 - fy * fh, x0 - fx * fw : x1 - fx * fw
                    ]
            n += TILE * TILE
    return n, time.perf_counter() - t0


def settings_for(root: Path, base_url: str) -> Any:
    os.environ["ATC_BENCH_ORTHANC_PASSWORD"] = PASSWORD
    archive = {"name": "orthanc", "base_url": base_url, "username": USER}
    archive["password_env"] = "ATC_BENCH_ORTHANC_PASSWORD"
    overrides = {
        "service": {"output_root": str(root / "out"), "slide_roots": [str(root)]},
        "pacs": {"archives": [archive]},
    }
    return load_settings(environ={}, overrides=overrides)


def end_to_end(series: Path, files: list[Path], work: Path, base_url: str, run: int) -> float:
    """Seconds from 'series stored' to 'results visible in the archive' (in-process job)."""
    ctx = build_context(settings_for(work / f"e2e{run}", base_url))
    watcher = PacsWatcher(ctx, ctx.settings.pacs.archives[0], lambda j: None)
    study = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    t0 = time.perf_counter()
    watcher.poll_once()
    (job_id,) = watcher.poll_once()
    run_job(ctx, job_id)
    with DicomWebClient(ctx.settings.pacs.archives[0], ctx.settings.pacs) as client:
        found = {s.modality for s in client.search_series({"StudyInstanceUID": study})}
    elapsed = time.perf_counter() - t0
    job = ctx.store.get_job(job_id)
    assert job.state == "succeeded" and {"ANN", "SEG", "SR"} <= found, (job.reason, found)
    ctx.store.dispose()
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--series", type=Path, default=DEFAULT_SERIES)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", type=Path, default=REPO / "out" / "bench" / "dicomweb.json")
    args = ap.parse_args()
    files = sorted(args.series.glob("*.dcm"))
    work = Path(tempfile.mkdtemp(prefix="bench-dicomweb-"))
    server = start_orthanc(work / "orthanc")
    try:
        server.upload(files)
        settings = settings_for(work, server.dicomweb)
        size = sum(f.stat().st_size for f in files)
        figures: dict[str, Any] = {"series": str(args.series), "bytes": size}
        with DicomWebClient(settings.pacs.archives[0], settings.pacs) as client:
            (info,) = client.search_series({"Modality": "SM"})
            retrievals = []
            for i in range(5):
                t0 = time.perf_counter()
                client.retrieve_series(info, work / "cache" / f"series{i}")
                retrievals.append(time.perf_counter() - t0)
            retrieve_s = statistics.median(retrievals)
            level0 = max(
                (pydicom.dcmread(f, stop_before_pixels=True) for f in files),
                key=lambda d: int(d.TotalPixelMatrixColumns),
            )
            local_runs, cache_runs, nocache_runs, cached_runs = [], [], [], []
            for _ in range(3):  # alternated, medians: the host is shared
                px, t = read_tiles(args.series)
                local_runs.append(t)
                cache_runs.append(read_tiles(work / "cache" / "series0")[1])
                nocache_runs.append(frame_tiles(client, level0, cached=False)[1])
                cached_runs.append(frame_tiles(client, level0, cached=True)[1])
        local_s, cached_s = statistics.median(local_runs), statistics.median(cache_runs)
        figures["reads"] = {
            "tile_px": TILE,
            "tiles": px // (TILE * TILE),
            "local_mpx_s": round(px / local_s / 1e6, 2),
            "retrieve_s": round(retrieve_s, 3),
            "retrieve_mb_s": round(size / retrieve_s / 1e6, 1),
            "cache_warm_mpx_s": round(px / cached_s / 1e6, 2),
            "cache_incl_retrieve_mpx_s": round(px / (retrieve_s + cached_s) / 1e6, 2),
            "frames_no_cache_mpx_s": round(px / statistics.median(nocache_runs) / 1e6, 2),
            "frames_cached_mpx_s": round(px / statistics.median(cached_runs) / 1e6, 2),
        }
        local, pacs = [], []
        for run in range(args.repeats):
            t0 = time.perf_counter()
            run_pipeline(args.series, work / f"local{run}", settings)
            local.append(time.perf_counter() - t0)
            pacs.append(end_to_end(args.series, files, work, server.dicomweb, run))
        figures["end_to_end"] = {
            "local_s": [round(v, 2) for v in local],
            "pacs_s": [round(v, 2) for v in pacs],
            "ratio_per_pair": [round(p / q, 3) for p, q in zip(pacs, local, strict=True)],
            "ratio_of_medians": round(statistics.median(pacs) / statistics.median(local), 3),
        }
    finally:
        server.stop()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(figures, indent=1))
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
