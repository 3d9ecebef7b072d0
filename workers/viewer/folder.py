"""One output folder as the viewer sees it: slide and overlay pyramids, markers, legend."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from workers.report.settings import OutputSettings
from workers.report.withheld import not_assessed
from wsi import WsiError, open_slide
from wsi.export.colors import class_color, colormap_for, display_name, hex_color
from wsi.export.dzi import DeepZoom, RegionSource, TileCache, lut_transform

#: Markers drawn at most (macrophage point sets can hold many thousands).
MAX_MARKERS = 5000
#: Sections whose withheld figures the page names (they have no markers, circle or layer then).
WITHHELD_LABELS = {"mitosis": "Mitoses", "tam": "Macrophages (TAM)"}


class BlankSource:
    """A white stand-in for a slide that cannot be opened, so overlays still have a base."""

    def __init__(self, size: tuple[int, int]) -> None:
        self.level_count = 1
        self.level_dimensions: tuple[tuple[int, int], ...] = (size,)
        self.level_downsamples: tuple[float, ...] = (1.0,)

    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> NDArray[np.uint8]:
        """Return white pixels of ``size`` (width, height)."""
        return np.full((size[1], size[0], 3), 255, dtype=np.uint8)


class ViewerDataError(LookupError):
    """The output folder lacks what the viewer needs (no report.json, unknown overlay …)."""


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ViewerDataError(f"{path} not found; is this an atc-wsi output folder?") from None


@dataclass
class ViewerFolder:
    """Lazily opened pyramids of one output folder.

    Attributes:
        out_dir: the output folder (holds report.json, overlays/, annotations.geojson).
        slide_path: the slide to show under the overlays (``None``: overlays only).
        settings: tile size and quality.
    """

    out_dir: Path
    slide_path: Path | None
    settings: OutputSettings
    _pyramids: dict[str, DeepZoom] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _slide_error: str | None = None

    @cached_property
    def index(self) -> dict[str, Any]:
        """Contents of ``overlays/index.json`` (empty layer list when there are no overlays)."""
        path = self.out_dir / "overlays" / "index.json"
        return _read_json(path) if path.exists() else {"layers": []}

    @cached_property
    def report(self) -> dict[str, Any]:
        """Contents of ``report.json``."""
        report: dict[str, Any] = _read_json(self.out_dir / "report.json")
        return report

    @property
    def slide_error(self) -> str | None:
        """Why the slide could not be opened (``None`` when it was), after :meth:`slide_pyramid`."""
        return self._slide_error

    def slide_pyramid(self) -> DeepZoom:
        """Return the slide's Deep Zoom pyramid (blank white when the slide cannot be opened)."""
        with self._lock:
            if "slide" not in self._pyramids:
                self._pyramids["slide"] = DeepZoom(
                    self._open_slide(),
                    tile_size=self.settings.dzi_tile_px,
                    fmt="jpeg",
                    quality=self.settings.dzi_jpeg_quality,
                )
            return self._pyramids["slide"]

    def _open_slide(self) -> RegionSource:
        size = (int(self.report["slide"]["width"]), int(self.report["slide"]["height"]))
        if self.slide_path is None:
            self._slide_error = "no slide path known; pass --slide"
            return BlankSource(size)
        try:
            # The report's pixel size stands in when the slide states none (viewing needs none).
            return open_slide(self.slide_path, mpp_override=self._report_mpp())
        except WsiError as exc:
            self._slide_error = str(exc)
            return BlankSource(size)

    def overlay_pyramid(self, name: str) -> DeepZoom:
        """Return the Deep Zoom pyramid of an overlay, coloured from its u8 TIFF."""
        with self._lock:
            if name in self._pyramids and name != "slide":
                return self._pyramids[name]
            layer = next((x for x in self.index["layers"] if x["name"] == name), None)
            if layer is None or "u8" not in layer["files"]:
                raise ViewerDataError(f"no u8 overlay named {name!r} in {self.out_dir}/overlays")
            tiff = open_slide(self.out_dir / layer["files"]["u8"])
            lut = colormap_for(name, layer["kind"], vmax=layer["vmax"], unit=layer["unit"]).lut
            dz = DeepZoom(
                tiff,
                tile_size=self.settings.dzi_tile_px,
                fmt="png",
                transform=lut_transform(lut),
                resample="nearest",
            )
            self._pyramids[name] = dz
            return dz

    def _report_mpp(self) -> float | None:
        try:
            return float(self.report["slide"]["mpp"])
        except (ViewerDataError, KeyError, TypeError, ValueError):
            return None

    def layers(self) -> dict[str, Any]:
        """Return what the page needs to build its layers, legend and toggles."""
        self.slide_pyramid()
        index = self.index
        report = self.report
        overlays = [
            {
                "name": x["name"],
                "label": _layer_label(x["name"], x["kind"]),
                "kind": x["kind"],
                "unit": x["unit"],
                "vmax": x["vmax"],
                "legend": x["legend"],
                "dzi": f"overlays/{x['name']}.dzi",
            }
            for x in index["layers"]
            if "u8" in x["files"]
        ]
        dims = report["slide"]["width"], report["slide"]["height"]
        return {
            "title": Path(str(report["slide"]["path"])).name,
            "width": dims[0],
            "height": dims[1],
            "mpp": report["slide"]["mpp"],
            "slide": {"dzi": "slide.dzi", "blank": self.slide_error is not None},
            "slide_error": self.slide_error,
            "overlays": overlays,
            "markers": "markers.geojson",
            "report_html": "report.html" if (self.out_dir / "report.html").exists() else None,
            "not_assessed": [
                {"section": key, "text": f"{label}: {text}"}
                for key, label in WITHHELD_LABELS.items()
                if (text := not_assessed(report.get(key)))
            ],
        }

    def markers(self) -> dict[str, Any]:
        """Return the point and annotation features to draw (tile detections left out)."""
        path = self.out_dir / "annotations.geojson"
        if not path.exists():
            return {"type": "FeatureCollection", "features": [], "classes": {}}
        data = _read_json(path)
        feats: list[dict[str, Any]] = []
        counts: dict[str, int] = {}
        for f in data["features"]:
            props = f["properties"]
            if props["objectType"] == "detection" and f["geometry"]["type"] != "Point":
                continue
            name = props["classification"]["name"]
            counts[name] = counts.get(name, 0) + 1
            if counts[name] <= MAX_MARKERS:
                feats.append(f)
        classes = {n: {"count": c, "color": hex_color(class_color(n))} for n, c in counts.items()}
        return {"type": "FeatureCollection", "features": feats, "classes": classes}


