"""BatchNorm folding: same outputs, same module object, untraceable parents searched inside."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models.cells.mitosis_net import MitosisTileDetector
from models.fusion import fold_batchnorm


def _bn_count(m: nn.Module) -> int:
    return sum(isinstance(k, nn.BatchNorm2d) for k in m.modules())


def _randomise_bn(m: nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    for k in m.modules():
        if isinstance(k, nn.BatchNorm2d):
            k.running_mean.copy_(torch.randn(k.num_features, generator=g) * 0.3)
            k.running_var.copy_(torch.rand(k.num_features, generator=g) + 0.5)
            k.weight.data.copy_(torch.rand(k.num_features, generator=g) + 0.5)
            k.bias.data.copy_(torch.randn(k.num_features, generator=g) * 0.2)


def test_folded_sequential_gives_the_same_outputs() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU()),
        nn.Sequential(nn.Conv2d(8, 4, 3, padding=1), nn.BatchNorm2d(4)),
    ).eval()
    _randomise_bn(net)
    x = torch.randn(2, 3, 20, 20)
    with torch.inference_mode():
        ref = net(x)
    assert fold_batchnorm(net) is net
    assert _bn_count(net) == 0
    with torch.inference_mode():
        assert torch.allclose(net(x), ref, atol=1e-5)


def test_untraceable_detector_is_folded_inside_and_keeps_its_methods() -> None:
    torch.manual_seed(1)
    det = MitosisTileDetector(max_candidates=8).eval()
    _randomise_bn(det)
    x = torch.randn(1, 3, 128, 128) * 0.3
    with torch.inference_mode():
        ref = det(x)
    fold_batchnorm(det)
    assert _bn_count(det) == 0
    det.configure(min_od=0.3, sigma_um=1.5, max_candidates=8)  # methods survive
    with torch.inference_mode():
        out = det(x)
    assert torch.allclose(out, ref, atol=1e-4)


def test_training_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(nn.Sequential(nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1)))


def test_relu_before_max_pool_is_moved_after_it_exactly() -> None:
    from torch.fx.experimental.optimization import fuse

    from models.cells.nets import MitosisNet
    from models.fusion import pool_before_relu

    torch.manual_seed(1)
    net = MitosisNet(n_classes=4).eval()
    _randomise_bn(net)
    x = torch.randn(16, 3, 64, 64)
    with torch.inference_mode():
        ref = net(x)
        gm = pool_before_relu(fuse(net))
        order = [
            type(gm.get_submodule(n.target)).__name__
            for n in gm.graph.nodes  # type: ignore[union-attr]
            if n.op == "call_module"
        ]
        # both pools now come before the ReLU that preceded them
        pools = [i for i, kind in enumerate(order) if kind == "MaxPool2d"]
        assert len(pools) == 2 and all(order[i + 1] == "ReLU" for i in pools)
        assert all(order[i - 1] == "Conv2d" for i in pools)
        assert torch.allclose(gm(x), ref, atol=1e-5)
        # the swap itself is exact: same graph with and without it
        assert torch.equal(gm(x), fuse(net)(x))
    assert pool_before_relu(net) is net  # not a traced graph: unchanged
