"""Shared CLI plumbing: error mapping to exit code 2 and progress bars."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)

#: Set by the ``--debug`` root option.
DEBUG = {"enabled": False}


def _known_errors() -> tuple[type[BaseException], ...]:
    from wsi.errors import WsiError

    errors: list[type[BaseException]] = [WsiError, ValueError, FileNotFoundError, PermissionError]
    with contextlib.suppress(ImportError):
        from models.errors import ModelError

        errors.append(ModelError)
    with contextlib.suppress(ImportError):
        from workers.errors import JobError

        errors.append(JobError)
    return tuple(errors)


@contextlib.contextmanager
def handle_errors() -> Iterator[None]:
    """Turn user-caused errors into one line on stderr and exit code 2 (traceback with --debug)."""
    try:
        yield
    except typer.Exit:
        raise
    except _known_errors() as exc:
        if DEBUG["enabled"]:
            console.print_exception()
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"error: {type(exc).__name__}: {message}", file=sys.stderr)
        raise typer.Exit(code=2) from None


@contextlib.contextmanager
def progress_bar(
    description: str, total: int | None = None
) -> Iterator[Callable[[int, int], None]]:
    """Yield an ``update(done, total)`` callback drawing a rich progress bar on stderr."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        disable=not console.is_terminal,
    ) as progress:
        task: TaskID = progress.add_task(description, total=total)

        def update(done: int, new_total: int) -> None:
            progress.update(task, completed=done, total=new_total)

        yield update
