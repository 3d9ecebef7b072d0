"""Colour sanity of a slide: the glass (background) colour, measured at a low level.

Some converters (bfconvert, wsi2dcm) write JPEG frames in YCbCr (JFIF) but label them
``PhotometricInterpretation RGB``; OpenSlide follows the label and hands out raw Y, Cb, Cr values
as R, G, B, so white glass (Y≈245, Cb≈Cr≈128) comes out salmon and every stain-based threshold
goes wrong. The check measures the palest pixels of a small level: neutral glass passes; glass far
from neutral that becomes neutral once read as YCbCr is that fault, and the slide's pixels are then
converted as the JPEG markers say (JFIF: YCbCr, ITU-R BT.601 full range); anything else off
neutral is recorded as a warning.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

Verdict = Literal["neutral", "ycbcr_as_rgb", "off_neutral", "skipped"]

#: A whole level at most this large (pixels) is read for the check; else a centred window.
_WHOLE_LEVEL_PX = 1_000_000
_WINDOW_PX = 1024
#: Bytes of the file searched for the first JPEG frame's markers.
_MARKER_SCAN_BYTES = 4 << 20


@dataclass(frozen=True)
class ColourCheck:
    """Outcome of the glass-colour check.

    Attributes:
        verdict: ``neutral``, ``ycbcr_as_rgb`` (corrected or refused), ``off_neutral`` (warning)
            or ``skipped`` (switched off, or the level could not be read).
        level: pyramid level measured (-1 when skipped).
        glass_rgb: median RGB (0–255) of the palest 10% of the pixels, as read.
        chroma: max − min of ``glass_rgb``.
        corrected: the slide's pixels are converted from YCbCr on every read.
        jpeg_markers: what the first JPEG frame's markers declare (``JFIF (YCbCr)``,
            ``Adobe RGB``, ``Adobe YCbCr``, ``none`` or ``unknown``).
        reason: one sentence for the report.
    """

    verdict: Verdict
    level: int
    glass_rgb: tuple[float, float, float]
    chroma: float
    corrected: bool
    jpeg_markers: str
    reason: str

    def as_qc(self) -> dict[str, Any]:
        """The check as report.json ``qc.colour``."""
        return {
            "verdict": self.verdict,
            "level": self.level,
            "glass_rgb": [round(v, 1) for v in self.glass_rgb],
            "chroma": round(self.chroma, 1),
            "corrected": self.corrected,
            "jpeg_markers": self.jpeg_markers,
            "reason": self.reason,
        }


def skipped(reason: str) -> ColourCheck:
    """A check that was not made."""
    return ColourCheck("skipped", -1, (0.0, 0.0, 0.0), 0.0, False, "unknown", reason)


def ycbcr_to_rgb(ycc: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Convert (..., 3) full-range YCbCr (JFIF, BT.601) to RGB uint8."""
    arr = ycc.astype(np.float32)
    y, cb, cr = arr[..., 0], arr[..., 1] - 128.0, arr[..., 2] - 128.0
    rgb = np.stack((y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb), axis=-1)
    out: NDArray[np.uint8] = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    return out


def glass_colour(rgb: NDArray[np.uint8]) -> tuple[float, float, float]:
    """Median RGB of the palest 10% of the pixels (by channel mean) of an (H, W, 3) image."""
    flat = rgb.reshape(-1, 3).astype(np.float32)
    lum = flat.mean(axis=1)
    pale = flat[lum >= np.percentile(lum, 90)]
    med = np.median(pale, axis=0)
    return float(med[0]), float(med[1]), float(med[2])


def jpeg_markers(path: Path) -> str:
    """What the first JPEG frame in ``path`` declares about its colour space.

    Looks at the APP0 (JFIF: YCbCr by definition) and APP14 (Adobe: transform 0 = RGB, 1 = YCbCr)
    markers of the first start-of-image in the first few MB of the file.
    """
    try:
        with open(path, "rb") as fh:
            data = fh.read(_MARKER_SCAN_BYTES)
    except OSError:
        return "unknown"
    start = data.find(b"\xff\xd8\xff")
    if start < 0:
        return "none"
    head = data[start : start + 4096]
    at = head.find(b"Adobe")
    if at >= 4 and head[at - 4 : at - 2] == b"\xff\xee" and at + 11 < len(head):
        return "Adobe RGB" if head[at + 11] == 0 else "Adobe YCbCr"
    if head[2:4] == b"\xff\xe0" and head[6:11] == b"JFIF\x00":
        return "JFIF (YCbCr)"
    return "none"


def sample_window(level_wh: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """Level-pixel (x, y) and (w, h) of the region the check reads from a level this large."""
    w, h = level_wh
    if w * h <= _WHOLE_LEVEL_PX:
        return (0, 0), (w, h)
    cw, ch = min(w, _WINDOW_PX), min(h, _WINDOW_PX)
    return ((w - cw) // 2, (h - ch) // 2), (cw, ch)


def pick_level(level_dimensions: tuple[tuple[int, int], ...]) -> int:
    """The coarsest level at least 64 px on its shorter side (level 0 when none is)."""
    best = 0
    for level, (w, h) in enumerate(level_dimensions):
        if min(w, h) >= 64:
            best = level
    return best


def judge(rgb: NDArray[np.uint8], level: int, max_chroma: float, markers: str) -> ColourCheck:
    """Judge the glass colour of ``rgb`` (as read, unconverted) against ``max_chroma``."""
    glass = glass_colour(rgb)
    chroma = max(glass) - min(glass)
    if chroma <= max_chroma:
        return ColourCheck("neutral", level, glass, chroma, False, markers, "glass is neutral")
    as_rgb = ycbcr_to_rgb(np.asarray(glass, dtype=np.float32).round().astype(np.uint8))
    conv_chroma = float(as_rgb.max()) - float(as_rgb.min())
    explained = conv_chroma <= max_chroma / 2 and markers not in ("Adobe RGB",)
    if explained:
        reason = (
            f"glass reads {tuple(round(v) for v in glass)}, far from neutral, and neutral once "
            f"the pixels are read as YCbCr (JPEG markers: {markers}): frames in YCbCr labelled RGB"
        )
        return ColourCheck("ycbcr_as_rgb", level, glass, chroma, False, markers, reason)
    reason = (
        f"glass reads {tuple(round(v) for v in glass)} (max−min {chroma:.0f} > {max_chroma:.0f}); "
        "not a colour-space fault this check knows: check the scanner's white balance or stain"
    )
    return ColourCheck("off_neutral", level, glass, chroma, False, markers, reason)