def _layer_label(name: str, kind: str) -> str:
    label = display_name(name).replace("_", " ")
    suffix = {"probability": " probability", "mask": " mask"}.get(kind, "")
    return label if label.lower().endswith(suffix.strip()) else label + suffix


class FolderCache:
    """Keeps recently used :class:`ViewerFolder` objects (and one tile cache) across requests."""

    def __init__(self, settings: OutputSettings, max_folders: int = 8) -> None:
        self.settings = settings
        self.tiles = TileCache(settings.tile_cache_mb << 20)
        self._folders: OrderedDict[tuple[str, str, int], ViewerFolder] = OrderedDict()
        self._max = max_folders
        self._lock = threading.Lock()

    def get(self, out_dir: Path, slide_path: Path | None) -> ViewerFolder:
        """Return the folder's viewer state, rebuilt when report.json changes."""
        report = out_dir / "report.json"
        if not report.is_file():
            raise ViewerDataError(f"{report} not found; the job has no outputs yet")
        key = (str(out_dir.resolve()), str(slide_path), report.stat().st_mtime_ns)
        with self._lock:
            folder = self._folders.get(key)
            if folder is None:
                folder = ViewerFolder(out_dir, slide_path, self.settings)
                self._folders[key] = folder
                while len(self._folders) > self._max:
                    self._folders.popitem(last=False)
            self._folders.move_to_end(key)
            return folder


def slide_from_report(out_dir: Path) -> Path | None:
    """Return the slide path recorded in ``report.json`` when that file exists."""
    try:
        path = Path(str(_read_json(out_dir / "report.json")["slide"]["path"]))
    except (ViewerDataError, KeyError, TypeError):
        return None
    return path if path.exists() else None
