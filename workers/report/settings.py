"""Settings of the output writers and the viewer (YAML section ``outputs:``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class OutputSettings(BaseModel):
    """What ``write_outputs`` writes and how the viewer serves it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    overlay_forms: tuple[Literal["rgba", "u8"], ...] = Field(
        ("rgba", "u8"), description="overlay TIFF forms: colour-mapped RGBA and/or uint8 codes"
    )
    overlay_tile_px: int = Field(
        256, ge=16, multiple_of=16, description="overlay TIFF tile edge, px"
    )
    overlay_deflate_level: int = Field(1, ge=1, le=9, description="deflate level of overlay tiles")
    geojson_tiles: bool = Field(True, description="add one detection per classified tile")
    asap_xml: bool = Field(False, description="also write annotations.xml for ASAP")
    thumbnail_px: int = Field(1024, ge=64, le=4096, description="longer side of report thumbnails")
    gallery_per_side: int = Field(
        6, ge=0, le=24, description="report.html: highest- and lowest-scoring detections shown"
    )
    gallery_point_sets: tuple[str, ...] = Field(
        ("Macrophage", "Mitosis: Typical", "Mitosis: Atypical", "Mitosis: Tripolar"),
        description="point sets whose extreme detections report.html shows",
    )
    dzi_tile_px: int = Field(254, ge=64, le=1024, description="Deep Zoom tile edge, px")
    dzi_jpeg_quality: int = Field(80, ge=30, le=100, description="JPEG quality of slide tiles")
    tile_cache_mb: int = Field(64, ge=0, description="viewer tile cache size, MiB")
