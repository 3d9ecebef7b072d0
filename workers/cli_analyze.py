"""``atc-wsi analyze``: the whole analysis of one slide, with a progress bar per stage."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import typer

from workers.cli_common import console, handle_errors
from workers.report.settings import OutputSettings
from workers.report.summary import section_lines

if TYPE_CHECKING:
    from models.analysis import AnalysisResult
    from models.settings import PipelineSettings


def register(app: typer.Typer) -> None:
    """Add the ``analyze`` command to ``app``."""
    app.command("analyze")(analyze)


def _overrides(
    device: str | None,
    precision: str | None,
    analyses: str | None,
    models: list[str],
    batch_size: int | None,
) -> dict[str, Any]:
    """Nested settings overrides from the command-line flags."""
    out: dict[str, Any] = {}
    engine = {
        k: v
        for k, v in (("device", device), ("precision", precision), ("batch_size", batch_size))
        if v is not None
    }
    if engine:
        out["engine"] = engine
    if analyses:
        out["analyses"] = [a.strip() for a in analyses.split(",") if a.strip()]
    for item in models:
        name, sep, model = item.partition("=")
        if not sep or not name.strip() or not model.strip():
            raise ValueError(
                f"--models takes ANALYSIS=MODEL (e.g. pattern=atc-pattern-v1), got {item!r}"
            )
        out.setdefault(name.strip(), {})["model"] = model.strip()
    return out


def load_pipeline_settings(config: Path | None, overrides: dict[str, Any]) -> PipelineSettings:
    """Load configuration (YAML + ``ATC_*`` environment) with CLI overrides applied last."""
    from workers.settings import load_settings

    return load_settings(config, overrides=overrides).pipeline()


def write_analysis(
    result: AnalysisResult,
    out_dir: Path,
    slide_path: Path,
    outputs: OutputSettings | None = None,
) -> dict[str, Path]:
    """Write report.json, tiles.npz and (when the report writer is installed) the rest.

    Every file is written atomically; report.json last.
    """
    try:
        from workers.report.write import write_outputs
    except ImportError:
        write_outputs = None  # type: ignore[assignment]
    if write_outputs is not None:
        return write_outputs(
            result.outputs, out_dir, slide_path, settings=outputs or OutputSettings()
        )
    from wsi.io import atomic_write_bytes, atomic_write_json

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"tiles": out_dir / "tiles.npz", "report": out_dir / "report.json"}
    atomic_write_bytes(paths["tiles"], tiles_npz_bytes(result))
    atomic_write_json(paths["report"], result.report)
    return paths


def tiles_npz_bytes(result: AnalysisResult) -> bytes:
    """Per-tile outputs of every tile analysis: level-0 corners, probabilities, classes."""
    arrays: dict[str, Any] = {}
    for name, out in result.analyses.items():
        grid, probs = out.data.get("grid"), out.data.get("probs")
        if grid is None or probs is None:
            continue
        arrays[f"{name}__l0_xy"] = np.asarray(grid.l0_xy)
        arrays[f"{name}__l0_size"] = np.float64(grid.l0_tile)
        arrays[f"{name}__probs"] = np.asarray(probs, dtype=np.float32)
        arrays[f"{name}__tissue_fraction"] = np.asarray(grid.tissue_fraction)
        if out.tiles is not None:
            arrays[f"{name}__class_names"] = np.asarray(out.tiles.class_names)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


class _StageBars:
    """One rich progress bar per stage, created when the stage first reports."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("[bold]{task.description:<10}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not console.is_terminal,
        )
        self.tasks: dict[str, Any] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=total)
        self.progress.update(self.tasks[stage], completed=done, total=total)


def analyze(
    slide: Path = typer.Argument(..., help="Slide file (SVS, TIFF, NDPI, MRXS, DICOM …)."),
    out: Path = typer.Option(..., "--out", help="Output folder (created)."),
    config: Path | None = typer.Option(None, "--config", help="YAML configuration file."),
    device: str | None = typer.Option(None, "--device", help="auto, cpu or cuda."),
    precision: str | None = typer.Option(None, "--precision", help="auto, bf16, fp16 or fp32."),
    analyses: str | None = typer.Option(
        None, "--analyses", help="Comma-separated: pattern,necrosis,mitosis,tam (default: all)."
    ),
    models: list[str] = typer.Option(
        [], "--models", help="ANALYSIS=MODEL, e.g. pattern=atc-pattern-v1 (repeatable)."
    ),
    mpp: float | None = typer.Option(None, "--mpp", help="Override the pixel size, µm/px."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Tiles per forward pass."),
    work_dir: Path | None = typer.Option(
        None, "--work-dir", help="Checkpoint folder: rerunning with it resumes finished chunks."
    ),
) -> None:
    """Analyse one slide: patterns, necrosis, mitoses, TAMs; write report.json and tiles.npz."""
    with handle_errors():
        from models.analysis import analyze_slide
        from workers.settings import load_settings

        full = load_settings(
            config, overrides=_overrides(device, precision, analyses, models, batch_size)
        )
        settings = full.pipeline()
        bars = _StageBars()
        with bars.progress:
            result = analyze_slide(
                slide, settings, progress=bars, work_dir=work_dir, mpp_override=mpp
            )
        paths = write_analysis(result, out, slide, full.outputs)
    _summary(result, paths)


def _summary(result: AnalysisResult, paths: dict[str, Path]) -> None:
    rep = result.report
    lines = [f"{rep['slide']['name']}: tissue {rep['tissue']['area_mm2']:.2f} mm²"]
    lines += section_lines(rep)
    prov = rep["provenance"]
    lines.append(f"  device    {prov['device']}; total {prov['durations_s']['total']:.1f} s")
    lines.append(f"  report    {paths['report']}")
    typer.echo("\n".join(lines))
    if result.report.get("qc", {}).get("unreadable_tiles"):
        typer.echo(
            f"  warning   {rep['qc']['unreadable_tiles']} unreadable tiles skipped", err=True
        )


def report_json(result: AnalysisResult) -> str:
    """The report as JSON text (for ``--json`` style callers)."""
    return json.dumps(result.report, indent=2)
