"""Colours shared by every output: class palette, overlay colour maps and their legends.

A colour map here is a (256, 4) uint8 RGBA lookup table indexed by the overlay's uint8 code
(``code = round(value / vmax * 255)``), so the RGBA overlay TIFFs, the browser viewer and the HTML
report colour a map identically.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

from wsi.results import MapKind
from wsi.taxonomy import MITOSIS_DISPLAY, PATTERN_CLASSES, PATTERN_DISPLAY

RGB = tuple[int, int, int]

#: Colour of each display class (GeoJSON ``classification.color``, report legends, markers).
CLASS_COLORS: Final[dict[str, RGB]] = {
    "Background": (190, 190, 190),
    "Spindle": (230, 159, 0),
    "Pleomorphic giant cell": (86, 180, 233),
    "Squamoid": (0, 158, 115),
    "Necrosis": (120, 30, 30),
    "Non-tumour": (204, 121, 167),
    "Mitosis: Typical": (220, 20, 60),
    "Mitosis: Atypical": (255, 120, 0),
    "Mitosis: Tripolar": (255, 0, 255),
    "Macrophage": (139, 90, 43),
    "Mitosis hotspot": (255, 215, 0),
    "Tumour": (200, 0, 0),
}

_MAP_DISPLAY: Final[dict[str, str]] = {"tam_density": "TAM density", "necrosis": "Necrosis"}
_FALLBACK: Final[RGB] = (0, 114, 178)

# Anchor colours of perceptually uniform ramps (matplotlib's viridis and magma at 0, .25 … 1).
_VIRIDIS: Final[list[RGB]] = [
    (68, 1, 84),
    (59, 82, 139),
    (33, 145, 140),
    (94, 201, 98),
    (253, 231, 37),
]
_MAGMA: Final[list[RGB]] = [
    (0, 0, 4),
    (81, 18, 124),
    (183, 55, 121),
    (252, 137, 97),
    (252, 253, 191),
]


@dataclass(frozen=True)
class Colormap:
    """A lookup table from uint8 codes to RGBA, with what a legend needs.

    Attributes:
        name: ``"class-ramp"`` (the class colour, opacity rising with the value),
            ``"viridis"``, ``"magma"``, ``"mask"`` or ``"label"``.
        lut: (256, 4) uint8 RGBA; code 0 is fully transparent.
        legend: (label, "#rrggbb" or "#rrggbbaa") pairs from low to high for a legend bar.
    """

    name: str
    lut: NDArray[np.uint8]
    legend: tuple[tuple[str, str], ...]


def class_color(display_name: str) -> RGB:
    """Return the RGB colour of a display class name (a fixed blue for unknown names).

    Circle names that carry their size (``"Mitosis hotspot 2 mm²"``, ``"Mitosis 10 HPF (2.37
    mm²)"``) get the hotspot's gold and the HPF circle's orange.
    """
    if display_name in CLASS_COLORS:
        return CLASS_COLORS[display_name]
    if display_name.startswith("Mitosis hotspot"):
        return CLASS_COLORS["Mitosis hotspot"]
    if display_name.startswith("Mitosis") and "HPF" in display_name:
        return (255, 140, 0)
    return _FALLBACK


def display_name(name: str) -> str:
    """Map an internal class or map name (``"pattern_spindle"``) to its display name."""
    if name in _MAP_DISPLAY:
        return _MAP_DISPLAY[name]
    key = name.removeprefix("pattern_")
    if key in PATTERN_DISPLAY:
        return PATTERN_DISPLAY[key]
    if key in MITOSIS_DISPLAY:
        return MITOSIS_DISPLAY[key]
    return name


def hex_color(rgb: RGB) -> str:
    """Return ``"#rrggbb"`` for an RGB triple."""
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _ramp(anchors: list[RGB]) -> NDArray[np.float64]:
    stops = np.linspace(0.0, 1.0, len(anchors))
    x = np.linspace(0.0, 1.0, 256)
    arr = np.asarray(anchors, dtype=np.float64)
    out: NDArray[np.float64] = np.stack([np.interp(x, stops, arr[:, c]) for c in range(3)], axis=1)
    return out


def _alpha_ramp(max_alpha: int) -> NDArray[np.float64]:
    # Low values fade out so tissue stays visible; full opacity is reached at half scale.
    x = np.linspace(0.0, 1.0, 256)
    out: NDArray[np.float64] = np.clip(0.15 + 1.7 * x, 0.0, 1.0) * max_alpha
    return out


def _finish(rgb: NDArray[np.float64], alpha: NDArray[np.float64]) -> NDArray[np.uint8]:
    lut = np.concatenate([rgb, alpha[:, None]], axis=1)
    out: NDArray[np.uint8] = np.clip(np.rint(lut), 0, 255).astype(np.uint8)
    out[0] = (0, 0, 0, 0)
    out.setflags(write=False)
    return out


def _legend(anchors: list[RGB], vmax: float, unit: str) -> tuple[tuple[str, str], ...]:
    n = len(anchors) - 1
    suffix = f" {unit}" if unit else ""
    return tuple((f"{vmax * i / n:g}{suffix}", hex_color(c)) for i, c in enumerate(anchors))


def colormap_for(name: str, kind: MapKind, *, vmax: float = 1.0, unit: str = "") -> Colormap:
    """Choose the colour map of an overlay from its name and kind.

    Probability maps of a known class keep the class colour, opacity rising with the value;
    other probability maps use viridis, densities magma, masks one flat class colour, label maps the
    pattern palette (code = class index).

    Args:
        name: the map's name (e.g. ``"pattern_spindle"``, ``"necrosis"``, ``"tam_density"``).
        kind: the map's kind.
        vmax: value at code 255, for legend labels.
        unit: unit of the values, for legend labels.
    """
    disp = display_name(name)
    if kind == "label":
        lut = np.zeros((256, 4), dtype=np.float64)
        entries: list[tuple[str, str]] = []
        for i, cls in enumerate(PATTERN_CLASSES):
            rgb = class_color(PATTERN_DISPLAY[cls])
            lut[i] = (*rgb, 0 if i == 0 else 170)
            entries.append((PATTERN_DISPLAY[cls], hex_color(rgb)))
        return Colormap("label", _finish(lut[:, :3], lut[:, 3]), tuple(entries))
    if kind == "mask":
        rgb = class_color(disp)
        lut_rgb = np.tile(np.asarray(rgb, dtype=np.float64), (256, 1))
        alpha = np.where(np.arange(256) >= 128, 170.0, 0.0)
        return Colormap("mask", _finish(lut_rgb, alpha), ((disp, hex_color(rgb)),))
    if kind == "density":
        return Colormap(
            "magma", _finish(_ramp(_MAGMA), _alpha_ramp(210)), _legend(_MAGMA, vmax, unit)
        )
    if disp in CLASS_COLORS:
        rgb = class_color(disp)
        lut_rgb = np.tile(np.asarray(rgb, dtype=np.float64), (256, 1))
        alpha = 230.0 * np.sqrt(np.linspace(0.0, 1.0, 256))
        legend = (("0", hex_color(rgb) + "00"), ("1", hex_color(rgb) + "e6"))
        return Colormap("class-ramp", _finish(lut_rgb, alpha), legend)
    return Colormap(
        "viridis", _finish(_ramp(_VIRIDIS), _alpha_ramp(200)), _legend(_VIRIDIS, vmax, unit)
    )
