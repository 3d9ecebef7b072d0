"""ATC growth-pattern tile classifier (spindle, pleomorphic giant cell, squamoid, necrosis, …).

Input 224 × 224 at 1.0 µm/px: a 224 µm field holds enough cells to show the pattern (fascicles of
spindle cells, giant cells 40–100 µm across, squamoid nests), while nuclei of 6–15 µm still span
6–15 pixels, enough to see their shape. Finer pixels would quadruple the cost per mm² without
adding pattern-level information; coarser ones blur the nuclear shape that separates the patterns.
"""

from __future__ import annotations

from models.archs import PatternNet
from models.registry import ModelSpec, register_model
from wsi.synthetic.classes import PATTERN_CLASSES

PATTERN_V1_SHA256 = "2d3ad59785eb3dcaac433f2d08f542577bbcadb6236880070612e9c0d7e2ad3f"


@register_model("atc-pattern-v1")
def atc_pattern_v1() -> ModelSpec:
    """The shipped pattern classifier (synthetic and real tissue training; see its model card)."""
    return ModelSpec(
        name="atc-pattern-v1",
        arch=lambda: PatternNet(len(PATTERN_CLASSES)),
        arch_name="PatternNet(24-32-64-96-160, ResNet BasicBlock)",
        task="classify",
        input_mpp=1.0,
        tile_px=224,
        classes=PATTERN_CLASSES,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        weights_file="atc-pattern-v1.pt",
        sha256=PATTERN_V1_SHA256,
        version="1.2.0",
    )
