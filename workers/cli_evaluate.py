"""``atc-wsi evaluate``: check a model on a lab's own labelled crops or patches before trusting it.

    atc-wsi evaluate mitosis CROPS --mpp 0.25 [--out metrics.json]
    atc-wsi evaluate slides --slides S.svs --annotations S.geojson [--models pattern=FOLDER]

CROPS is a folder of class folders (``atypical/``, ``normal/``, ``negative/`` …) or a CSV with
``file,label`` columns (and optionally ``slide``). The metrics JSON and a one-screen summary
follow the same code as the project's own real-data validation (``models.training.crop_eval``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from workers.cli_common import console, handle_errors

evaluate_app = typer.Typer(
    help="Evaluate a model on labelled crops or patches (class folders or a file,label CSV).",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add the ``evaluate`` command group to ``app``."""
    app.add_typer(evaluate_app, name="evaluate")


def _check_mpp(mpp: float) -> None:
    if not 0.05 <= mpp <= 20:
        raise ValueError(f"--mpp {mpp} is not a plausible pixel size (0.05–20 µm/px)")


def write_metrics(metrics: dict[str, Any], out: Path | None) -> None:
    """Write the metrics JSON atomically (when ``out`` is given)."""
    if out is None:
        return
    from wsi.io import atomic_write

    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out, "w") as fh:
        json.dump(metrics, fh, indent=2)
    console.print(f"metrics written to {out}")


def print_summary(metrics: dict[str, Any], lines: list[str]) -> None:
    """Print per-class recall and the task's headline figures as one screen."""
    table = Table(title=f"{metrics['task']}: {metrics['source']} (n = {metrics['n']})")
    for col in ("truth class", "n", "recall", "95% CI", "F1"):
        table.add_column(col)
    for name, row in metrics["per_class"].items():
        lo, hi = row["recall_ci95"]
        table.add_row(
            name, str(row["n"]), f"{row['recall']:.3f}", f"{lo:.3f}–{hi:.3f}", f"{row['f1']:.3f}"
        )
    out = console if console.is_terminal else None
    if out is not None:
        out.print(table)
    else:
        print(f"{metrics['task']}: {metrics['source']} (n = {metrics['n']})")
        for name, row in metrics["per_class"].items():
            print(f"  {name:<12} n={row['n']:<5} recall={row['recall']:.3f}  F1={row['f1']:.3f}")
    cm = metrics["confusion"]
    print(f"  confusion (rows truth, cols prediction; {', '.join(cm['classes'])}):")
    for name, row in zip(cm["classes"], cm["rows_truth_cols_prediction"], strict=True):
        print(f"    {name:<12} {row}")
    print(
        f"  balanced accuracy {metrics['balanced_accuracy']:.3f} "
        f"(95% CI by slide {metrics.get('balanced_accuracy_ci95')}), "
        f"macro-F1 {metrics['macro_f1']:.3f}"
    )
    for line in lines:
        print(f"  {line}")


@evaluate_app.command("mitosis")
def evaluate_mitosis(
    source: Path = typer.Argument(..., help="class folders or a file,label CSV of crops"),
    mpp: float = typer.Option(..., "--mpp", help="µm/px of the crops (e.g. 0.25 at 40×)"),
    model: str = typer.Option("atc-mitosis-v1", "--model", help="registered mitosis model"),
    min_score: float | None = typer.Option(
        None, "--min-score", help="operating point (default: the config's mitosis.min_score)"
    ),
    label_map: Path | None = typer.Option(
        None, "--label-map", help="JSON/YAML object: your label → negative|typical|atypical"
    ),
    out: Path | None = typer.Option(None, "--out", help="write the metrics JSON here"),
    config: Path | None = typer.Option(None, "--config", help="YAML config file"),
) -> None:
    """Mitosis crops: share of mitoses called mitosis, typical vs atypical, negatives called."""
    with handle_errors():
        from models.training.crop_eval import evaluate_set
        from models.training.eval_tasks import mitosis_predictor, mitosis_task
        from models.training.labelled import load_label_map, read_labelled
        from workers.cli_analyze import load_pipeline_settings

        _check_mpp(mpp)
        settings = load_pipeline_settings(config, {})
        threshold = settings.mitosis.min_score if min_score is None else float(min_score)
        data = read_labelled(source)
        from models.registry import get_spec

        scale = mpp / get_spec(model).input_mpp
        metrics = evaluate_set(
            data,
            mitosis_task(threshold),
            mitosis_predictor(model),
            scale=scale,
            label_map=load_label_map(label_map),
        )
        metrics["model"] = model
        metrics["crop_mpp"] = mpp
        lines = []
        if "mitoses_called_mitosis" in metrics:
            m = metrics["mitoses_called_mitosis"]
            lines.append(
                f"mitoses called mitosis at min_score {threshold}: {m['share']:.3f} "
                f"(95% CI {m['ci95'][0]:.3f}–{m['ci95'][1]:.3f}, n = {m['n']})"
            )
            t = metrics["typical_vs_atypical"]
            lines.append(
                f"typical vs atypical balanced accuracy (all true mitoses): "
                f"{t['balanced_accuracy']:.3f}"
            )
        if "negatives_called_mitosis" in metrics:
            m = metrics["negatives_called_mitosis"]
            lines.append(
                f"non-mitoses called mitosis: {m['share']:.3f} "
                f"(95% CI {m['ci95'][0]:.3f}–{m['ci95'][1]:.3f}, n = {m['n']})"
            )
        print_summary(metrics, lines)
        write_metrics(metrics, out)


