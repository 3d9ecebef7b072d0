"""Measure the read limit: OpenSlide tile reads per second and tissue mm² per second.

For each analysis, tiles are read at the level, µm/px and tile size that analysis reads (taken from
its registered model and settings), over the slide's tissue, by one process and by one process per
core, side by side in one run. Usage::

    .venv/bin/python scripts/bench_read.py --slide out/bench/large/slide.tiff [--seconds 8]

Prints a Markdown table (and ``--json`` writes the figures). Nothing here imports torch except the
registry lookup of each model's input µm/px and tile size.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from wsi import TileGrid, TileReader, compute_tissue_mask, open_slide


@dataclass(frozen=True)
class Profile:
    """What one analysis reads: µm/px and tile edge in target pixels."""

    name: str
    mpp: float
    tile_px: int


def default_profiles() -> list[Profile]:
    """The read profile of each analysis, from the registry and the default settings."""
    from models.registry import get_spec
    from workers.settings import load_settings

    s = load_settings()
    pattern = get_spec(s.pattern.model)
    necrosis = get_spec(s.necrosis.model)
    mitosis = get_spec(s.mitosis.model)
    tam = get_spec(s.tam.model)
    return [
        Profile("pattern", pattern.input_mpp, pattern.tile_px),
        Profile("necrosis", necrosis.input_mpp, necrosis.tile_px),
        Profile("mitosis", mitosis.input_mpp, s.mitosis.tile_px),
        Profile("tam", tam.input_mpp, s.tam.tile_px),
    ]


def _read_span(args: tuple[str, TileGrid, list[int], float]) -> int:
    path, grid, order, seconds = args
    reader = TileReader(path, grid)
    reader.read(order[0])  # open the handle before the clock starts
    done = 0
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end:  # small grids are read several times over
        for i in order:
            reader.read(i)
            done += 1
            if time.perf_counter() > t_end:
                break
    reader.close()
    return done


def _warm(_: int) -> int:
    import wsi.tiling  # noqa: F401  (imports happen before the clock starts)

    return 0


def measure(path: str, profile: Profile, processes: int, seconds: float) -> dict[str, float]:
    """Read tiles of ``profile`` over tissue for about ``seconds`` with ``processes`` workers."""
    with open_slide(path) as slide:
        mask = compute_tissue_mask(slide)
        grid = TileGrid.for_slide(
            slide, target_mpp=profile.mpp, tile_px=profile.tile_px, mask=mask, min_tissue=0.1
        )
    rng = np.random.default_rng(0)
    order = rng.permutation(len(grid)).tolist()
    shards = [order[k::processes] for k in range(processes)]
    t0 = time.perf_counter()
    if processes == 1:
        counts = [_read_span((path, grid, shards[0], seconds))]
    else:
        with mp.get_context("spawn").Pool(processes) as pool:
            pool.map(_warm, range(processes))
            t0 = time.perf_counter()
            counts = pool.map(_read_span, [(path, grid, sh, seconds) for sh in shards])
    elapsed = time.perf_counter() - t0
    tiles = sum(counts)
    tissue_frac = float(grid.tissue_fraction.mean()) if len(grid) else 0.0
    tiles_s = tiles / elapsed
    return {
        "tiles": tiles,
        "grid_tiles": len(grid),
        "level": grid.level,
        "residual_scale": grid.residual_scale,
        "tiles_per_s": tiles_s,
        "tissue_mm2_per_s": tiles_s * grid.tile_area_mm2 * tissue_frac,
    }


def cpu_description() -> str:
    """CPU model and the vector extensions that matter for inference."""
    model, flags = platform.processor() or "unknown CPU", ""
    try:
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            if line.startswith("model name") and model in ("unknown CPU", "", "x86_64"):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = line
                break
    except OSError:
        pass
    ext = [e for e in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f" {e}" in flags]
    return f"{model} ({os.cpu_count()} cores; {', '.join(ext) or 'no AVX2'})"


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slide", required=True, help="slide to read (a large synthetic slide)")
    parser.add_argument("--seconds", type=float, default=8.0, help="time per measurement")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    rows = []
    for profile in default_profiles():
        one = measure(args.slide, profile, 1, args.seconds)
        many = measure(args.slide, profile, args.processes, args.seconds)
        rows.append({"profile": asdict(profile), "one_process": one, "per_core": many})
    print(f"CPU: {cpu_description()}\n")
    print(
        "| analysis | µm/px | tile px | level | tiles/s (1 proc) | tiles/s "
        f"({args.processes} proc) | tissue mm²/s ({args.processes} proc) |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        p, a, b = r["profile"], r["one_process"], r["per_core"]
        print(
            f"| {p['name']} | {p['mpp']} | {p['tile_px']} | {a['level']} | "
            f"{a['tiles_per_s']:.0f} | {b['tiles_per_s']:.0f} | {b['tissue_mm2_per_s']:.2f} |"
        )
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_description(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
