"""Typed settings of the whole analysis pipeline (slide side + model side).

Defaults live in ``configs/default.yaml``; ``workers.settings.load_settings`` is the one loader
(YAML + ``ATC_*`` environment). Each section is frozen and rejects unknown keys, so a misspelt
option is an error, never silently ignored.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from models.analyses.settings_cells import GradingSettings, MitosisSettings, TamSettings
from wsi.settings import SlideSettings, TilingSettings, TissueSettings

ANALYSIS_NAMES: tuple[str, ...] = ("pattern", "scope", "necrosis", "mitosis", "tam", "grading")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())


class EngineSettings(_Frozen):
    """How inference runs: device, precision, batching, loaders, checkpoints."""

    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto = CUDA when available, else CPU (ATC_DEVICE overrides auto)"
    )
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto",
        description="autocast dtype of the trained layers; auto = bf16/fp16 on GPU, bf16 on a "
        "CPU with AMX, fp32 on other CPUs (ATC_PRECISION overrides auto)",
    )
    batch_size: int = Field(32, ge=1, le=4096, description="tiles per forward pass")
    num_workers: int = Field(
        -1, ge=-1, le=64, description="tile-loading processes; -1 = auto (cores − 1, at most 8)"
    )
    prefetch_factor: int = Field(4, ge=1, description="batches each loader keeps ready")
    compile: bool = Field(False, description="torch.compile the models (slow first batch)")
    chunk_tiles: int = Field(
        2000, ge=1, description="tiles per checkpointed chunk when a work folder is given"
    )
    threads: int = Field(0, ge=0, description="torch intra-op threads; 0 = leave torch's default")
    bounded_heap: bool = Field(
        True,
        description="fix glibc's mmap threshold so peak memory does not grow with the slide "
        "(costs CPU time in page faults; see models.device.bound_heap)",
    )

    def resolved_workers(self) -> int:
        """Number of DataLoader worker processes to start."""
        if self.num_workers >= 0:
            return self.num_workers
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        return max(0, min(8, cores - 1))


class PatternSettings(_Frozen):
    """ATC growth-pattern tile classification."""

    model: str = Field(
        "atc-pattern-v1", description="tile classifier: name, name@version or model folder"
    )
    min_tissue: float = Field(0.25, ge=0, le=1, description="tissue fraction a tile needs")
    mixed_threshold: float = Field(
        0.10, ge=0, le=1, description="a secondary pattern above this share of tumour is 'mixed'"
    )
    blur_focus: float = Field(
        20.0, ge=0, description="tiles with a grey Laplacian variance below this count as blurred"
    )


class NecrosisSettings(_Frozen):
    """Necrosis segmentation."""

    model: str = Field(
        "atc-necrosis-v1", description="segmenter: name, name@version or model folder"
    )
    min_tissue: float = Field(0.02, ge=0, le=1, description="tissue fraction a tile needs")
    threshold: float = Field(
        0.85, gt=0, lt=1, description="necrosis probability cut-off (chosen on validation slides)"
    )
    map_downsample: int = Field(
        2, ge=1, le=16, description="stored necrosis map pixel = this many model pixels"
    )
    min_polygon_um2: float = Field(
        2000.0, ge=0, description="necrosis polygons smaller than this (µm²) are dropped"
    )
    simplify_um: float = Field(4.0, ge=0, description="polygon simplification tolerance (µm)")
    gate_by_pattern: bool = Field(
        True,
        description="count necrosis only in pattern tiles called necrosis and tumour tiles next "
        "to them (one tumour bed for both models)",
    )


class ScopeSettings(_Frozen):
    """Scope verdict rules (``models.analyses.scope``)."""

    max_mpp: float = Field(
        1.0, gt=0, description="slides with coarser level-0 pixels (µm) are outside validated"
    )
    min_tile_confidence: float = Field(
        0.5,
        ge=0,
        le=1,
        description="a tissue tile whose top pattern probability is below this is 'unsure' "
        "(5th percentile on real validation tiles)",
    )
    max_uncertain_fraction: float = Field(
        0.5, ge=0, le=1, description="more unsure tissue tiles than this: tissue not recognised"
    )
    min_tumour_mm2: float = Field(
        0.15, ge=0, description="viable tumour below this area (mm²) is 'no tumour found'"
    )
    min_tumour_fraction: float = Field(
        0.05, ge=0, le=1, description="… or below this share of the classified tissue"
    )
    stain_mpp: float = Field(4.0, gt=0, description="µm/px of the read that judges the stain")


class PipelineSettings(_Frozen):
    """Everything ``models.analysis.analyze_slide`` needs."""

    slide: SlideSettings = SlideSettings()
    tissue: TissueSettings = TissueSettings()
    tiling: TilingSettings = TilingSettings()
    engine: EngineSettings = EngineSettings()
    analyses: tuple[str, ...] = Field(
        ANALYSIS_NAMES, description="analyses to run (their prerequisites are added)"
    )
    pattern: PatternSettings = PatternSettings()
    scope: ScopeSettings = ScopeSettings()
    necrosis: NecrosisSettings = NecrosisSettings()
    mitosis: MitosisSettings = MitosisSettings()
    tam: TamSettings = TamSettings()
    grading: GradingSettings = GradingSettings()

    @field_validator("analyses")
    @classmethod
    def _known(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError(f"analyses must name at least one of {', '.join(ANALYSIS_NAMES)}")
        if len(set(v)) != len(v):
            raise ValueError(f"analyses lists a name twice: {list(v)}")
        return v

    def model_refs(self) -> dict[str, str]:
        """The model reference each analysis uses (``tam.ihc`` for the IHC detector)."""
        return {
            "pattern": self.pattern.model,
            "necrosis": self.necrosis.model,
            "mitosis": self.mitosis.model,
            "tam": self.tam.model,
            "tam.ihc": self.tam.ihc_model,
        }

    def pinned_weights(self) -> dict[str, str]:
        """sha256 of the weights behind each versioned reference (``name@version`` or a model
        folder), so that retraining into the same folder changes the configuration hash; bare
        shipped names are pinned by the code version already. Unresolvable references map to
        ``"unresolved"`` (the analysis reports the error)."""
        from models.errors import ModelError

        out = {}
        for analysis, ref in self.model_refs().items():
            if "@" not in ref and "/" not in ref and os.sep not in ref:
                continue
            from models.registry import get_spec

            try:
                out[analysis] = get_spec(ref).sha256
            except ModelError:
                out[analysis] = "unresolved"
        return out

    def config_hash(self) -> str:
        """sha256 (first 16 hex) of the settings as canonical JSON (with the weights digests of
        versioned model references): part of the idempotency key."""
        text = self.model_dump_json(exclude={"engine"})
        pinned = self.pinned_weights()
        if pinned:
            text += json.dumps(pinned, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]
