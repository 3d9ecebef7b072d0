"""Write every output of one analysed slide into a folder, each file atomically.

Layout of ``out_dir``::

    report.json            validated against docs/report.schema.json (written last)
    report.html            self-contained report for pathologists
    annotations.geojson    QuPath objects (level-0 px)
    annotations.xml        ASAP annotations (when ``asap_xml``)
    tiles.npz              per-tile probabilities, grid maps and points (numpy)
    overlays/NAME.rgba.tiff, overlays/NAME.u8.tiff   pyramidal overlays aligned with the slide
    overlays/index.json    what each overlay holds (kind, unit, value per code, legend)
"""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from workers.report.figures import Thumb, blank_thumb
from workers.report.gallery import build_galleries, gallery_html
from workers.report.html import render_html
from workers.report.schema import validate_report
from workers.report.settings import OutputSettings
from wsi import WsiError, open_slide
from wsi.export.colors import colormap_for
from wsi.export.geojson import to_asap_xml, to_geojson
from wsi.export.overlays import OverlayFile, validate_map, write_overlays
from wsi.io import atomic_write, atomic_write_json, atomic_write_text
from wsi.results import SlideOutputs

_DEFAULT = OutputSettings()


def load_thumbnail(
    slide_path: str | Path, l0_dimensions: tuple[int, int], max_px: int, mpp: float
) -> tuple[Thumb, str]:
    """Return the slide's thumbnail, or a blank stand-in and a note saying why.

    ``mpp`` (the analysis's pixel size) is passed as the override so that a slide stating no
    pixel size (analysed with ``--mpp``) still gives a thumbnail.
    """
    try:
        with open_slide(slide_path, mpp_override=mpp) as slide:
            return Thumb(slide.get_thumbnail(max_px), slide.dimensions), ""
    except WsiError as exc:
        return blank_thumb(l0_dimensions), f"Thumbnail unavailable: {exc}"


def overlay_index(files: list[OverlayFile], outputs: SlideOutputs, out_dir: Path) -> dict[str, Any]:
    """Return ``overlays/index.json``: one entry per map with its files and legend."""
    layers: dict[str, dict[str, Any]] = {}
    for f in files:
        entry = layers.setdefault(f.name, {**f.describe(out_dir), "files": {}})
        entry.pop("path", None)
        entry.pop("form", None)
        entry["files"][f.form] = f.path.relative_to(out_dir).as_posix()
        cmap = colormap_for(f.name, f.kind, vmax=f.vmax, unit=f.unit)  # type: ignore[arg-type]
        entry["colormap"] = cmap.name
        entry["legend"] = [list(item) for item in cmap.legend]
    return {
        "l0_dimensions": list(outputs.l0_dimensions),
        "mpp": outputs.mpp,
        "layers": list(layers.values()),
    }


def tiles_npz(outputs: SlideOutputs) -> bytes:
    """Return ``tiles.npz``: tile table, grid maps (with JSON metadata) and point sets."""
    arrays: dict[str, Any] = {}
    if outputs.tiles is not None:
        t = outputs.tiles
        arrays |= {
            "l0_xy": t.l0_xy,
            "probs": t.probs,
            "l0_size": np.float64(t.l0_size),
            "class_names": np.asarray(t.class_names),
        }
    for m in outputs.maps:
        arrays[f"map__{m.name}"] = m.values
        arrays[f"map__{m.name}__meta"] = np.asarray(
            json.dumps(
                {
                    "l0_per_px": m.l0_per_px,
                    "kind": m.kind,
                    "unit": m.unit,
                    "vmax": m.vmax,
                    "l0_origin": list(m.l0_origin),
                }
            )
        )
    for p in outputs.points:
        arrays[f"points__{p.name}"] = p.l0_xy
        arrays[f"scores__{p.name}"] = p.scores
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def _write_annotations(
    outputs: SlideOutputs, out_dir: Path, settings: OutputSettings
) -> dict[str, Path]:
    """Write annotations.geojson, annotations.xml (optional) and tiles.npz."""
    paths = {"annotations": out_dir / "annotations.geojson", "tiles": out_dir / "tiles.npz"}
    collection = to_geojson(outputs, include_tiles=settings.geojson_tiles)
    with atomic_write(paths["annotations"], "w") as fh:
        json.dump(collection, fh, separators=(",", ":"), allow_nan=False)
    if settings.asap_xml:
        paths["asap"] = out_dir / "annotations.xml"
        atomic_write_text(paths["asap"], to_asap_xml(outputs))
    with atomic_write(paths["tiles"], "wb") as fh:
        fh.write(tiles_npz(outputs))
    return paths


def write_outputs(
    outputs: SlideOutputs,
    out_dir: Path,
    slide_path: str | Path,
    *,
    settings: OutputSettings = _DEFAULT,
) -> dict[str, Path]:
    """Write report.json, report.html, overlays, annotations and tiles.npz for one slide.

    Each file is replaced atomically (a crash leaves the previous complete file or none);
    ``report.json`` is written last, so its presence marks a complete set.

    Args:
        outputs: what the analysis produced (``outputs.report`` must match the schema).
        out_dir: destination folder (created).
        slide_path: the slide, read for the report thumbnail.
        settings: writer settings.

    Returns:
        Role → path: ``report``, ``report_html``, ``annotations``, ``tiles``, ``overlay_index``,
        ``asap`` (when enabled) and ``overlay:NAME.FORM`` per overlay TIFF.

    Raises:
        ReportValidationError: the report does not match the schema (nothing is written).
        ExportError: a map, point set or polygon cannot be written.
    """
    report = copy.deepcopy(outputs.report)
    validate_report(report)
    for m in outputs.maps:
        validate_map(m)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = write_overlays(
        outputs.maps,
        out_dir / "overlays",
        l0_dimensions=outputs.l0_dimensions,
        mpp=outputs.mpp,
        forms=settings.overlay_forms,
        tile_px=settings.overlay_tile_px,
        zlevel=settings.overlay_deflate_level,
    )
    paths = {f"overlay:{f.name}.{f.form}": f.path for f in files}
    paths["overlay_index"] = out_dir / "overlays" / "index.json"
    atomic_write_json(paths["overlay_index"], overlay_index(files, outputs, out_dir))
    paths |= _write_annotations(outputs, out_dir, settings)
    thumb, note = load_thumbnail(
        slide_path, outputs.l0_dimensions, settings.thumbnail_px, outputs.mpp
    )
    paths["report_html"] = out_dir / "report.html"
    galleries, gallery_note = build_galleries(
        outputs,
        slide_path,
        names=settings.gallery_point_sets,
        per_side=settings.gallery_per_side,
    )
    page = render_html(
        outputs, thumb, thumb_note=note, gallery=gallery_html(galleries, gallery_note)
    )
    atomic_write_text(paths["report_html"], page)
    paths["report"] = out_dir / "report.json"
    report["outputs"] = {
        "files": {
            k: p.relative_to(out_dir).as_posix()
            for k, p in paths.items()
            if not k.startswith("overlay:")
        },
        "overlays": [f.describe(out_dir) for f in files],
    }
    validate_report(report)
    atomic_write_json(paths["report"], report)
    return paths
