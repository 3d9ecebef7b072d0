"""Benchmark synthetic slide generation: wall time, CPU time and peak RSS of the process tree.

Usage: python scripts/bench_synth.py --preset large [--workers 2] [--out /tmp/bench_synth]
       python scripts/bench_synth.py --patches   (patch sampler throughput on one core)

RSS is sampled every 0.2 s over this process and all its children (the rendering workers) and
summed, so the reported peak is what the whole generator holds at once. The machine's load
average is printed before and after, because the figures mean little on a contended machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import threading
import time
from pathlib import Path


def _tree_rss_mb(pid: int) -> float:
    total = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status", encoding="ascii") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children", encoding="ascii") as fh:
                    todo.extend(int(c) for c in fh.read().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total / 1024.0


class _Sampler(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, _tree_rss_mb(os.getpid()))
            time.sleep(0.2)


def bench_slide(preset: str, workers: int, out: Path, seed: int) -> dict[str, object]:
    """Generate one slide and return its timing and memory figures."""
    from wsi.synthetic import SynthSpec, generate_slide

    spec = SynthSpec.from_preset(preset, seed=seed, workers=workers)
    sampler = _Sampler()
    load0 = os.getloadavg()
    r0s, r0c = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    sampler.start()
    t0 = time.perf_counter()
    generate_slide(spec, out)
    wall = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join()
    r1s, r1c = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    cpu = (
        r1s.ru_utime
        + r1s.ru_stime
        - r0s.ru_utime
        - r0s.ru_stime
        + r1c.ru_utime
        + r1c.ru_stime
        - r0c.ru_utime
        - r0c.ru_stime
    )
    size_mb = sum(f.stat().st_size for f in out.iterdir()) / 1e6
    info = json.loads((out / "truth.json").read_text())
    return {
        "preset": preset,
        "width": spec.width,
        "height": spec.height,
        "workers": workers,
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "mpx_per_s": round(spec.width * spec.height / 1e6 / wall, 2),
        "peak_rss_tree_mb": round(sampler.peak, 0),
        "output_mb": round(size_mb, 1),
        "mitoses": info["counts"]["mitosis"],
        "macrophages": info["counts"]["macrophage"],
        "load_before": [round(x, 2) for x in load0],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
    }


def bench_patches() -> list[dict[str, object]]:
    """Return patch-sampler throughput (patches per CPU second, one process)."""
    from wsi.synthetic import sample_patches

    rows = []
    for kind, size, mpp in (
        ("mitosis", 128, 0.25),
        ("pattern", 224, 1.0),
        ("necrosis", 256, 2.0),
        ("macrophage", 256, 0.5),
    ):
        sample_patches(kind, 4, size, mpp, seed=0)  # type: ignore[arg-type]
        n = 64
        c0, t0 = time.process_time(), time.perf_counter()
        sample_patches(kind, n, size, mpp, seed=1)  # type: ignore[arg-type]
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
        rows.append(
            {
                "kind": kind,
                "size": size,
                "mpp": mpp,
                "patches_per_cpu_s": round(n / cpu, 1),
                "patches_per_wall_s": round(n / wall, 1),
                "load": [round(x, 2) for x in os.getloadavg()],
            }
        )
    return rows


def main() -> None:
    """Parse arguments and print the figures as JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small", choices=("small", "demo", "large"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench_synth"))
    ap.add_argument("--patches", action="store_true", help="benchmark the patch sampler instead")
    ap.add_argument("--keep", action="store_true", help="keep the generated slide")
    args = ap.parse_args()
    if args.patches:
        print(json.dumps(bench_patches(), indent=1))
        return
    if args.out.exists():
        shutil.rmtree(args.out)
    res = bench_slide(args.preset, args.workers, args.out, args.seed)
    print(json.dumps(res, indent=1))
    if not args.keep:
        shutil.rmtree(args.out)


if __name__ == "__main__":
    main()
