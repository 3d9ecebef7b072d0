"""``atc-wsi models list|show``: the shipped models and the trained versions a lab has made.

Trained versions are found under ``$ATC_MODELS_DIR`` (see ``models._versions``); a model folder
can also be named by its path wherever a model name is accepted.
"""

from __future__ import annotations

import json

import typer

from workers.cli_common import handle_errors

models_app = typer.Typer(
    help="List and show models: shipped ones and trained versions ($ATC_MODELS_DIR).",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add the ``models`` command group to ``app``."""
    app.add_typer(models_app, name="models")


@models_app.command("list")
def list_cmd(
    pattern: str = typer.Argument("*", help="shell-style name filter, e.g. 'atc-pattern-*'"),
) -> None:
    """One line per model version: reference, task, source (shipped or folder), sha256 prefix."""
    with handle_errors():
        import fnmatch

        from models._versions import folder_spec, trained_versions
        from models.registry import get_spec, list_models

        rows = [get_spec(n) for n in list_models(pattern)]
        rows += [
            folder_spec(p) for n, _, p in trained_versions() if fnmatch.fnmatchcase(n, pattern)
        ]
        for spec in rows:
            where = "shipped" if spec.folder is None else str(spec.folder)
            typer.echo(f"{spec.ref:<40} {spec.task:<9} {spec.sha256[:12]}  {where}")


@models_app.command("show")
def show_cmd(
    ref: str = typer.Argument(..., help="name, name@version or model folder"),
) -> None:
    """Print the model card (JSON) of a reference, with where its weights are."""
    with handle_errors():
        from models.registry import get_spec

        spec = get_spec(ref)
        card = spec.card()
        head = {
            "ref": spec.ref,
            "base": spec.base or spec.name,
            "weights": str(spec.weights_path),
            "sha256": spec.sha256,
            "input_mpp": spec.input_mpp,
            "tile_px": spec.tile_px,
            "classes": list(spec.classes),
        }
        typer.echo(json.dumps({**head, "card": card}, indent=2))
