"""atc-wsi model layer: device choice, model registry, inference engine, analyses, training.

Importing ``models`` is cheap (it does not import torch); the registry, the engine and
``analyze_slide`` load on first use::

    from models import analyze_slide, create_model, list_models
"""

from __future__ import annotations

import importlib
import os
from typing import Any

# Large tensor buffers (≥ 2 MB) on transparent huge pages. With the bounded heap
# (``models.device.bound_heap``) every large buffer is a fresh mapping whose pages fault in
# zeroed; 2 MB pages instead of 4 kB ones cut an analysis's kernel time by about a fifth at the
# same peak RSS (docs/benchmarks.md, bf16 section). PyTorch reads the variable once, at its first
# allocation, so it is set here, before anything in this package imports torch.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

from models.errors import (
    AnalysisCancelled,
    InvalidSettingsError,
    ModelError,
    UnknownModelError,
    WeightsError,
)

_LAZY = {
    "ModelSpec": "models.registry",
    "create_model": "models.registry",
    "get_spec": "models.registry",
    "list_models": "models.registry",
    "register_model": "models.registry",
    "resolve_device": "models.device",
    "DeviceChoice": "models.device",
    "Engine": "models.engine",
    "analyze_slide": "models.analysis",
    "AnalysisResult": "models.analysis",
    "PipelineSettings": "models.settings",
}

__all__ = [
    "AnalysisCancelled",
    "AnalysisResult",
    "DeviceChoice",
    "Engine",
    "InvalidSettingsError",
    "ModelError",
    "ModelSpec",
    "PipelineSettings",
    "UnknownModelError",
    "WeightsError",
    "analyze_slide",
    "create_model",
    "get_spec",
    "list_models",
    "register_model",
    "resolve_device",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")
