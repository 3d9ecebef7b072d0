"""Side by side: atc-wsi's four analyses vs. one TIAToolbox ResNet-18 pass, in seconds per mm².

Both run on the same slide, one after the other, alternating for ``--rounds`` rounds, each in a
fresh process (imports are outside both timings):

* **TIAToolbox**: the comparison kit's ``tia_bench.py`` (``../shared/bench``; see its README for
  the separate venv, which pins its own torch and must stay outside this project's environment):
  ``PatchPredictor.run`` with a ResNet-18, 224 px patches at 0.5 µm/px on its own tissue mask,
  fp32. Seconds per mm² = ``total_s`` / (patches × (224 × 0.5 µm)²).
* **atc-wsi**: ``atc-wsi analyze --device cpu`` (pattern, necrosis, mitosis, TAM at the shipped
  configuration; precision ``auto``: bf16 on a CPU with AMX, fp32 elsewhere, see
  ``models/device.py``). Seconds per mm² = ``provenance.durations_s.total`` /
  ``tissue.area_mm2`` of its report. ``--precision fp32 auto`` runs it once per precision in
  every round (``ATC_PRECISION``), so the precisions are compared side by side too.

The ratio is TIAToolbox's s/mm² divided by atc-wsi's (> 1: atc-wsi's four analyses cost less per
mm² than TIAToolbox's one network). Figures go to ``docs/benchmarks.md``; CI does not run this.
Usage::

    .venv/bin/python scripts/bench_vs_tiatoolbox.py --tia-python /work/tia-venv/bin/python \
        [--slide out/bench/demo/slide.tiff] [--rounds 2] [--json out/bench/vs_tia.json]

Without ``--slide`` the ``make demo`` synthetic slide (preset ``demo``, seed 2026, H&E) is made
(cached) under ``out/bench/demo``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
KIT = ROOT.parent / "shared" / "bench"


def parse_result_line(stdout: str) -> dict[str, Any]:
    """Return the dict of the last ``RESULT {json}`` line of a kit script's stdout.

    Raises:
        ValueError: there is no RESULT line.
    """
    for line in reversed(stdout.splitlines()):
        if line.startswith("RESULT "):
            out: dict[str, Any] = json.loads(line[len("RESULT ") :])
            return out
    raise ValueError("no 'RESULT {json}' line in the output (did the kit script fail?)")


def tia_s_per_mm2(result: dict[str, Any], tile_px: int, mpp: float) -> tuple[float, float]:
    """Return (seconds per mm², mm² covered) of a ``tia_bench.py`` result.

    The area is the patches it predicted, each ``tile_px`` × ``mpp`` µm square.
    """
    tiles = int(result["tiles"])
    if tiles <= 0:
        raise ValueError(f"TIAToolbox predicted {tiles} patches; nothing to compare")
    area_mm2 = tiles * (tile_px * mpp / 1000.0) ** 2
    return float(result["total_s"]) / area_mm2, area_mm2


def atc_s_per_mm2(report: dict[str, Any]) -> tuple[float, float]:
    """Return (seconds per mm², tissue mm²) of an atc-wsi ``report.json``.

    The time is the analysis total (``provenance.durations_s.total``: tissue mask and all
    analyses, without process start-up or writing the outputs).
    """
    area = float(report["tissue"]["area_mm2"])
    if area <= 0:
        raise ValueError(f"the slide has {area} mm² of tissue; nothing to compare")
    return float(report["provenance"]["durations_s"]["total"]) / area, area


def summarise(rounds: list[dict[str, Any]], atc_key: str = "atc_s_per_mm2") -> dict[str, Any]:
    """Medians and ranges over rounds of ``{"tia_s_per_mm2": …, atc_key: …}``.

    ``ratio`` is TIAToolbox's median s/mm² over atc-wsi's (> 1: atc-wsi costs less per mm²);
    ``ratio_per_round`` pairs each round's two runs.
    """
    if not rounds:
        raise ValueError("no rounds to summarise")
    tia = [r["tia_s_per_mm2"] for r in rounds]
    atc = [r[atc_key] for r in rounds]
    med_tia, med_atc = statistics.median(tia), statistics.median(atc)
    return {
        "rounds": len(rounds),
        "tia_s_per_mm2": round(med_tia, 3),
        "tia_s_per_mm2_range": [round(min(tia), 3), round(max(tia), 3)],
        "atc_s_per_mm2": round(med_atc, 3),
        "atc_s_per_mm2_range": [round(min(atc), 3), round(max(atc), 3)],
        "ratio": round(med_tia / med_atc, 3),
        "ratio_per_round": [round(t / a, 3) for t, a in zip(tia, atc, strict=True)],
    }


def ensure_demo_slide(folder: Path) -> Path:
    """Return the `make demo` synthetic slide (preset demo, seed 2026, H&E), made once."""
    from workers.cli_demo import _ensure_synthetic

    return _ensure_synthetic(folder, "demo", 2026, "he")


def run_tia(
    python: str, kit: Path, slide: Path, *, tile_px: int, mpp: float, workers: int
) -> dict[str, Any]:
    """Run the kit's ``tia_bench.py`` once in its own venv and return its RESULT dict."""
    cmd = [
        python,
        str(kit / "tia_bench.py"),
        str(slide),
        "--tile",
        str(tile_px),
        "--mpp",
        str(mpp),
        "--max-tiles",
        "0",
        "--batch-size",
        "32",
        "--workers",
        str(workers),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)  # the TIAToolbox venv must not import this project
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"tia_bench.py failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return parse_result_line(proc.stdout)


