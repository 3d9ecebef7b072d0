"""Inference-time graph rewrites: BatchNorm folded into the convolution before it.

In eval mode a BatchNorm is a fixed per-channel affine map, so it can be folded into the weights
and bias of the preceding convolution: the same outputs (within float rounding, ~1e-6) for one
kernel launch and one memory pass fewer per layer. On the 2-core CPU this saves 10–30% of a
forward pass of the small networks here (measured in ``scripts/bench_pipeline.py``).
"""

from __future__ import annotations

import logging

from torch import nn
from torch.fx.experimental.optimization import fuse

log = logging.getLogger(__name__)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every Conv→BatchNorm pair of ``model`` (in eval mode) into the convolution, in place.

    Each child module is traced with ``torch.fx`` and fused; a child that cannot be traced (data
    dependent control flow, e.g. candidate selection with ``topk``) is searched recursively, so
    the traceable networks inside it are still fused. ``model`` itself keeps its identity, its
    Python attributes and its methods; only its children are replaced.

    Returns:
        ``model`` (for chaining).
    """
    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode")
    for name, child in list(model.named_children()):
        if not any(isinstance(m, nn.BatchNorm2d) for m in child.modules()):
            continue
        try:
            fused = fuse(child)
        except Exception as exc:  # fx raises many types on untraceable code
            log.debug("not traceable, fusing inside %s: %s", name, exc)
            fold_batchnorm(child)
            continue
        setattr(model, name, fused)
    return model
