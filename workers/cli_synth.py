"""``atc-wsi synth``: write a synthetic ATC slide with its ground truth."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from workers.cli_common import handle_errors

if TYPE_CHECKING:
    from wsi.synthetic.settings import SyntheticSettings


def register(app: typer.Typer) -> None:
    """Add the ``synth`` command to ``app``."""
    app.command("synth")(synth)


def _defaults() -> SyntheticSettings:
    """Return the ``synthetic:`` settings if the loader knows them, else the package defaults."""
    from wsi.synthetic.settings import SyntheticSettings

    try:
        from workers.settings import load_settings

        loaded = getattr(load_settings(), "synthetic", None)
    except Exception:  # loader unavailable or config invalid: the command still works
        loaded = None
    return loaded if isinstance(loaded, SyntheticSettings) else SyntheticSettings()


def _pick(value: Any, default: Any) -> Any:
    return default if value is None else value


def synth(
    out: Path = typer.Option(..., "--out", help="Output folder (created)."),
    seed: int | None = typer.Option(None, "--seed", help="Generator seed (default 0)."),
    preset: str | None = typer.Option(None, "--preset", help="small | demo | large."),
    stain: str | None = typer.Option(None, "--stain", help="he | cd68 | cd163."),
    width: int | None = typer.Option(None, "--width", help="Level-0 width, px (overrides preset)."),
    height: int | None = typer.Option(None, "--height", help="Level-0 height, px."),
    mpp: float | None = typer.Option(None, "--mpp", help="Level-0 µm/px (0.25 = 40×, 0.5 = 20×)."),
    mitoses: float | None = typer.Option(
        None, "--mitoses-per-2mm2", help="Mitoses per 2 mm² of viable tumour (0–40)."
    ),
    tripolar: float | None = typer.Option(
        None, "--tripolar-fraction", help="Share of mitoses that are tripolar."
    ),
    tam: float | None = typer.Option(
        None, "--tam-fraction", help="Macrophage share of cells in spindle tumour (0–0.95)."
    ),
    lookalikes: float | None = typer.Option(
        None, "--lookalikes-per-mm2", help="Each look-alike kind per mm² of viable tumour."
    ),
    artefacts: bool | None = typer.Option(
        None, "--artefacts/--no-artefacts", help="Draw pen, folds, bubbles, blur and dust."
    ),
    workers: int | None = typer.Option(None, "--workers", help="Rendering processes."),
    quality: int | None = typer.Option(None, "--jpeg-quality", help="JPEG quality (30–100)."),
) -> None:
    """Write slide.tiff, labels.tiff, truth.geojson, truth.json and truth.npz into --out."""
    with handle_errors():
        from wsi.synthetic import SynthSpec, generate_slide

        d = _defaults()
        spec = SynthSpec.from_preset(
            _pick(preset, d.preset),
            seed=_pick(seed, d.seed),
            stain=_pick(stain, d.stain),
            width=width,
            height=height,
            mpp=_pick(mpp, d.mpp),
            mitoses_per_2mm2=_pick(mitoses, d.mitoses_per_2mm2),
            tripolar_fraction=_pick(tripolar, d.tripolar_fraction),
            tam_fraction=_pick(tam, d.tam_fraction),
            ramified_fraction=d.ramified_fraction,
            lookalikes_per_mm2=_pick(lookalikes, d.lookalikes_per_mm2),
            artefacts=_pick(artefacts, d.artefacts),
            workers=_pick(workers, d.workers),
            jpeg_quality=_pick(quality, d.jpeg_quality),
        )
        t0 = time.perf_counter()
        folder = generate_slide(spec, out)
        info = json.loads((folder / "truth.json").read_text(encoding="utf-8"))
    typer.echo(
        f"{folder / 'slide.tiff'}  {spec.width} × {spec.height} px at {spec.mpp} µm/px, "
        f"{spec.stain}, {time.perf_counter() - t0:.1f} s"
    )
    c = info["counts"]
    typer.echo(
        f"  tissue {info['tissue_area_mm2']:.2f} mm², viable tumour "
        f"{info['viable_tumour_area_mm2']:.2f} mm², mitoses {c['mitosis']} "
        f"({c['mitosis_tripolar']} tripolar), hotspot {info['hotspot']['mitoses']} / 2 mm², "
        f"macrophages {c['macrophage']}, look-alikes {c['lookalike']}"
    )
