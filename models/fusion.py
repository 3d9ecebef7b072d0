"""Inference-time graph rewrites: BatchNorm folded into the convolution, ReLU after max-pooling.

In eval mode a BatchNorm is a fixed per-channel affine map, so it can be folded into the weights
and bias of the preceding convolution: the same outputs (within float rounding, ~1e-6) for one
kernel launch and one memory pass fewer per layer. On the 2-core CPU this saves 10–30% of a
forward pass of the small networks here (measured in ``scripts/bench_pipeline.py``).

A ReLU directly followed by a max-pool is moved after the pool: ``max(relu(a), relu(b)) =
relu(max(a, b))`` exactly (ReLU is monotone), and the ReLU then touches a quarter of the values
(``docs/benchmarks.md``, bf16 section).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from torch import fx, nn
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
        setattr(model, name, pool_before_relu(fused))
    return model


def _is(node: fx.Node, gm: fx.GraphModule, kinds: tuple[type[nn.Module], ...]) -> bool:
    if node.op != "call_module" or not isinstance(node.target, str):
        return False
    return isinstance(gm.get_submodule(node.target), kinds)


def _other_than(node: fx.Node) -> Callable[[fx.Node], bool]:
    return lambda user: user is not node


def pool_before_relu(gm: nn.Module) -> nn.Module:
    """Swap every ReLU → MaxPool2d pair of a traced graph (the ReLU used by the pool only).

    Exact: the max of rectified values is the rectified max. Modules that are not
    ``fx.GraphModule`` are returned unchanged.
    """
    if not isinstance(gm, fx.GraphModule):
        return gm
    swapped = 0
    for pool in list(gm.graph.nodes):
        if not _is(pool, gm, (nn.MaxPool2d,)) or len(pool.args) != 1 or pool.kwargs:
            continue
        relu = pool.args[0]
        if not isinstance(relu, fx.Node) or not _is(relu, gm, (nn.ReLU,)):
            continue
        if len(relu.users) != 1 or len(relu.args) != 1:
            continue
        source = relu.args[0]
        with gm.graph.inserting_after(pool):
            new_relu = gm.graph.call_module(str(relu.target), (pool,))
        pool.replace_all_uses_with(new_relu, delete_user_cb=_other_than(new_relu))
        pool.args = (source,)
        gm.graph.erase_node(relu)
        swapped += 1
    if swapped:
        gm.graph.lint()
        gm.recompile()
    return gm
