"""Peak RSS of a full analysis for slides of growing size: memory must stay flat.

Each size is a synthetic slide (generated once, cached under out/bench) analysed in a fresh child
process whose peak RSS is read from the kernel (``ru_maxrss``). Usage::

    .venv/bin/python scripts/bench_memory.py [--sizes 10000x7500,40000x30000,80000x60000]
        [--analyses pattern,necrosis,mitosis,tam] [--json out/bench/memory.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CHILD = """
import json, resource, sys, time
from models.analysis import analyze_slide
from workers.settings import load_settings
s = load_settings().pipeline()
s = s.model_copy(update={"analyses": tuple(sys.argv[2].split(","))})
t0 = time.perf_counter()
r = analyze_slide(sys.argv[1], s)
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
out = {"seconds": time.perf_counter() - t0, "tissue_mm2": r.report["tissue"]["area_mm2"],
       "timings": {k: round(v, 1) for k, v in r.timings.items()}}
print(json.dumps({"peak_rss_mb": peak_mb, **out}))
"""


def ensure_slide(width: int, height: int, seed: int) -> Path:
    """A cached synthetic slide of the given level-0 size."""
    from wsi.synthetic import SynthSpec, generate_slide

    folder = Path("out/bench") / f"mem-{width}x{height}-{seed}"
    if not (folder / "slide.tiff").exists():
        generate_slide(SynthSpec(seed=seed, width=width, height=height), folder)
    return folder / "slide.tiff"


def run_one(slide: Path, analyses: str) -> dict[str, Any]:
    """Analyse ``slide`` in a child process; return its peak RSS (MB), time and tissue area."""
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(slide), analyses],
        capture_output=True,
        text=True,
        check=True,
    )
    stats: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return stats


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000x7500,40000x30000,80000x60000")
    parser.add_argument(
        "--slides", default="", help="comma-separated existing slides to measure as well"
    )
    parser.add_argument("--analyses", default="pattern,necrosis,mitosis,tam")
    parser.add_argument("--seed", type=int, default=99)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    jobs: list[tuple[str, Path | None]] = [(s, None) for s in args.sizes.split(",") if s]
    jobs += [(p, Path(p)) for p in args.slides.split(",") if p]
    for size, path in jobs:
        t0 = time.perf_counter()
        if path is None:
            w, h = (int(v) for v in size.lower().split("x"))
            path = ensure_slide(w, h, args.seed)
        else:
            from wsi.slide import open_slide

            with open_slide(path) as sl:
                size = "x".join(str(d) for d in sl.dimensions)
        gen_s = time.perf_counter() - t0
        row: dict[str, Any] = {"size": size, "slide": str(path), "generate_s": gen_s}
        row |= run_one(path, args.analyses)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n| slide (px) | tissue mm² | analysis s | peak RSS MB |\n|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['size']} | {r['tissue_mm2']:.1f} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} |"
        )
    peaks = [r["peak_rss_mb"] for r in rows]
    print(f"\nspread of peaks: {100 * (max(peaks) - min(peaks)) / min(peaks):.1f}% of the smallest")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
