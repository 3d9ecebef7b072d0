"""``atc-wsi demo``: make a synthetic ATC slide, analyse it in-process, write report and overlays.

No Redis, no server: the same plain functions the workers call, run here. The real H&E slide in
``../shared/data`` is analysed too when it is present, so the demo shows real stain as well.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer

from workers.cli_common import handle_errors

REAL_SLIDE = (
    Path(__file__).resolve().parent.parent.parent
    / "shared"
    / "data"
    / "slides"
    / "CMU-1-Small-Region.svs"
)


def register(app: typer.Typer) -> None:
    """Add the demo command to ``app``."""
    app.command("demo")(demo)


def _ensure_synthetic(folder: Path, preset: str, seed: int, stain: str) -> Path:
    """Generate the synthetic slide unless an identical one is already there."""
    from wsi.synthetic import SynthSpec, generate_slide

    spec = SynthSpec.from_preset(preset, seed=seed, stain=stain)
    truth_file = folder / "truth.json"
    if truth_file.exists() and (folder / "slide.tiff").exists():
        old = json.loads(truth_file.read_text()).get("spec")
        if old == json.loads(json.dumps(spec.to_dict())):
            typer.echo(f"reusing synthetic slide {folder / 'slide.tiff'}")
            return folder / "slide.tiff"
    t0 = time.perf_counter()
    typer.echo(f"generating synthetic {preset} slide (seed {seed}, stain {stain}) …")
    generate_slide(spec, folder)
    typer.echo(f"  done in {time.perf_counter() - t0:.1f} s: {folder / 'slide.tiff'}")
    return folder / "slide.tiff"


def _analyse(slide: Path, out: Path, settings: Any) -> dict[str, Any]:
    from models.analysis import analyze_slide
    from workers.cli_analyze import _StageBars
    from workers.report.write import write_outputs

    bars = _StageBars()
    with bars.progress:
        result = analyze_slide(slide, settings.pipeline(), progress=bars)
    paths = write_outputs(result.outputs, out, slide, settings=settings.outputs)
    typer.echo(
        f"  wrote {len(paths)} files to {out}: " + ", ".join(sorted(p.name for p in paths.values()))
    )
    return result.report


def _lines(report: dict[str, Any]) -> str:
    from workers.report.summary import section_lines

    return "\n".join(
        [f"  tissue    {report['tissue']['area_mm2']:.2f} mm²", *section_lines(report)]
    )


def _compare(report: dict[str, Any], truth: dict[str, Any], tam_truth: float | None) -> None:
    """Print measured figures beside the generator's ground truth.

    ``tam_truth``: macrophages on viable tumour per mm² of it (``SlideTruth``).
    """
    areas = truth.get("areas_mm2", {})
    rows = [("tissue mm²", report["tissue"]["area_mm2"], truth.get("tissue_area_mm2"))]
    if "necrosis" in report:
        rows.append(("necrosis mm²", report["necrosis"]["area_mm2"], areas.get("necrosis")))
    mitosis = report.get("mitosis", {})
    if mitosis.get("count_total") is not None:
        counts = truth.get("counts", {})
        true_n = sum(v for k, v in counts.items() if k.startswith(("typical", "tripolar")))
        rows.append(("mitoses", mitosis["count_total"], true_n))
        hotspot = truth.get("hotspot", {})
        rows.append(
            (
                "mitoses in 2 mm² hotspot",
                mitosis.get("mitoses_per_2mm2_hotspot"),
                hotspot.get("mitoses"),
            )
        )
    tam = report.get("tam", {})
    if tam.get("density_per_mm2") is not None:
        rows.append(("TAM per mm² tumour", tam["density_per_mm2"], tam_truth))
    typer.echo("  measured vs ground truth:")
    for name, got, want in rows:
        want_s = "n/a" if want is None else f"{want:.3g}"
        typer.echo(
            f"    {name:<26} {got if got is None else format(got, '.3g'):>10}   {want_s:>10}"
        )


def demo(
    out: Path = typer.Option(Path("out/demo"), "--out", help="Output folder."),
    preset: str = typer.Option("demo", "--preset", help="Synthetic preset: small, demo, large."),
    seed: int = typer.Option(2026, "--seed", help="Seed of the synthetic slide."),
    stain: str = typer.Option("he", "--stain", help="he, cd68 or cd163."),
    real: bool = typer.Option(True, "--real/--no-real", help="Also analyse the real H&E slide."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    config: Path | None = typer.Option(None, "--config", help="YAML configuration file."),
) -> None:
    """Make a synthetic ATC slide, analyse it in-process and write report and overlays."""
    from workers.settings import load_settings
    from wsi.synthetic.truth import load_truth

    with handle_errors():
        settings = load_settings(config, overrides={"engine": {"device": device}})
        slide = _ensure_synthetic(out / "synthetic-slide", preset, seed, stain)
        typer.echo("analysing the synthetic slide …")
        report = _analyse(slide, out / "synthetic", settings)
        typer.echo(_lines(report))
        truth = json.loads((slide.parent / "truth.json").read_text())
        _compare(report, truth, load_truth(slide.parent).tumour_macrophage_density())
        if real and REAL_SLIDE.exists():
            typer.echo(f"analysing the real H&E slide {REAL_SLIDE.name} …")
            real_report = _analyse(REAL_SLIDE, out / "real", settings)
            typer.echo(_lines(real_report))
    typer.echo(f"open {out / 'synthetic' / 'report.html'} or run: atc-wsi view {out / 'synthetic'}")
