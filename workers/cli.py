"""The ``atc-wsi`` command line. Each area registers its commands from its own module."""

from __future__ import annotations

import importlib
import logging

import typer

from workers.cli_common import DEBUG

app = typer.Typer(
    name="atc-wsi",
    help="Whole-slide analysis of anaplastic thyroid carcinoma (decision support only).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

#: Modules that contribute commands, in help order.
COMMAND_MODULES = (
    "workers.cli_slide",
    "workers.cli_synth",
    "workers.cli_analyze",
    "workers.cli_demo",
    "workers.cli_service",
    "workers.cli_view",
    "workers.cli_evaluate",
    "workers.cli_models",
    "workers.cli_train",
)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and debug logs."),
) -> None:
    DEBUG["enabled"] = debug
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING)


def _register_all() -> None:
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue  # an area not installed in this build
        module.register(app)


_register_all()


def main() -> None:
    """Console-script entry point."""
    app()
