"""Profile one cell analysis pass (mitosis or TAM) on a generated slide, with oracle regions.

The tumour and necrosis regions come from the slide's truth, so only the pass itself is timed:
tiles per second and the functions that take the time (cProfile, sorted by own time). This is
the profile behind the changes recorded in ``docs/benchmarks.md``. Usage::

    .venv/bin/python scripts/profile_pass.py out/eval-cells/val-slide-6000001 [--analysis mitosis]
        [--top 15] [--repeat 2]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import time
from pathlib import Path

import torch
from bench_read import cpu_description

from models.cells.evaluation import (
    oracle_necrosis_output,
    oracle_pattern_output,
    run_cell_analyses,
)
from models.settings import PipelineSettings
from wsi.synthetic.truth import load_truth


def main() -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="a generated slide folder (slide.tiff + truth)")
    ap.add_argument("--analysis", default="mitosis", choices=("mitosis", "tam"))
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--repeat", type=int, default=2, help="runs; the fastest is reported")
    args = ap.parse_args()
    truth = load_truth(args.folder)
    pattern = oracle_pattern_output(truth.label_map, truth.label_l0_per_px, truth.mpp)
    necrosis = oracle_necrosis_output(truth.label_map, truth.label_l0_per_px)
    settings = PipelineSettings(engine={"num_workers": 0, "device": "cpu"})  # type: ignore[arg-type]
    best = None
    for _ in range(args.repeat):
        prof = cProfile.Profile()
        t0 = time.perf_counter()
        prof.enable()
        out = run_cell_analyses(
            args.folder / "slide.tiff", settings, pattern, (args.analysis,), necrosis
        )[args.analysis]
        prof.disable()
        seconds = time.perf_counter() - t0
        if best is None or seconds < best[0]:
            best = (seconds, prof, out)
    assert best is not None
    seconds, prof, out = best
    tiles = int(out.qc.get("tiles", 0))
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(args.top)
    print(buf.getvalue())
    print(
        json.dumps(
            {
                "analysis": args.analysis,
                "slide": str(args.folder),
                "cpu": cpu_description(),
                "torch_threads": torch.get_num_threads(),
                "tiles": tiles,
                "seconds": round(seconds, 2),
                "tiles_per_s": round(tiles / seconds, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
