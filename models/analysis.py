"""``analyze_slide``: the one function the CLI, ``make demo`` and the workers call.

It opens the slide, computes the tissue mask, runs the requested analyses (prerequisites first) as
plugins on one engine, and assembles ``report.json``'s sections (slide, tissue, one per analysis,
qc, provenance) with the spatial outputs in a ``wsi.results.SlideOutputs``.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from models.analyses import AnalysisContext, AnalysisOutput, plan_analyses
from models.device import DeviceChoice, resolve_device
from models.engine import Engine
from models.errors import AnalysisCancelled
from models.settings import PipelineSettings
from wsi.errors import StageCancelled
from wsi.results import SlideOutputs
from wsi.slide import Slide, open_slide
from wsi.tissue import TissueMask, compute_tissue_mask

REPORT_SCHEMA_VERSION = "1.2"
StageProgress = Callable[[str, int, int], None]
CancelFn = Callable[[], bool]


@dataclass
class AnalysisResult:
    """What ``analyze_slide`` returns.

    Attributes:
        outputs: report dict plus maps, points, polygons, circles and the tile table.
        timings: seconds per stage (``open``, ``tissue``, each analysis, ``total``).
        analyses: each analysis's full output (with in-memory ``data``), by name.
        device: the device and precision used.
    """

    outputs: SlideOutputs
    timings: dict[str, float]
    analyses: dict[str, AnalysisOutput] = field(default_factory=dict)
    device: DeviceChoice | None = None

    @property
    def report(self) -> dict[str, Any]:
        """The JSON report (``outputs.report``)."""
        return self.outputs.report


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and len(sha) == 40 else None


def _package_version() -> str:
    try:
        return metadata.version("atc-wsi")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def slide_section(slide: Slide) -> dict[str, Any]:
    """Slide facts for the report."""
    return {
        "path": str(slide.path),
        "name": Path(slide.path).name,
        "width": slide.dimensions[0],
        "height": slide.dimensions[1],
        "mpp": round(slide.mpp, 6),
        "mpp_source": getattr(slide, "mpp_source", "slide"),
        "vendor": slide.vendor,
        "objective_power": slide.objective_power,
        "levels": slide.level_count,
        "fingerprint": slide.fingerprint,
    }


def tissue_section(tissue: TissueMask) -> dict[str, Any]:
    """Tissue facts for the report."""
    return {
        "area_mm2": round(tissue.area_mm2, 4),
        "mask_mpp": round(tissue.mpp, 3),
        "pen_fraction": round(tissue.pen_fraction, 4),
    }


def analyze_slide(
    path: str | Path,
    settings: PipelineSettings,
    *,
    progress: StageProgress | None = None,
    cancel: CancelFn | None = None,
    work_dir: Path | None = None,
    mpp_override: float | None = None,
) -> AnalysisResult:
    """Analyse one slide.

    Args:
        path: the slide file.
        settings: pipeline settings (``settings.analyses`` names what runs).
        progress: ``(stage, done, total)`` callback; stages are ``tissue`` and the engine tags
            of each analysis (``pattern``, ``necrosis`` …); ``tissue`` counts chunks read.
        cancel: polled between tissue chunks and between batches; True raises
            ``AnalysisCancelled``.
        work_dir: checkpoint folder for crash-safe resume (see ``models.engine``).
        mpp_override: µm/px to use instead of the slide's own.

    Raises:
        WsiError: the slide cannot be opened or read.
        ModelError: an unknown analysis or model, bad weights, or cancellation.
    """
    started, t0 = _now(), time.perf_counter()
    plan = plan_analyses(settings.analyses)  # unknown names fail before any work
    device = resolve_device(settings.engine.device, settings.engine.precision)
    if settings.engine.threads:
        torch.set_num_threads(settings.engine.threads)
    timings: dict[str, float] = {}
    with open_slide(path, mpp_override, settings=settings.slide) as slide:
        timings["open"] = time.perf_counter() - t0
        t = time.perf_counter()
        try:
            tissue = compute_tissue_mask(
                slide,
                settings.tissue,
                progress=(lambda done, total: progress("tissue", done, total))
                if progress
                else None,
                cancel=cancel,
            )
        except StageCancelled as exc:  # one cancellation error for every stage
            raise AnalysisCancelled(f"analysis cancelled in the tissue stage: {exc}") from exc
        timings["tissue"] = time.perf_counter() - t
        ctx = AnalysisContext(
            slide_path=Path(path),
            slide=slide,
            tissue=tissue,
            settings=settings,
            device=device,
            engine=Engine(device, settings.engine),
            mpp_override=mpp_override,
            work_dir=Path(work_dir) if work_dir else None,
            progress=progress,
            cancel=cancel,
        )
        for analysis in plan:
            ctx.check_cancel()
            t = time.perf_counter()
            runs_before = len(ctx.engine_runs)
            out = analysis.run(ctx)
            out.seconds = time.perf_counter() - t
            out.engine_runs = ctx.engine_runs[runs_before:]
            timings[analysis.name] = out.seconds
            ctx.results[analysis.name] = out
        timings["total"] = time.perf_counter() - t0
        report = _report(slide, tissue, ctx, timings, started, settings)
        outputs = _collect(slide, report, ctx.results)
    return AnalysisResult(outputs, timings, dict(ctx.results), device)


def _report(
    slide: Slide,
    tissue: TissueMask,
    ctx: AnalysisContext,
    timings: dict[str, float],
    started: str,
    settings: PipelineSettings,
) -> dict[str, Any]:
    results = ctx.results
    models: dict[str, dict[str, Any]] = {}
    for out in results.values():
        for m in out.models:
            models[m["name"]] = {
                "name": m["name"],
                "version": m["version"],
                "sha256": m.get("weights_sha256", m.get("sha256", "")),
                **{k: v for k, v in m.items() if k not in ("name", "version", "weights_sha256")},
            }
    qc_per = {name: out.qc for name, out in results.items()}
    blur = [q["blur_fraction"] for q in qc_per.values() if "blur_fraction" in q]
    report: dict[str, Any] = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "slide": slide_section(slide),
        "tissue": tissue_section(tissue),
    }
    for name, out in results.items():
        report[name] = out.report
    report["qc"] = {
        "unreadable_tiles": int(sum(q.get("unreadable_tiles", 0) for q in qc_per.values())),
        "pen_fraction": round(tissue.pen_fraction, 4),
        "blur_fraction": blur[0] if blur else 0.0,
        "colour": slide.colour.as_qc(),
        "analyses": qc_per,
    }
    report["provenance"] = {
        "package_version": _package_version(),
        "git_commit": _git_commit(),
        "models": list(models.values()),
        "config_hash": settings.config_hash(),
        "device": ctx.device.describe(),
        "dtype": {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[ctx.device.precision],
        "analyses": [a for a in results],
        "durations_s": {k: round(v, 3) for k, v in timings.items()},
        "started_at": started,
        "finished_at": _now(),
    }
    return report


def _collect(
    slide: Slide, report: dict[str, Any], results: dict[str, AnalysisOutput]
) -> SlideOutputs:
    outputs = SlideOutputs(
        slide_path=str(slide.path),
        l0_dimensions=slide.dimensions,
        mpp=slide.mpp,
        report=report,
    )
    for out in results.values():
        outputs.maps.extend(out.maps)
        outputs.points.extend(out.points)
        outputs.polygons.extend(out.polygons)
        outputs.circles.extend(out.circles)
        if out.tiles is not None and outputs.tiles is None:
            outputs.tiles = out.tiles
    return outputs
