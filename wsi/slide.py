"""A whole-slide image: OpenSlide's vocabulary plus pixel size and a few safe helpers."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from types import TracebackType

import numpy as np
from numpy.typing import NDArray

from wsi import _openslide as _os
from wsi import colour as _colour
from wsi.cost import check_stage, thumbnail_read_px
from wsi.errors import (
    ImplausibleMppError,
    MissingMppError,
    RegionTooLargeError,
    SlideColourError,
    SlideTooLargeError,
    TileReadError,
    UnsupportedSlideError,
    WsiError,
)
from wsi.settings import SlideSettings

_DEFAULT = SlideSettings()


class Slide:
    """An open whole-slide image. Use :func:`open_slide` to create one.

    Coordinates: ``location`` arguments are level-0 pixels; ``size`` arguments are pixels of the
    level read. Pixel size is in µm per level-0 pixel.
    """

    def __init__(
        self,
        path: Path,
        *,
        mpp_override: float | None = None,
        settings: SlideSettings = _DEFAULT,
    ) -> None:
        self.path = path = resolve_slide_file(path)
        self.settings = settings
        self._ycbcr = False
        self._handle = _os.open_handle(path)
        try:
            self.properties: dict[str, str] = _os.properties(self._handle)
            self.level_count: int = int(self._handle.level_count)
            self.level_dimensions: tuple[tuple[int, int], ...] = tuple(
                (int(w), int(h)) for w, h in self._handle.level_dimensions
            )
            self.level_downsamples: tuple[float, ...] = tuple(
                float(d) for d in self._handle.level_downsamples
            )
            self._check_dimensions()
            self.mpp_x, self.mpp_y = self._resolve_mpp(mpp_override)
            self.colour: _colour.ColourCheck = self._check_colour()
        except BaseException:
            self._handle.close()
            raise
        self.mpp_source = "override" if mpp_override is not None else "slide"

    # -- metadata ---------------------------------------------------------------------------
    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 (width, height) in pixels."""
        return self.level_dimensions[0]

    @property
    def mpp(self) -> float:
        """Mean level-0 pixel size in µm/px."""
        return (self.mpp_x + self.mpp_y) / 2.0

    @property
    def objective_power(self) -> float | None:
        """Scanner objective magnification, when the slide states it."""
        raw = self.properties.get(_os.PROPERTY_OBJECTIVE)
        try:
            return float(raw) if raw else None
        except ValueError:
            return None

    @property
    def vendor(self) -> str:
        """OpenSlide's vendor string (``aperio``, ``generic-tiff``, ``dicom`` …)."""
        return self.properties.get(_os.PROPERTY_VENDOR, "unknown")

    @property
    def area_mm2(self) -> float:
        """Level-0 extent in mm² (glass included)."""
        w, h = self.dimensions
        return w * h * self.mpp_x * self.mpp_y / 1e6

    @property
    def fingerprint(self) -> str:
        """Content identity: OpenSlide's quickhash-1 when present, else sha256 of the file."""
        quick = self.properties.get(_os.PROPERTY_QUICKHASH)
        if quick:
            return f"quickhash1:{quick}"
        digest = hashlib.sha256()
        with open(self.path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        return f"sha256:{digest.hexdigest()}"

    def level_mpp(self, level: int) -> float:
        """Mean pixel size of ``level`` in µm/px."""
        return self.mpp * self.level_downsamples[level]

    # -- reading ----------------------------------------------------------------------------
    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> NDArray[np.uint8]:
        """Read an RGB region.

        Args:
            location: level-0 (x, y) of the top-left corner.
            level: pyramid level to read.
            size: (width, height) in pixels of ``level``.

        Returns:
            (height, width, 3) uint8 RGB, transparent pixels composited on white.

        Raises:
            RegionTooLargeError: the request exceeds ``settings.max_region_px``.
            TileReadError: the pixel data is corrupt.
        """
        if not 0 <= level < self.level_count:
            raise ValueError(f"level {level} out of range 0..{self.level_count - 1}")
        w, h = int(size[0]), int(size[1])
        if w <= 0 or h <= 0:
            raise ValueError(f"region size must be positive, got {size}")
        if w * h > self.settings.max_region_px:
            raise RegionTooLargeError(
                f"region {w}×{h} = {w * h:,} px exceeds the budget of "
                f"{self.settings.max_region_px:,} px; read it in tiles",
                path=self.path,
            )
        loc = (int(location[0]), int(location[1]))
        rgb = _os.read_rgb(self._handle, self.path, loc, level, (w, h))
        return _colour.ycbcr_to_rgb(rgb) if self._ycbcr else rgb

    def read_level(self, level: int) -> NDArray[np.uint8]:
        """Read a whole (low-resolution) level, within the pixel budget."""
        w, h = self.level_dimensions[level]
        return self.read_region((0, 0), level, (w, h))

    def best_level_for_mpp(self, target_mpp: float) -> tuple[int, float]:
        """Pick the coarsest level at least as fine as ``target_mpp``.

        Returns:
            ``(level, residual_scale)`` where ``residual_scale = level_mpp / target_mpp``: resize
            level pixels by this factor to reach the target grid (1.0 = no resampling, < 1 =
            downsample). When every level is coarser than the target, level 0 is returned with a
            residual scale > 1 (upsampling).
        """
        if not math.isfinite(target_mpp) or target_mpp <= 0:
            raise ValueError(f"target_mpp must be a positive number of µm/px, got {target_mpp}")
        best = 0
        for level in range(self.level_count):
            # tolerate 1% so that 0.2502 µm/px counts as 0.25
            if self.level_mpp(level) <= target_mpp * 1.01:
                best = level
        scale = self.level_mpp(best) / target_mpp
        if abs(scale - 1.0) < 0.01:
            scale = 1.0
        return best, scale

    def get_thumbnail(self, max_px: int = 1024) -> NDArray[np.uint8]:
        """Return an RGB thumbnail no larger than ``max_px`` on its longer side.

        Raises:
            ReadBudgetError: the level it needs is over ``settings.max_stage_read_px``.
        """
        level, read_px = thumbnail_read_px(self, max_px)
        check_stage(self, "thumbnail", read_px, level)
        try:
            img = _os.thumbnail(self._handle, max_px).convert("RGB")
        except _os.OpenSlideError as exc:
            raise TileReadError(
                f"corrupt pixel data in the thumbnail: {exc}",
                path=self.path,
                l0_xy=(0, 0),
                level=level,
            ) from exc
        rgb = np.asarray(img, dtype=np.uint8)
        return _colour.ycbcr_to_rgb(rgb) if self._ycbcr else rgb

    def associated_image_names(self) -> list[str]:
        """Names of associated images (label, macro, thumbnail)."""
        return sorted(self._handle.associated_images.keys())

    # -- lifetime ---------------------------------------------------------------------------
    def close(self) -> None:
        """Release the OpenSlide handle."""
        self._handle.close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        w, h = self.dimensions
        return (
            f"Slide({str(self.path)!r}, {w}×{h}, {self.level_count} levels, {self.mpp:.4g} µm/px)"
        )

    # -- validation -------------------------------------------------------------------------
    def _check_colour(self) -> _colour.ColourCheck:
        """Measure the glass colour at a low level; switch on YCbCr conversion when it is due."""
        fix = self.settings.colour_fix
        if fix == "off":
            return _colour.skipped("colour check switched off (slide.colour_fix: off)")
        level = _colour.pick_level(self.level_dimensions)
        (x, y), size = _colour.sample_window(self.level_dimensions[level])
        ds = self.level_downsamples[level]
        try:
            rgb = _os.read_rgb(self._handle, self.path, (round(x * ds), round(y * ds)), level, size)
        except WsiError as exc:  # a corrupt tile is reported when the analysis reads it
            return _colour.skipped(f"level {level} could not be read: {exc.reason}")
        check = _colour.judge(
            rgb, level, self.settings.glass_max_chroma, _colour.jpeg_markers(self.path)
        )
        if check.verdict != "ycbcr_as_rgb":
            return check
        if fix == "refuse":
            raise SlideColourError(
                f"{check.reason}; refused (slide.colour_fix: refuse): re-export the slide with "
                "the right PhotometricInterpretation, or set slide.colour_fix: correct",
                path=self.path,
            )
        self._ycbcr = True
        return _colour.ColourCheck(
            check.verdict,
            check.level,
            check.glass_rgb,
            check.chroma,
            True,
            check.jpeg_markers,
            check.reason + "; corrected: every read is converted from YCbCr to RGB",
        )

    def _check_dimensions(self) -> None:
        if self.level_count < 1:
            raise UnsupportedSlideError("slide has no pyramid levels", path=self.path)
        w, h = self.level_dimensions[0]
        limit = self.settings.max_dimension_px
        if w <= 0 or h <= 0:
            raise UnsupportedSlideError(f"slide has empty dimensions {w}×{h}", path=self.path)
        if w > limit or h > limit:
            raise SlideTooLargeError(
                f"header claims {w}×{h} px, beyond the {limit:,} px limit; the file is corrupt "
                "or not a slide (raise slide.max_dimension_px if it is real)",
                path=self.path,
            )

    def _resolve_mpp(self, override: float | None) -> tuple[float, float]:
        lo, hi = self.settings.mpp_min, self.settings.mpp_max
        if override is not None:
            if not math.isfinite(override) or not lo <= override <= hi:
                raise ImplausibleMppError(
                    f"mpp override {override} µm/px is outside the plausible range {lo}–{hi}",
                    path=self.path,
                    mpp=float(override),
                )
            return float(override), float(override)
        mpp_x, mpp_y = _mpp_from_properties(self.properties)
        if mpp_x is None or mpp_y is None:
            raise MissingMppError(
                "slide states no microns-per-pixel; pass --mpp (e.g. --mpp 0.25 for 40×, 0.5 "
                "for 20×) or fix the scanner export",
                path=self.path,
            )
        for value in (mpp_x, mpp_y):
            if not lo <= value <= hi:
                raise ImplausibleMppError(
                    f"slide states {value:.4g} µm/px, outside the plausible range {lo}–{hi} "
                    "(a DPI tag misread as a pixel size?); pass --mpp with the true value",
                    path=self.path,
                    mpp=value,
                )
        return mpp_x, mpp_y


def _mpp_from_properties(props: dict[str, str]) -> tuple[float | None, float | None]:
    """Read µm/px from OpenSlide's properties, falling back to the TIFF resolution tags."""

    def _num(key: str) -> float | None:
        try:
            value = float(props[key])
        except (KeyError, ValueError):
            return None
        return value if math.isfinite(value) and value > 0 else None

    mpp_x, mpp_y = _num(_os.PROPERTY_MPP_X), _num(_os.PROPERTY_MPP_Y)
    if mpp_x is not None and mpp_y is not None:
        return mpp_x, mpp_y
    unit = props.get("tiff.ResolutionUnit", "").lower()
    per_um = {"centimeter": 1e4, "inch": 25_400.0}.get(unit)
    res_x, res_y = _num("tiff.XResolution"), _num("tiff.YResolution")
    if per_um is not None and res_x is not None and res_y is not None:
        return per_um / res_x, per_um / res_y
    if mpp_x is not None:
        return mpp_x, mpp_x
    return None, None


def is_dicom_folder(path: Path) -> bool:
    """Return True for a folder holding DICOM instances and nothing else visible (one slide)."""
    if not path.is_dir():
        return False
    try:
        files = [p for p in path.iterdir() if not p.name.startswith(".")]
    except OSError:
        return False
    return bool(files) and all(p.is_file() and p.suffix.lower() == ".dcm" for p in files)


def resolve_slide_file(path: Path) -> Path:
    """Return the file OpenSlide opens for ``path``: itself, or the first instance of a DICOM
    series folder (the one rule the API, the watch folder and the CLI share)."""
    if is_dicom_folder(path):
        return sorted(p for p in path.iterdir() if p.suffix.lower() == ".dcm")[0]
    return path


def open_slide(
    path: str | Path,
    mpp_override: float | None = None,
    *,
    settings: SlideSettings = _DEFAULT,
) -> Slide:
    """Open a whole-slide image.

    Args:
        path: the slide file (for DICOM, any instance of the series or the series folder; for
            MRXS, the .mrxs file).
        mpp_override: pixel size in µm/px to use instead of the slide's own.
        settings: reading limits and plausibility bounds.

    Raises:
        SlideNotFoundError, UnsupportedSlideError, MissingMppError, ImplausibleMppError,
        SlideTooLargeError.
    """
    return Slide(Path(path), mpp_override=mpp_override, settings=settings)
