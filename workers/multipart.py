"""Streaming ``multipart/related`` parsing (DICOMweb WADO-RS answers).

``write_multipart`` writes each part to its own file as the bytes arrive, holding at most one
network chunk plus one boundary in memory, whatever the size of the parts.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class _FileSink:
    """Writes each multipart part into ``folder/instance-NNNNN.dcm``."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.count = folder, 0
        self.fh: Any = None

    def start(self) -> None:
        self.count += 1
        self.fh = open(self.folder / f"instance-{self.count:05d}.dcm", "wb")  # noqa: SIM115

    def write(self, data: bytes) -> None:
        self.fh.write(data)

    def end(self) -> None:
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        self.fh = None


class _MemorySink:
    def __init__(self, parts: list[bytes]) -> None:
        self.parts = parts

    def start(self) -> None:
        self.parts.append(b"")

    def write(self, data: bytes) -> None:
        self.parts[-1] += data

    def end(self) -> None:
        pass


def write_multipart(content_type: str, chunks: Iterator[bytes], folder: Path) -> int:
    """Write each part of a ``multipart/related`` stream to its own file; return the count.

    Raises:
        ValueError: no boundary in ``content_type``, or the stream ends inside a part.
    """
    sink = _FileSink(folder)
    try:
        _feed(content_type, chunks, sink)
    finally:
        if sink.fh is not None:
            sink.fh.close()
    return sink.count


def parse_multipart(content_type: str, chunks: Iterator[bytes]) -> list[bytes]:
    """Return the parts' bodies in memory (small answers only, e.g. one frame)."""
    parts: list[bytes] = []
    _feed(content_type, chunks, _MemorySink(parts))
    return parts


def _boundary(content_type: str) -> bytes:
    for param in content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary":
            return value.strip('"').encode()
    raise ValueError(f"no multipart boundary in Content-Type {content_type!r}")


def _feed(content_type: str, chunks: Iterator[bytes], sink: Any) -> None:
    """Feed the parts' bodies to ``sink`` holding at most one chunk plus a boundary in memory."""
    delim = b"\r\n--" + _boundary(content_type)
    buf, state = b"\r\n", "preamble"  # the leading CRLF makes the first delimiter like the rest
    for chunk in chunks:
        buf += chunk
        while True:
            if state in ("preamble", "body"):
                idx = buf.find(delim)
                if idx < 0:
                    keep = len(delim) - 1
                    if state == "body" and len(buf) > keep:
                        sink.write(buf[: len(buf) - keep])
                        buf = buf[len(buf) - keep :]
                    break
                if state == "body":
                    sink.write(buf[:idx])
                    sink.end()
                buf, state = buf[idx + len(delim) :], "after"
            elif state == "after":
                if len(buf) < 2:
                    break
                if buf.startswith(b"--"):
                    return
                state = "headers"
            else:  # headers
                idx = buf.find(b"\r\n\r\n")
                if idx < 0:
                    break
                buf, state = buf[idx + 4 :], "body"
                sink.start()
    if state != "after":
        raise ValueError(f"the multipart stream ended inside a part (state {state})")
