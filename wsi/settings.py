"""Typed settings for the slide-side stages (reading, tissue detection, tiling).

Defaults live in ``configs/default.yaml``; ``workers.settings.load_settings`` is the one loader.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SlideSettings(_Frozen):
    """How slides are opened and read."""

    max_region_px: int = Field(16_000_000, gt=0, description="largest read_region, in pixels")
    mpp_min: float = Field(0.05, gt=0, description="smallest plausible µm/px")
    mpp_max: float = Field(20.0, gt=0, description="largest plausible µm/px")
    max_dimension_px: int = Field(
        1_000_000, gt=0, description="level-0 width or height above which a header is absurd"
    )
    max_stage_read_px: int = Field(
        4_000_000_000,
        gt=0,
        description="most pixels one stage (tissue mask, thumbnail, one analysis's tiles) may "
        "decode from the pyramid present; a single-level giant needs its level 0 for the mask",
    )
    colour_fix: Literal["correct", "refuse", "off"] = Field(
        "correct",
        description="glass far from neutral in the way YCbCr frames labelled RGB explain: "
        "convert the pixels (correct), refuse the slide, or do nothing (off)",
    )
    glass_max_chroma: float = Field(
        40.0, gt=0, le=255, description="largest max−min of the glass RGB still called neutral"
    )


class TissueSettings(_Frozen):
    """Tissue detection at low resolution."""

    mask_mpp: float = Field(8.0, gt=0, description="target µm/px of the mask (8–16 is typical)")
    min_object_um2: float = Field(
        20_000.0, ge=0, description="tissue pieces smaller than this (µm²) are dropped"
    )
    max_hole_um2: float = Field(
        50_000.0, ge=0, description="holes smaller than this (µm²) are filled"
    )
    od_threshold_floor: float = Field(
        0.04, ge=0, description="lowest optical-density threshold Otsu may choose"
    )
    saturation_floor: float = Field(0.05, ge=0, le=1, description="lowest saturation threshold")
    glass_margin_od: float = Field(
        0.03, ge=0, description="OD threshold at most this above the glass (palest 5% of pixels)"
    )
    glass_margin_saturation: float = Field(
        0.03, ge=0, le=1, description="saturation threshold at most this above the glass"
    )
    reject_pen: bool = Field(True, description="remove blue, green and black pen ink")
    source_oversample: float = Field(
        2.0,
        ge=1,
        description="read the mask from a level at most mask_mpp / this µm/px and box-filter it "
        "down: a pyramid's own coarse levels differ between formats (a converter's resampling, "
        "JPEG blocks on tiny frames) and moved tissue areas by 12% between copies of one slide",
    )


class TilingSettings(_Frozen):
    """Default tiling when an analysis does not state its own."""

    tile_px: int = Field(224, gt=0, description="tile edge in target pixels")
    overlap_px: int = Field(0, ge=0, description="overlap between tiles in target pixels")
    min_tissue: float = Field(0.25, ge=0, le=1, description="tissue fraction a tile needs")
