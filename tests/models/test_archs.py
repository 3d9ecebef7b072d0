"""The ResNet block written out in ``models.archs`` is torchvision's, layer for layer."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock as TorchvisionBlock

from models.archs import BasicBlock


def _shortcut() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(8, 16, 1, stride=2, bias=False), nn.BatchNorm2d(16))


def test_basic_block_matches_torchvision() -> None:
    torch.manual_seed(0)
    ours = BasicBlock(8, 16, stride=2, downsample=_shortcut())
    theirs = TorchvisionBlock(8, 16, stride=2, downsample=_shortcut())
    assert set(ours.state_dict()) == set(theirs.state_dict())
    for m in ours.modules():  # non-trivial batch-norm statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 8, 32, 32)
    for mode in (True, False):
        ours.train(mode)
        theirs.train(mode)
        assert torch.allclose(ours(x.clone()), theirs(x.clone()), atol=1e-6)


def test_inference_path_does_not_import_torchvision() -> None:
    import subprocess
    import sys

    code = (
        "import sys; import models.zoo; from models.registry import create_model; "
        "create_model('atc-pattern-v1'); create_model('atc-necrosis-v1'); "
        "print('torchvision' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
