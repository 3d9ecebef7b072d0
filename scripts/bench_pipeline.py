"""End-to-end analysis throughput beside the model-only limit, the read limit and a naive baseline.

All figures come from one run on one machine, so their ratios are meaningful even on a noisy host.
The limits replay each analysis's own engine runs (``AnalysisOutput.engine_runs``): the read limit
reads exactly the tiles the analysis read (same grid, level, overlap, tumour-only selection), the
model limit runs the analysis's own model and head on those tiles already in memory. Throughput
is reported in tiles/s (the comparisons) and tissue mm² per second (the stage). Usage::

    .venv/bin/python scripts/bench_pipeline.py --slide out/bench/large/slide.tiff \
        [--analyses pattern,necrosis,mitosis,tam] [--seconds 10] [--json out/bench/pipeline.json]

Without ``--slide`` a synthetic slide of ``--size`` is generated (cached) under ``out/bench``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_read import _read_span, _warm, cpu_description

from models.analyses import EngineRun
from models.device import resolve_device
from models.engine import Engine
from models.registry import create_model, get_spec
from workers.settings import Settings, load_settings
from wsi import TileGrid, TileReader, compute_tissue_mask, open_slide


def ensure_slide(size: str, seed: int) -> Path:
    """A cached synthetic slide under out/bench: a preset name or WIDTHxHEIGHT in level-0 px."""
    from wsi.synthetic import SynthSpec, generate_slide

    folder = Path("out/bench") / f"{size}-{seed}"
    if not (folder / "slide.tiff").exists():
        if "x" in size:
            w, h = (int(v) for v in size.split("x"))
            spec = SynthSpec(seed=seed, width=w, height=h)
        else:
            spec = SynthSpec.from_preset(size, seed=seed)
        generate_slide(spec, folder)
    return folder / "slide.tiff"


def read_limit(slide: Path, run: EngineRun, processes: int, seconds: float) -> float:
    """Tiles/s reading the tiles of ``run`` (its grid, level, overlap) with ``processes``."""
    order = _order(run)
    step = -(-len(order) // processes)  # contiguous spans, as one loader per span would read
    shards = [order[k * step : (k + 1) * step] or order for k in range(processes)]
    if processes == 1:
        t0 = time.perf_counter()
        done = _read_span((str(slide), run.grid, shards[0], seconds))
        return done / (time.perf_counter() - t0)
    with mp.get_context("spawn").Pool(processes) as pool:
        pool.map(_warm, range(processes))
        t0 = time.perf_counter()
        counts = pool.map(_read_span, [(str(slide), run.grid, sh, seconds) for sh in shards])
    return sum(counts) / (time.perf_counter() - t0)


def model_limit(slide: Path, run: EngineRun, settings: Settings, seconds: float) -> float:
    """Tiles/s of the analysis's own forward (model, head, tile statistics) on its own tiles,
    already in memory as uint8, at the engine's batch size and precision."""
    device = resolve_device(settings.engine.device, settings.engine.precision)
    engine = Engine(device, settings.engine)
    net = engine.prepare(run.model)
    batch = settings.engine.batch_size
    order = _order(run)
    reader = TileReader(slide, run.grid)
    picked = (order * batch)[: 2 * batch]
    sample = [reader.read(i)["image"] for i in picked]
    reader.close()
    batches = [torch.from_numpy(np.stack(sample[k : k + batch])) for k in (0, batch)]
    # the per-batch model inputs the analysis gave the engine (e.g. scanned neighbours)
    extras = [
        run.tile_inputs(np.asarray(picked[k : k + batch], dtype=np.int64))
        if run.tile_inputs is not None
        else None
        for k in (0, batch)
    ]

    def step(k: int) -> None:
        engine.forward(
            net, run.spec, batches[k], run.head, tile_stats=run.tile_stats, tile_inputs=extras[k]
        )

    step(0)  # warm-up
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step(done // batch % 2)
        done += batch
    return done / (time.perf_counter() - t0)


def _order(run: EngineRun) -> list[int]:
    """The tiles in the order the engine read them (grid order: neighbours share file tiles)."""
    idx = np.arange(len(run.grid)) if run.indices is None else np.asarray(run.indices)
    return [int(i) for i in idx]


def naive_baseline(slide_path: Path, settings: Settings, seconds: float) -> dict[str, float]:
    """The pattern model the slow way: level-0 read_region, PIL resize, fp32, one tile at a time."""
    spec = get_spec(settings.pattern.model)
    model = create_model(settings.pattern.model).eval()
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    with open_slide(slide_path) as slide:
        mask = compute_tissue_mask(slide)
        grid = TileGrid.for_slide(
            slide,
            target_mpp=spec.input_mpp,
            tile_px=spec.tile_px,
            mask=mask,
            min_tissue=settings.pattern.min_tissue,
        )
        l0_size = round(grid.l0_tile)
        done, t0 = 0, time.perf_counter()
        for i in np.random.default_rng(0).permutation(len(grid)):
            x, y = (int(v) for v in grid.l0_xy[i])
            region = slide.read_region((x, y), 0, (l0_size, l0_size))
            tile = Image.fromarray(region).resize(
                (spec.tile_px, spec.tile_px), Image.Resampling.BILINEAR
            )
            t = torch.from_numpy(np.asarray(tile)).permute(2, 0, 1)[None].float() / 255.0
            with torch.no_grad():
                model((t - mean) / std)
            done += 1
            if time.perf_counter() - t0 > seconds:
                break
        elapsed = time.perf_counter() - t0
    tiles_s = done / elapsed
    frac = float(grid.tissue_fraction.mean())
    return {"tiles_per_s": tiles_s, "tissue_mm2_per_s": tiles_s * grid.tile_area_mm2 * frac}


def end_to_end(slide_path: Path, settings: Settings, analyses: list[str]) -> dict[str, Any]:
    """Run ``analyze_slide`` with ``analyses``; return its timings, tissue area and engine runs."""
    from models.analysis import analyze_slide

    pipeline = settings.pipeline().model_copy(update={"analyses": tuple(analyses)})
    t0 = time.perf_counter()
    result = analyze_slide(slide_path, pipeline)
    return {
        "seconds": time.perf_counter() - t0,
        "timings": result.timings,
        "tissue_mm2": result.report["tissue"]["area_mm2"],
        "runs": {n: out.engine_runs for n, out in result.analyses.items()},
    }


def compare(
    slide: Path, name: str, full: dict[str, Any], settings: Settings, seconds: float
) -> dict[str, Any]:
    """The analysis's pipeline throughput beside the limits of the same tiles, in tiles/s.

    ``engine`` is the engine run alone (reading, decoding and inference overlapped); ``stage`` adds
    the analysis's own work before and after (grids, stitching, polygons, hotspots). The
    shared-core bound ``R·M / (R + M)`` is what a machine reaches when reading and inference
    both need all its cores and never wait for each other.
    """
    runs: list[EngineRun] = full["runs"][name]
    tiles = sum(r.stats.n_tiles for r in runs)
    engine_s = sum(r.stats.seconds for r in runs)
    stage_s = float(full["timings"][name])
    procs = os.cpu_count() or 1
    read_1 = read_all = model = 0.0
    for r in runs:  # several runs (none here yet) add their times per tile
        share = r.stats.n_tiles / max(tiles, 1)
        read_1 += share / read_limit(slide, r, 1, seconds)
        read_all += share / read_limit(slide, r, procs, seconds)
        model += share / model_limit(slide, r, settings, seconds)
    read_1, read_all, model = 1 / read_1, 1 / read_all, 1 / model
    slower = min(read_all, model)
    shared = read_all * model / (read_all + model)
    return {
        "analysis": name,
        "tiles": tiles,
        "stage_s": stage_s,
        "engine_s": engine_s,
        "stage_mm2_per_s": full["tissue_mm2"] / stage_s,
        "engine_tiles_per_s": tiles / engine_s,
        "stage_tiles_per_s": tiles / stage_s,
        "read_tiles_per_s_1proc": read_1,
        "read_tiles_per_s": read_all,
        "model_tiles_per_s": model,
        "shared_core_bound": shared,
        "engine_vs_slower": tiles / engine_s / slower,
        "stage_vs_slower": tiles / stage_s / slower,
        "engine_vs_shared": tiles / engine_s / shared,
    }


def _median_row(rows: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    """Median of each figure over repeated runs, plus the range of the engine ratio."""
    out: dict[str, Any] = {"analysis": rows[0]["analysis"], "repeats": len(rows)}
    for k, v in rows[0].items():
        if isinstance(v, float | int) and k != "analysis":
            out[k] = float(np.median([r[k] for r in rows]))
    ratios = [r["engine_vs_slower"] for r in rows]
    out["engine_vs_slower_range"] = (min(ratios), max(ratios))
    return out


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slide", type=Path)
    parser.add_argument("--size", default="8192x8192", help="preset name or WIDTHxHEIGHT")
    parser.add_argument("--seed", type=int, default=4242)
    parser.add_argument("--analyses", default="pattern,necrosis,mitosis,tam")
    parser.add_argument("--seconds", type=float, default=10.0, help="per limit measurement")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--repeat", type=int, default=1, help="runs; medians are printed")
    args = parser.parse_args()
    settings = load_settings()
    slide = args.slide or ensure_slide(args.size, args.seed)
    names = [a for a in args.analyses.split(",") if a]
    repeats: list[list[dict[str, Any]]] = []
    for _ in range(args.repeat):  # pipeline and limits alternate, so drift hits both alike
        full = end_to_end(slide, settings, names)
        repeats.append(
            [compare(slide, n, full, settings, args.seconds) for n in names if full["runs"].get(n)]
        )
    rows = [_median_row(rs) for rs in zip(*repeats, strict=True)]
    tissue = full["tissue_mm2"]
    naive = naive_baseline(slide, settings, args.seconds) if "pattern" in names else None
    device = resolve_device(settings.engine.device, settings.engine.precision)
    print(f"CPU: {cpu_description()}; device {device.describe()}; slide {slide}")
    print(
        f"tissue {tissue:.2f} mm²; all analyses {full['seconds']:.1f} s "
        f"({tissue / full['seconds']:.3f} mm²/s); stages {json.dumps(full['timings'])}\n"
    )
    print(
        "| analysis | tiles | stage s | engine s | tissue mm²/s (stage) | engine tiles/s | "
        f"read limit tiles/s (1 / {os.cpu_count()} proc) | model limit tiles/s | "
        "shared-core bound | engine ÷ slower limit (range) | stage ÷ slower limit | "
        "engine ÷ shared-core bound |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['analysis']} | {r['tiles']:.0f} | {r['stage_s']:.1f} | {r['engine_s']:.1f} | "
            f"{r['stage_mm2_per_s']:.2f} | {r['engine_tiles_per_s']:.1f} | "
            f"{r['read_tiles_per_s_1proc']:.0f} / {r['read_tiles_per_s']:.0f} | "
            f"{r['model_tiles_per_s']:.1f} | {r['shared_core_bound']:.1f} | "
            f"{r['engine_vs_slower']:.2f} ({r['engine_vs_slower_range'][0]:.2f}–"
            f"{r['engine_vs_slower_range'][1]:.2f}) | {r['stage_vs_slower']:.2f} | "
            f"{r['engine_vs_shared']:.2f} |"
        )
    if naive is not None:
        pat = next(r for r in rows if r["analysis"] == "pattern")
        print(
            f"\nnaive baseline (pattern): {naive['tissue_mm2_per_s']:.3f} mm²/s; pipeline is "
            f"{pat['stage_mm2_per_s'] / naive['tissue_mm2_per_s']:.1f}× faster"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "cpu": cpu_description(),
                    "device": device.describe(),
                    "slide": str(slide),
                    "full": {k: v for k, v in full.items() if k != "runs"},
                    "rows": rows,
                    "repeats": repeats,
                    "naive": naive,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
