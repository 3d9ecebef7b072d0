"""End-to-end analysis throughput beside the model-only limit, the read limit and a naive baseline.

All figures come from one run on one machine, so their ratios are meaningful even on a noisy host.
Throughput is reported as tissue mm² per second (and tiles/s). Usage::

    .venv/bin/python scripts/bench_pipeline.py --slide out/bench/large/slide.tiff \
        [--analyses pattern,necrosis,mitosis,tam] [--seconds 10] [--json out/bench/pipeline.json]

Without ``--slide`` a synthetic slide of ``--size`` is generated (cached) under ``out/bench``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_read import Profile, cpu_description, default_profiles, measure

from models.device import resolve_device
from models.engine import Engine
from models.registry import create_model, get_spec
from workers.settings import Settings, load_settings
from wsi import TileGrid, compute_tissue_mask, open_slide


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


def model_limit(settings: Settings, model_name: str, tile_px: int, seconds: float) -> float:
    """Forward passes on uint8 tiles already in memory: tiles/s at the engine's batch/precision."""
    device = resolve_device(settings.engine.device, settings.engine.precision)
    engine = Engine(device, settings.engine)
    spec = get_spec(model_name)
    model = engine.prepare(create_model(model_name))
    batch = settings.engine.batch_size
    images = torch.randint(0, 255, (batch, tile_px, tile_px, 3), dtype=torch.uint8)

    def head(out: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": out.flatten(1)[:, :1]}

    engine.forward(model, spec, images, head)  # warm-up
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        engine.forward(model, spec, images, head)
        done += batch
    return done / (time.perf_counter() - t0)


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
            tile = Image.fromarray(region).resize((spec.tile_px, spec.tile_px), Image.BILINEAR)
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
    """Run ``analyze_slide`` with ``analyses``; return its timings and tissue area."""
    from models.analysis import analyze_slide

    pipeline = settings.pipeline().model_copy(update={"analyses": tuple(analyses)})
    t0 = time.perf_counter()
    result = analyze_slide(slide_path, pipeline)
    return {
        "seconds": time.perf_counter() - t0,
        "timings": result.timings,
        "tissue_mm2": result.report["tissue"]["area_mm2"],
    }


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slide", type=Path)
    parser.add_argument("--size", default="8192x8192", help="preset name or WIDTHxHEIGHT")
    parser.add_argument("--seed", type=int, default=4242)
    parser.add_argument("--analyses", default="pattern,necrosis,mitosis,tam")
    parser.add_argument("--seconds", type=float, default=10.0, help="per limit measurement")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    settings = load_settings()
    slide = args.slide or ensure_slide(args.size, args.seed)
    names = [a for a in args.analyses.split(",") if a]
    profiles: dict[str, Profile] = {p.name: p for p in default_profiles()}
    workers = max(1, settings.engine.resolved_workers())

    full = end_to_end(slide, settings, names)
    tissue = full["tissue_mm2"]
    rows = []
    for name in names:
        prof = profiles[name]
        model_name = getattr(settings, name).model
        read = measure(str(slide), prof, workers, args.seconds)
        model_tiles_s = model_limit(settings, model_name, prof.tile_px, args.seconds)
        tile_mm2 = (prof.tile_px * prof.mpp / 1000) ** 2
        frac = read["tissue_mm2_per_s"] / max(read["tiles_per_s"] * tile_mm2, 1e-12)
        model_mm2_s = model_tiles_s * tile_mm2 * frac
        stage_s = full["timings"].get(name, float("nan"))
        rows.append(
            {
                "analysis": name,
                "stage_s": stage_s,
                "pipeline_mm2_per_s": tissue / stage_s,
                "read_mm2_per_s": read["tissue_mm2_per_s"],
                "model_mm2_per_s": model_mm2_s,
                "ratio_vs_slower_limit": (tissue / stage_s)
                / min(read["tissue_mm2_per_s"], model_mm2_s),
            }
        )
    naive = naive_baseline(slide, settings, args.seconds) if "pattern" in names else None
    device = resolve_device(settings.engine.device, settings.engine.precision)
    print(f"CPU: {cpu_description()}; device {device.describe()}; slide {slide}")
    print(
        f"tissue {tissue:.2f} mm²; all analyses {full['seconds']:.1f} s "
        f"({tissue / full['seconds']:.3f} mm²/s); stages {json.dumps(full['timings'])}\n"
    )
    print(
        "| analysis | stage s | pipeline mm²/s | read limit mm²/s | model limit mm²/s | "
        "pipeline ÷ slower limit |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['analysis']} | {r['stage_s']:.1f} | {r['pipeline_mm2_per_s']:.3f} | "
            f"{r['read_mm2_per_s']:.3f} | {r['model_mm2_per_s']:.3f} | "
            f"{r['ratio_vs_slower_limit']:.2f} |"
        )
    if naive is not None:
        pat = next(r for r in rows if r["analysis"] == "pattern")
        print(
            f"\nnaive baseline (pattern): {naive['tissue_mm2_per_s']:.3f} mm²/s; pipeline is "
            f"{pat['pipeline_mm2_per_s'] / naive['tissue_mm2_per_s']:.1f}× faster"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "cpu": cpu_description(),
                    "device": device.describe(),
                    "slide": str(slide),
                    "full": full,
                    "rows": rows,
                    "naive": naive,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
