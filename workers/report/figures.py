"""Matplotlib figures of the HTML report, returned as PNG bytes (Agg, no display needed)."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import ListedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Circle as CirclePatch
from matplotlib.patches import Patch
from matplotlib.patches import Polygon as PolygonPatch
from numpy.typing import NDArray

from workers.report.withheld import withheld_reason
from wsi.export.colors import class_color, colormap_for, display_name, hex_color
from wsi.export.overlays import render_codes
from wsi.results import RasterMap, SlideOutputs

_DPI = 100


@dataclass(frozen=True)
class Thumb:
    """The slide thumbnail and its scale.

    Attributes:
        image: (h, w, 3) uint8 RGB.
        l0_dimensions: the slide's level-0 (width, height).
    """

    image: NDArray[np.uint8]
    l0_dimensions: tuple[int, int]

    @property
    def scale(self) -> float:
        """Thumbnail pixels per level-0 pixel."""
        return float(self.image.shape[1]) / self.l0_dimensions[0]

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in thumbnail pixels."""
        return self.image.shape[1], self.image.shape[0]


def blank_thumb(l0_dimensions: tuple[int, int], max_px: int = 800) -> Thumb:
    """Return a white stand-in thumbnail when the slide cannot be read."""
    w, h = l0_dimensions
    s = max_px / max(w, h)
    return Thumb(
        np.full((max(1, round(h * s)), max(1, round(w * s)), 3), 255, np.uint8), l0_dimensions
    )


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight")
    return buf.getvalue()


def _map_figure(thumb: Thumb, title: str) -> tuple[Figure, Any]:
    w, h = thumb.size
    fig = Figure(figsize=(min(7.0, 7.0 * w / h) + 1.5, min(7.0, 7.0 * h / w)))
    ax = fig.add_subplot()
    ax.imshow(thumb.image)
    ax.set_title(title)
    ax.set_axis_off()
    return fig, ax


def _rgba(raster: RasterMap, thumb: Thumb) -> NDArray[np.uint8]:
    codes = render_codes(raster, thumb.l0_dimensions, thumb.size)
    lut = colormap_for(raster.name, raster.kind, vmax=raster.vmax, unit=raster.unit).lut
    return lut[codes]


def pattern_labels(
    outputs: SlideOutputs, size: tuple[int, int]
) -> tuple[NDArray[np.intp], list[str]]:
    """Return the most probable pattern per thumbnail pixel (-1 where background wins) and names.

    Uses the ``pattern_*`` probability maps; background is ``1 - sum(maps)``.
    """
    maps = [
        m
        for m in outputs.maps
        if m.name.startswith("pattern_")
        and m.kind == "probability"
        and m.name != "pattern_background"
    ]
    if not maps:
        return np.full((size[1], size[0]), -1, dtype=np.intp), []
    stack = np.stack([render_codes(m, outputs.l0_dimensions, size).astype(np.int32) for m in maps])
    background = 255 - stack.sum(axis=0)
    best = np.argmax(stack, axis=0)
    labels = np.where(stack.max(axis=0) > np.maximum(background, 0), best, -1)
    return labels, [m.name.removeprefix("pattern_") for m in maps]


def overview(thumb: Thumb, outputs: SlideOutputs) -> bytes:
    """Thumbnail with necrosis outlines, the hotspot circle and mitosis markers."""
    withheld = withheld_reason(outputs.report.get("mitosis")) is not None
    title = "Slide with necrosis" if withheld else "Slide with necrosis, mitoses and hotspot"
    fig, ax = _map_figure(thumb, title)
    s = thumb.scale
    handles = []
    for polys in outputs.polygons:
        color = hex_color(class_color(polys.name))
        for rings in polys.polygons:
            ax.add_patch(
                PolygonPatch(
                    np.asarray(rings[0])[:, :2] * s,
                    closed=True,
                    fill=False,
                    edgecolor=color,
                    linewidth=2,
                )
            )
        handles.append(Patch(facecolor="none", edgecolor=color, label=polys.name))
    for c in outputs.circles:
        color = hex_color(class_color(c.name))
        ax.add_patch(
            CirclePatch(
                (c.l0_center[0] * s, c.l0_center[1] * s),
                c.l0_radius * s,
                fill=False,
                edgecolor=color,
                linewidth=2,
                linestyle="--",
            )
        )
        handles.append(Patch(facecolor="none", edgecolor=color, label=c.name))
    for pts in outputs.points:
        if pts.name.startswith("Mitosis") and len(pts.l0_xy):
            xy = np.asarray(pts.l0_xy) * s
            ax.scatter(
                xy[:, 0],
                xy[:, 1],
                s=18,
                c=hex_color(class_color(pts.name)),
                edgecolors="black",
                linewidths=0.5,
                label=f"{pts.name} ({len(xy)})",
            )
    ax.set_xlim(0, thumb.size[0])
    ax.set_ylim(thumb.size[1], 0)
    ax.legend(
        handles=handles + ax.get_legend_handles_labels()[0],
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=8,
    )
    return _png(fig)


