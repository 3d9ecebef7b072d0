"""Registry entries of the cell models: the mitosis detector and the macrophage detectors (H&E;
CD68 / CD163 IHC).

The sha256 constants are written by the training scripts (``scripts/train_mitosis.py``,
``scripts/train_macrophage.py``) together with the weights and the model card.
"""

from __future__ import annotations

from typing import Any

from models.cells.heat_net import IhcMacrophageDetector, MacrophageDetector
from models.cells.mitosis_net import CROP_PX, MEAN, STD, MitosisTileDetector
from models.registry import ModelSpec, register_model
from wsi.taxonomy import MITOSIS_CLASSES

MITOSIS_V1_SHA256 = "5eb6ed11a37f0867ca68124852121563f55eb30337d5fdecf041a72bc9b1290c"
TAM_V1_SHA256 = "45cf7c3c7ea98bca76c17180fd8f7049b591ddea590e62b445127e173eaa4f36"
TAM_IHC_V1_SHA256 = "03549c657542dc69956bd42325ccedd2af10ead158bae9695b68ceb0af4e2e4f"

#: Output channels of the H&E cell heat-map network.
TAM_CLASSES: tuple[str, str] = ("macrophage", "nucleated_cell")


@register_model("atc-mitosis-v1")
def atc_mitosis_v1() -> ModelSpec:
    """Haematoxylin-peak candidates + a 64 px crop classifier at 0.25 µm/px (see model card).

    2.0.0: four classes (negative, typical, atypical, tripolar), trained on real AMi-Br mitoses
    and real non-mitotic nuclei as well as generated figures. 2.1.0: also real tissue scanned at
    20× (candidates on thyroid and sarcoma tiles as negatives) and crops seen at half resolution.
    """
    return ModelSpec(
        name="atc-mitosis-v1",
        arch=MitosisTileDetector,
        arch_name=(
            "MitosisTileDetector(H-OD peaks + MitosisNet 16-32-48-64, stride-2 stem, 64 px crops, "
            "4 classes)"
        ),
        task="detect",
        input_mpp=0.25,
        tile_px=512,
        classes=MITOSIS_CLASSES,
        mean=MEAN,
        std=STD,
        weights_file="atc-mitosis-v1.pt",
        sha256=MITOSIS_V1_SHA256,
        version="2.1.0",
        overlap_px=64,
        extra={"crop_px": float(CROP_PX)},
    )


def _heat_spec(name: str, arch: Any, arch_name: str, sha256: str, version: str) -> ModelSpec:
    """Spec of a cell-centre heat-map detector: 256 px tiles at 0.5 µm/px, 32 px overlap."""
    return ModelSpec(
        name=name,
        arch=arch,
        arch_name=arch_name,
        task="detect",
        input_mpp=0.5,
        tile_px=256,
        classes=TAM_CLASSES,
        mean=MEAN,
        std=STD,
        weights_file=f"{name}.pt",
        sha256=sha256,
        version=version,
        overlap_px=32,
    )


@register_model("atc-tam-v1")
def atc_tam_v1() -> ModelSpec:
    """Cell-centre heat maps (macrophage, any nucleated cell) at 0.5 µm/px (see model card)."""
    return _heat_spec(
        "atc-tam-v1",
        MacrophageDetector,
        "CellHeatNet U-Net(16-24-48-64), 2 sigmoid heat maps at half resolution",
        TAM_V1_SHA256,
        "1.3.0",
    )


@register_model("atc-tam-ihc-v1")
def atc_tam_ihc_v1() -> ModelSpec:
    """DAB-positive cell centres on CD68 / CD163 IHC at 0.5 µm/px, from the unmixed haematoxylin
    and DAB concentrations (see model card)."""
    return _heat_spec(
        "atc-tam-ihc-v1",
        IhcMacrophageDetector,
        "IhcMacrophageDetector(H-DAB colour deconvolution in the graph + CellHeatNet "
        "U-Net(16-24-48-64) on 2 concentrations), 2 sigmoid heat maps at half resolution",
        TAM_IHC_V1_SHA256,
        "1.0.0",
    )