@evaluate_app.command("tissue")
def evaluate_tissue(
    source: Path = typer.Argument(..., help="class folders or a file,label CSV of tissue patches"),
    mpp: float = typer.Option(..., "--mpp", help="µm/px of the patches (e.g. 0.5 at 20×)"),
    model: str = typer.Option("atc-pattern-v1", "--model", help="registered pattern classifier"),
    label_map: Path | None = typer.Option(
        None,
        "--label-map",
        help="JSON/YAML: your label → spindle|pleomorphic|squamoid|necrosis|non_tumour|tumour",
    ),
    out: Path | None = typer.Option(None, "--out", help="write the metrics JSON here"),
) -> None:
    """Tissue patches: per-class recall, macro-F1, tumour vs non-tumour, necrosis calls."""
    with handle_errors():
        from models.registry import get_spec
        from models.training.crop_eval import evaluate_set
        from models.training.eval_tasks import tissue_predictor, tissue_task
        from models.training.labelled import load_label_map, read_labelled

        _check_mpp(mpp)
        data = read_labelled(source)
        metrics = evaluate_set(
            data,
            tissue_task(),
            tissue_predictor(model),
            scale=mpp / get_spec(model).input_mpp,
            label_map=load_label_map(label_map),
        )
        metrics["model"] = model
        metrics["patch_mpp"] = mpp
        lines = []
        t = metrics["tumour_vs_non_tumour"]
        lines.append(
            f"tumour vs non-tumour accuracy {t['accuracy']:.3f} "
            f"(95% CI {t['ci95'][0]:.3f}–{t['ci95'][1]:.3f}, n = {t['n']})"
        )
        if "pattern_macro_f1" in metrics:
            p = metrics["pattern_macro_f1"]
            lines.append(
                f"spindle/pleomorphic/squamoid macro-F1 {p['value']:.3f} (n = {p['n']}; "
                f"{', '.join(p['classes'])})"
            )
        for key, words in (
            ("necrotic_called_necrosis", "necrotic patches called necrosis"),
            ("other_called_necrosis", "other patches called necrosis"),
        ):
            if key in metrics:
                m = metrics[key]
                lines.append(f"{words}: {m['share']:.3f} (n = {m['n']})")
        print_summary(metrics, lines)
        write_metrics(metrics, out)


@evaluate_app.command("slides")
def evaluate_slides_cmd(
    slides: list[Path] = typer.Option(..., "--slides", help="slide file or folder (repeatable)"),
    annotations: list[Path] = typer.Option(
        ..., "--annotations", help="GeoJSON/CSV file or folder, one file per slide (repeatable)"
    ),
    models: list[str] = typer.Option(
        [], "--models", help="ANALYSIS=MODEL (name, name@version or folder; repeatable)"
    ),
    tasks: str | None = typer.Option(
        None, "--tasks", help="pattern,necrosis,mitosis,tam (default: what is annotated)"
    ),
    class_map: Path | None = typer.Option(
        None, "--class-map", help="YAML/JSON {your name: class} or CSV name,class"
    ),
    fully_annotated: bool = typer.Option(
        False, "--fully-annotated", help="every annotation file covers its whole slide"
    ),
    device: str | None = typer.Option(None, "--device", help="auto | cpu | cuda"),
    mpp: float | None = typer.Option(None, "--mpp", help="µm/px of slides that state none"),
    out: Path | None = typer.Option(None, "--out", help="write the metrics JSON here"),
    config: Path | None = typer.Option(None, "--config", help="YAML config file"),
) -> None:
    """Annotated slides: pattern macro-F1, necrosis Dice, mitosis F1, TAM density, per slide."""
    with handle_errors():
        from models.training.annotated import load_annotated
        from models.training.slide_eval import check_not_trained_on, evaluate_slides
        from workers.cli_analyze import _overrides, load_pipeline_settings

        settings = load_pipeline_settings(config, _overrides(device, None, None, models, None))
        items = load_annotated(slides, annotations, class_map, fully_annotated, mpp)
        check_not_trained_on(settings, items)
        wanted = [t.strip() for t in tasks.split(",") if t.strip()] if tasks else None
        metrics = evaluate_slides(items, settings, wanted)
        print(f"models: {', '.join(metrics['models'].values())}")
        for row in metrics["slides"]:
            parts = [f"{task} {json.dumps(v)}" for task, v in row.items() if task != "slide"]
            print(f"  {row['slide']}: " + "; ".join(parts))
        pooled = {k: v for k, v in metrics["pooled"].items() if k != "pattern_confusion"}
        print("pooled: " + ", ".join(f"{k} {v}" for k, v in pooled.items()))
        write_metrics(metrics, out)
