"""The one error tree of the slide layer.

Every failure a user can cause (a missing file, a format OpenSlide cannot read, a slide without a
pixel size) is a subclass of :class:`WsiError` whose message names the file, the bad value and what
to do next.
"""

from __future__ import annotations

from pathlib import Path


class WsiError(Exception):
    """Base class of every error raised by ``wsi``.

    Attributes:
        path: the slide (or other file) concerned, when there is one.
    """

    def __init__(self, message: str, *, path: str | Path | None = None) -> None:
        self.path = str(path) if path is not None else None
        super().__init__(f"{self.path}: {message}" if self.path else message)
        self.reason = message


class SlideNotFoundError(WsiError):
    """The slide path does not exist or is not a readable file."""


class UnsupportedSlideError(WsiError):
    """OpenSlide cannot open the file (unknown format, malformed, truncated, empty)."""


class MissingMppError(WsiError):
    """The slide states no pixel size and none was given."""


class ImplausibleMppError(WsiError):
    """The slide's pixel size is outside the plausible range (e.g. a DPI-derived ~352 µm/px)."""

    def __init__(self, message: str, *, path: str | Path | None = None, mpp: float) -> None:
        self.mpp = mpp
        super().__init__(message, path=path)


class SlideTooLargeError(WsiError):
    """The header claims absurd dimensions."""


class RegionTooLargeError(WsiError):
    """A ``read_region`` request exceeds the configured pixel budget."""


class TileReadError(WsiError):
    """Pixel data could not be decoded (a corrupt tile).

    Attributes:
        l0_xy: level-0 (x, y) of the failed request.
        level: pyramid level of the failed request.
    """

    def __init__(
        self, message: str, *, path: str | Path | None = None, l0_xy: tuple[int, int], level: int
    ) -> None:
        self.l0_xy = l0_xy
        self.level = level
        super().__init__(
            f"{message} (level {level}, level-0 x={l0_xy[0]}, y={l0_xy[1]})", path=path
        )


class InvalidTilingError(WsiError):
    """Tiling parameters that cannot produce a grid (non-positive size, overlap ≥ tile, …)."""


class ReadBudgetError(WsiError):
    """A stage would read more pixels from the pyramid present than the configured budget.

    Attributes:
        stage: the stage refused (``tissue``, ``thumbnail``, ``tiles``).
        read_px: pixels the stage would decode.
        budget_px: the configured budget (``slide.max_stage_read_px``).
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        stage: str,
        read_px: int,
        budget_px: int,
    ) -> None:
        self.stage, self.read_px, self.budget_px = stage, int(read_px), int(budget_px)
        super().__init__(message, path=path)


class SlideColourError(WsiError):
    """The glass colour is far from neutral in a way a mislabelled colour space explains, and
    correction is switched off (``slide.colour_fix: refuse``)."""


class StageCancelled(WsiError):
    """A slide-side stage (tissue mask, thumbnail) was cancelled between two chunks."""


class AnnotationError(WsiError):
    """An annotation file that cannot be read, or a class name the taxonomy does not know."""