def pattern_map(thumb: Thumb, outputs: SlideOutputs) -> bytes | None:
    """Thumbnail with the predominant pattern per region coloured by class."""
    labels, names = pattern_labels(outputs, thumb.size)
    if not names:
        return None
    fig, ax = _map_figure(thumb, "Growth pattern map")
    rgba = np.zeros((*labels.shape, 4), dtype=np.uint8)
    for k, name in enumerate(names):
        rgba[labels == k] = (*class_color(display_name(name)), 150)
    ax.imshow(rgba)
    handles = [
        Patch(color=hex_color(class_color(display_name(n))), label=display_name(n)) for n in names
    ]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    return _png(fig)


def density_map(thumb: Thumb, raster: RasterMap, title: str) -> bytes:
    """Thumbnail with a density map (e.g. TAMs) and a colour bar."""
    fig, ax = _map_figure(thumb, title)
    ax.imshow(_rgba(raster, thumb))
    lut = colormap_for(raster.name, raster.kind, vmax=raster.vmax, unit=raster.unit).lut
    cmap = ListedColormap(lut[:, :3] / 255.0)
    sm = ScalarMappable(norm=Normalize(0, raster.vmax), cmap=cmap)
    fig.colorbar(sm, ax=ax, fraction=0.04, label=raster.unit or raster.name)
    return _png(fig)


def pattern_mix(report: dict[str, Any]) -> bytes | None:
    """Horizontal bar chart of each pattern's share of tumour (%)."""
    per_class = report.get("pattern", {}).get("per_class") or {}
    if not per_class or any(v.get("percent_of_tumour") is None for v in per_class.values()):
        return None  # no tumour to share out (the mix is withheld outside in_scope)
    names = list(per_class)
    values = [float(per_class[n]["percent_of_tumour"]) for n in names]
    fig = Figure(figsize=(6, 0.5 + 0.45 * len(names)))
    ax = fig.add_subplot()
    colors = [hex_color(class_color(display_name(n))) for n in names]
    ax.barh([display_name(n) for n in names], values, color=colors)
    for y, v in enumerate(values):
        ax.text(v + 1, y, f"{v:.1f}%", va="center", fontsize=9)
    ax.set_xlim(0, 110)
    ax.set_xlabel("share of viable tumour (%)")
    ax.invert_yaxis()
    ax.set_title("Pattern mix")
    return _png(fig)


def mitosis_density(
    thumb: Thumb, outputs: SlideOutputs, mpp: float, bin_mm: float = 0.5
) -> bytes | None:
    """Mitoses per mm² in square bins of ``bin_mm`` over the thumbnail, with the hotspot."""
    pts = [p for p in outputs.points if p.name.startswith("Mitosis")]
    xy = (
        np.concatenate([np.asarray(p.l0_xy).reshape(-1, 2) for p in pts])
        if pts
        else np.zeros((0, 2))
    )
    if not len(xy):
        return None
    w, h = outputs.l0_dimensions
    bin_l0 = bin_mm * 1000.0 / mpp
    nx, ny = max(1, math.ceil(w / bin_l0)), max(1, math.ceil(h / bin_l0))
    counts, _, _ = np.histogram2d(
        xy[:, 1], xy[:, 0], bins=(ny, nx), range=((0, ny * bin_l0), (0, nx * bin_l0))
    )
    per_mm2 = counts / bin_mm**2
    fig, ax = _map_figure(thumb, f"Mitoses per mm² ({bin_mm:g} mm bins)")
    s = thumb.scale
    masked = np.ma.masked_where(per_mm2 == 0, per_mm2)
    im = ax.imshow(
        masked,
        cmap="inferno",
        alpha=0.6,
        interpolation="nearest",
        vmin=0,
        extent=(0, nx * bin_l0 * s, ny * bin_l0 * s, 0),
    )
    for c in outputs.circles:
        ax.add_patch(
            CirclePatch(
                (c.l0_center[0] * s, c.l0_center[1] * s),
                c.l0_radius * s,
                fill=False,
                edgecolor="gold",
                linewidth=2,
                linestyle="--",
            )
        )
    ax.set_xlim(0, thumb.size[0])
    ax.set_ylim(thumb.size[1], 0)
    fig.colorbar(im, ax=ax, fraction=0.04, label="mitoses / mm²")
    return _png(fig)
