"""Torch-free writers: pyramidal overlay TIFFs, QuPath GeoJSON / ASAP XML and Deep Zoom tiles."""

from wsi.export._errors import ExportError
from wsi.export.colors import CLASS_COLORS, Colormap, colormap_for
from wsi.export.dzi import DeepZoom, TileCache
from wsi.export.geojson import to_asap_xml, to_geojson
from wsi.export.overlays import OverlayFile, render_codes, write_overlay_tiff, write_overlays

__all__ = [
    "CLASS_COLORS",
    "Colormap",
    "DeepZoom",
    "ExportError",
    "OverlayFile",
    "TileCache",
    "colormap_for",
    "render_codes",
    "to_asap_xml",
    "to_geojson",
    "write_overlay_tiff",
    "write_overlays",
]
