"""Typed defaults of the synthetic slide generator (``synthetic:`` in ``configs/default.yaml``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class SyntheticSettings(BaseModel):
    """Defaults of ``atc-wsi synth``; every field maps onto ``SynthSpec``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    preset: Literal["small", "demo", "large"] = Field("small", description="slide size preset")
    seed: int = Field(0, ge=0, description="generator seed")
    stain: Literal["he", "cd68", "cd163"] = Field("he", description="stain to render")
    mpp: float = Field(0.25, ge=0.1, le=2.0, description="level-0 µm per pixel")
    mitoses_per_2mm2: float = Field(10.0, ge=0, le=200, description="per 2 mm² viable tumour")
    tripolar_fraction: float = Field(0.35, ge=0, le=1, description="atypical tripolar share")
    tam_fraction: float = Field(0.35, ge=0, le=0.95, description="macrophage share of cells")
    ramified_fraction: float = Field(0.5, ge=0, le=1, description="ramified macrophage share")
    lookalikes_per_mm2: float = Field(12.0, ge=0, le=500, description="each look-alike kind")
    artefacts: bool = Field(True, description="draw pen, folds, bubbles, blur, dust")
    jpeg_quality: int = Field(85, ge=30, le=100, description="JPEG quality of image tiles")
    workers: int = Field(2, ge=1, le=64, description="rendering processes")