def run_atc(
    slide: Path, out: Path, config: Path | None, root: Path = ROOT, precision: str = "auto"
) -> dict[str, Any]:
    """Run ``atc-wsi analyze --device cpu`` once (a fresh process) and return its report.

    ``root`` is the checkout whose code runs (another one gives a before/after comparison);
    ``precision`` goes in as ``ATC_PRECISION`` (``auto``, ``fp32`` or ``bf16``).
    """
    entry = "import sys; from workers.cli import main; sys.argv[0] = 'atc-wsi'; main()"
    cmd = [sys.executable, "-c", entry, "analyze", str(slide), "--out", str(out), "--device", "cpu"]
    if config is not None:
        cmd += ["--config", str(config)]
    env = {**os.environ, "PYTHONPATH": str(root), "ATC_PRECISION": precision}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, cwd=root)
    if proc.returncode != 0:
        raise RuntimeError(f"atc-wsi analyze failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    report: dict[str, Any] = json.loads((out / "report.json").read_text())
    return report


def one_round(args: argparse.Namespace, slide: Path, k: int) -> dict[str, Any]:
    """Run TIAToolbox and atc-wsi at each precision once; the order is reversed on odd rounds.

    atc-wsi figures are keyed ``…@precision``; the first precision's also without the suffix.
    """
    row: dict[str, Any] = {"round": k + 1, "load_before": [round(v, 2) for v in os.getloadavg()]}
    runs = ["tia", *(f"atc@{p}" for p in args.precision)]
    for which in runs if k % 2 == 0 else runs[::-1]:
        t0, cpu0 = time.perf_counter(), _children_cpu_s()
        if which == "tia":
            res = run_tia(
                args.tia_python, args.kit, slide, tile_px=224, mpp=0.5, workers=args.tia_workers
            )
            row["tia_s_per_mm2"], row["tia_mm2"] = tia_s_per_mm2(res, 224, 0.5)
            row["tia_total_s"], row["tia_tiles"] = res["total_s"], res["tiles"]
        else:
            prec = which.split("@", 1)[1]
            with tempfile.TemporaryDirectory(prefix="vs-tia-") as tmp:
                rep = run_atc(slide, Path(tmp) / "out", args.config, args.atc_root, prec)
            row[f"atc_s_per_mm2@{prec}"], row["atc_mm2"] = atc_s_per_mm2(rep)
            row[f"atc_durations_s@{prec}"] = rep["provenance"]["durations_s"]
            row[f"atc_device@{prec}"] = rep["provenance"].get("device")
            mit = rep.get("mitosis", {})
            row[f"atc_counts@{prec}"] = {
                "mitoses": mit.get("count_total"),
                "macrophages": rep.get("tam", {}).get("macrophages"),
            }
        row[f"{which}_process_s"] = round(time.perf_counter() - t0, 2)
        # user + system CPU of the whole process tree (loader workers included): on a shared
        # machine far steadier than wall time, though it also counts start-up and writing
        row[f"{which}_process_cpu_s"] = round(_children_cpu_s() - cpu0, 2)
    first = args.precision[0]
    for key in ("atc_s_per_mm2", "atc_durations_s", "atc_counts"):
        row[key] = row[f"{key}@{first}"]
    row["atc_process_cpu_s"] = row[f"atc@{first}_process_cpu_s"]
    row["load_after"] = [round(v, 2) for v in os.getloadavg()]
    return row


def _children_cpu_s() -> float:
    """User + system CPU seconds of all finished child processes (and their children)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def main() -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slide", type=Path, help="slide to use (default: the demo slide)")
    ap.add_argument("--demo-folder", type=Path, default=ROOT / "out" / "bench" / "demo")
    ap.add_argument(
        "--tia-python",
        default=os.environ.get("TIA_PYTHON", str(Path.home() / "tia-venv" / "bin" / "python")),
        help="python of the TIAToolbox venv (env TIA_PYTHON)",
    )
    ap.add_argument("--kit", type=Path, default=KIT, help="folder with tia_bench.py")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds (≥ 1)")
    ap.add_argument("--tia-workers", type=int, default=2, help="TIAToolbox DataLoader workers")
    ap.add_argument("--config", type=Path, help="atc-wsi YAML configuration")
    ap.add_argument(
        "--atc-root",
        type=Path,
        default=ROOT,
        help="checkout whose atc-wsi code runs (default: this one; e.g. an export of main for "
        "a before/after comparison)",
    )
    ap.add_argument(
        "--precision",
        nargs="+",
        default=["auto"],
        choices=("auto", "fp32", "bf16"),
        help="atc-wsi precisions run in every round (ATC_PRECISION); the first is the headline",
    )
    ap.add_argument("--json", type=Path, help="also write the result here")
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error(f"--rounds must be at least 1, got {args.rounds}")
    if not Path(args.tia_python).exists():
        ap.error(f"no TIAToolbox python at {args.tia_python}; build the venv ({KIT}/README.md)")
    slide = args.slide or ensure_demo_slide(args.demo_folder)
    rounds = []
    for k in range(args.rounds):
        row = one_round(args, slide, k)
        atc = ", ".join(
            f"atc-wsi {p} {row[f'atc_s_per_mm2@{p}']:.3f} s/mm² "
            f"({row[f'atc_durations_s@{p}']['total']:.1f} s, CPU s {row[f'atc@{p}_process_cpu_s']})"
            for p in args.precision
        )
        print(
            f"round {row['round']}: TIAToolbox {row['tia_s_per_mm2']:.3f} s/mm² "
            f"({row['tia_total_s']:.1f} s, {row['tia_tiles']} patches, CPU s "
            f"{row['tia_process_cpu_s']}), {atc} on {row['atc_mm2']:.2f} mm², "
            f"load {row['load_before']} -> {row['load_after']}",
            flush=True,
        )
        rounds.append(row)
    result = {
        "slide": str(slide),
        "atc_root": str(args.atc_root),
        "precision": args.precision,
        **summarise(rounds),
        "by_precision": {p: summarise(rounds, f"atc_s_per_mm2@{p}") for p in args.precision},
        "per_round": rounds,
    }
    for p, summ in result["by_precision"].items():
        print(
            f"TIAToolbox {summ['tia_s_per_mm2']} s/mm², atc-wsi ({p}) {summ['atc_s_per_mm2']} "
            f"s/mm², ratio {summ['ratio']} (> 1: atc-wsi's four analyses cost less per mm²)"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
