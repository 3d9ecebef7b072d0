"""Necrosis segmentation (small U-Net) at 2 µm/px.

At 2 µm/px the karyorrhectic dust and ghost outlines that mark necrosis are still 2–4 pixels,
while a 256-pixel input covers 0.5 mm, wide enough to see the geographic extent. Tiles overlap by
64 pixels; each output pixel is taken from the one tile whose central region owns it, so tile
borders (where the receptive field is cut) never reach the stitched map.
"""

from __future__ import annotations

from models.archs import SegNet
from models.registry import ModelSpec, register_model

NECROSIS_V1_SHA256 = "f77fb58fbfa4a04496e1d8178ae978e3e0575de48875be9cfc5a248f4bb5b867"


@register_model("atc-necrosis-v1")
def atc_necrosis_v1() -> ModelSpec:
    """The shipped necrosis segmenter (trained on the synthetic sampler, see its model card)."""
    return ModelSpec(
        name="atc-necrosis-v1",
        arch=lambda: SegNet(2),
        arch_name="SegNet U-Net(16-32-48-96, ResNet BasicBlock)",
        task="segment",
        input_mpp=2.0,
        tile_px=256,
        classes=("other", "necrosis"),
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        weights_file="atc-necrosis-v1.pt",
        sha256=NECROSIS_V1_SHA256,
        version="1.1.0",
        overlap_px=64,
    )
