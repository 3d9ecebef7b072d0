"""``atc-wsi view OUTPUT_DIR``: serve the browser viewer for a local output folder."""

from __future__ import annotations

from pathlib import Path

import typer

from workers.cli_common import handle_errors


def register(app: typer.Typer) -> None:
    """Add the ``view`` command to the CLI."""

    @app.command("view")
    def view(
        output_dir: Path = typer.Argument(..., help="Folder written by `atc-wsi analyze`."),
        port: int = typer.Option(8765, "--port", help="TCP port on 127.0.0.1."),
        host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
        slide: Path | None = typer.Option(
            None, "--slide", help="Slide to show (default: the path in report.json)."
        ),
    ) -> None:
        """Open the viewer: slide, heatmap overlays, mitoses, necrosis and hotspot."""
        with handle_errors():
            import uvicorn

            from workers.viewer import LOCAL_ID, make_local_app
            from workers.viewer.folder import ViewerDataError

            if not 0 < port < 65536:
                raise ValueError(f"--port must be 1..65535, got {port}")
            if slide is not None and not slide.is_file():
                raise FileNotFoundError(f"--slide {slide}: no such file")
            try:
                app = make_local_app(output_dir, slide_path=slide)
            except ViewerDataError as exc:
                raise ValueError(str(exc)) from None
            typer.echo(f"viewer: http://{host}:{port}/v1/jobs/{LOCAL_ID}/viewer/  (Ctrl-C stops)")
        uvicorn.run(app, host=host, port=port, log_level="warning")
