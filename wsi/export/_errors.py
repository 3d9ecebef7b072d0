"""The error raised by the output writers."""

from __future__ import annotations

from wsi.errors import WsiError


class ExportError(WsiError, ValueError):
    """Outputs cannot be written from the given data (bad shape, name, geometry …)."""
