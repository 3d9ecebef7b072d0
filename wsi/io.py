"""Atomic file writing: readers see the previous complete file or the new one, never a torn one."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Literal, overload

# mkstemp creates 0600 files; outputs get the usual umask-derived mode instead.
_UMASK = os.umask(0)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK


@overload
@contextlib.contextmanager
def atomic_write(path: str | Path, mode: Literal["wb"] = "wb") -> Iterator[IO[bytes]]: ...
@overload
@contextlib.contextmanager
def atomic_write(path: str | Path, mode: Literal["w"]) -> Iterator[IO[str]]: ...


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success fsync it and rename it over ``path``.

    If the body raises, the temporary file is removed and ``path`` keeps its previous content.

    Args:
        path: destination file.
        mode: ``"wb"`` or ``"w"`` (UTF-8 text).
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write mode must be 'wb' or 'w', got {mode!r}")
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.fchmod(fd, _FILE_MODE)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, mode, encoding="utf-8" if mode == "w" else None) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_dir(dest.parent)


def atomic_temp_path(path: str | Path) -> Path:
    """Return a fresh temporary path beside ``path`` for writers that need a filename.

    The caller writes the file, then calls :func:`commit_temp` (or removes it on failure).
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.fchmod(fd, _FILE_MODE)
    os.close(fd)
    return Path(tmp_name)


def commit_temp(tmp: Path, path: str | Path) -> None:
    """Fsync ``tmp`` and atomically rename it to ``path``."""
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(Path(path).parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    with atomic_write(path, "w") as fh:
        fh.write(text)


def atomic_write_json(path: str | Path, obj: Any, *, indent: int = 2) -> None:
    """Serialise ``obj`` as JSON (UTF-8, sorted keys off) and write it atomically."""
    atomic_write_text(
        path, json.dumps(obj, indent=indent, ensure_ascii=False, allow_nan=False) + "\n"
    )


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
