"""Real labelled cells as ``atc-wsi train tam --real cells`` data (H&E macrophage detector).

The sets and their targets are those of the real-cell fine-tune of ``atc-tam-v1``
(:mod:`models.training.real_cells`, :func:`models.training.heat_cells.real_targets`): MoNuSAC
macrophages are positives and its lymphocytes, neutrophils and epithelial nuclei negatives of the
macrophage channel; every labelled nucleus of CoNSeP and NuCLS trains the nucleated-cell channel.
Images are resampled to the detector's 0.5 µm/px, padded with white to whole tiles and cut into
tiles (:class:`models.training.annotated_cells.HeatTiles`).

Folds: MoNuSAC's own patient folds (``fold0`` / ``fold1``); CoNSeP and NuCLS by their own splits
(train = fold 0, test = fold 1). ``--holdout-fold 1`` therefore trains what
``scripts/train_macrophage.py --real fold0`` trains; the card's figures are MoNuSAC macrophage
detection on the held-out patients and nucleus detection on the held-out CoNSeP images, at the
detector's own thresholds (:mod:`models.training.real_scoring`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from models.errors import LabelError
from models.training.annotated_cells import HeatTiles
from models.training.real_cells import CellImage

#: Tile edge (px at 0.5 µm/px) of real cell tiles (CoNSeP patches are 128 px there).
CELL_TILE_PX = 128
#: Target blob σ in heat px (as ``scripts/train_macrophage.py``).
SIGMA = 1.5

CELL_SETS_CARD: list[dict[str, Any]] = [
    {
        "set": "../shared/data/real/cells/monusac_test_colormask",
        "origin": "sarah-antillia/ImageMask-Dataset-MoNuSAC-2020@584c78f",
        "licence": "CC BY-NC-SA 4.0 (non-commercial)",
        "mpp": 0.25,
        "labels": {
            "macrophage": "macrophage (positive)",
            "lymphocyte, neutrophil, epithelial": "negatives of the macrophage channel",
        },
        "proxy": "TCGA breast, kidney, lung, prostate macrophages for ATC TAMs",
    },
    {
        "set": "../shared/data/real/cells/consep_patches",
        "origin": "RessCris2/pannuke_app@2b35a85",
        "licence": "repo GPL-3.0",
        "mpp": 0.25,
        "labels": {"every nucleus": "nucleated cell"},
        "proxy": "colorectal nuclei for the nucleated-cell channel",
    },
    {
        "set": "../shared/data/real/cells/nucls_cellvitpp_example",
        "origin": "TIO-IKIM/CellViT-plus-plus@463c5c4",
        "licence": "CC0 (data)",
        "mpp": 0.25,
        "labels": {"every nucleus": "nucleated cell", "stromal_or_macrophage": "left out"},
        "proxy": "breast nuclei for the nucleated-cell channel",
    },
]


def fold_of_cells(img: CellImage) -> int:
    """Fold (0 or 1) of a real cell image (its set's own fold or split)."""
    return 1 if img.split in ("fold1", "test") else 0


def load_cells() -> list[CellImage]:
    """MoNuSAC, CoNSeP (both splits) and NuCLS (both splits)."""
    from models.training import real_cells as rc

    return [
        *rc.load_monusac(),
        *rc.load_consep(split="train"),
        *rc.load_consep(split="test"),
        *rc.load_nucls(split="train"),
        *rc.load_nucls(split="test"),
    ]


def cell_tiles(images: Sequence[CellImage], size: int = CELL_TILE_PX) -> HeatTiles:
    """Every image at 0.5 µm/px cut into ``size`` tiles (padding white, a negative everywhere)."""
    from models.training.heat_cells import MPP, padded
    from models.training.real_cells import resample

    out_img, out_tgt = [], []
    for img in images:
        im = resample(img, MPP)
        h, w = im.rgb.shape[:2]
        hp, wp = -(-h // size) * size, -(-w // size) * size
        rgb, t = padded(im, (hp, wp), SIGMA)
        for y in range(0, hp, size):
            for x in range(0, wp, size):
                out_img.append(rgb[y : y + size, x : x + size])
                out_tgt.append(t[:, y // 2 : (y + size) // 2, x // 2 : (x + size) // 2])
    return HeatTiles(np.stack(out_img), np.stack(out_tgt))


def quarters(tiles: HeatTiles, size: int) -> HeatTiles:
    """Tiles larger than ``size`` (a multiple of it) cut into ``size`` tiles."""
    s = tiles.images.shape[1]
    if s == size:
        return tiles
    if s % size:
        raise ValueError(f"{s} px tiles cannot be cut into {size} px tiles")
    images, targets = [], []
    for y in range(0, s, size):
        for x in range(0, s, size):
            images.append(tiles.images[:, y : y + size, x : x + size])
            targets.append(tiles.targets[:, :, y // 2 : (y + size) // 2, x // 2 : (x + size) // 2])
    return HeatTiles(np.concatenate(images), np.concatenate(targets))


def cell_sets(
    holdout_fold: int | None, holdout_groups: Sequence[str]
) -> tuple[HeatTiles, list[CellImage], dict[str, Any]]:
    """(training tiles, held-out images, card ``data``) of ``--real cells``.

    Raises:
        LabelError: a named group that no image has, or every image held out.
    """
    images = load_cells()
    known = {i.group for i in images}
    unknown = sorted(set(holdout_groups) - known)
    if unknown:
        raise LabelError(f"--holdout names {unknown} are neither slides nor real cell groups")
    held = [i for i in images if fold_of_cells(i) == holdout_fold or i.group in set(holdout_groups)]
    train = [i for i in images if i not in held]
    if not train:
        raise LabelError("every real cell image is held out: nothing left to train on")
    data = {
        "training_sets": CELL_SETS_CARD,
        "images_trained": len(train),
        "heldout_sets": sorted({i.source for i in held}),
        "heldout_groups": sorted({i.group for i in held}),
        "tile_px": CELL_TILE_PX,
        "target_sigma_heat_px": SIGMA,
    }
    return cell_tiles(train), held, data


def cell_figures(folder: str, held: Sequence[CellImage]) -> dict[str, Any]:
    """Held-out figures of the detector ``folder`` at its own thresholds."""
    from models.cells.heat_net import MacrophageDetector
    from models.registry import create_model
    from models.training.real_scoring import score_macrophages, score_nuclei

    det = create_model(folder)
    if not isinstance(det, MacrophageDetector):
        raise TypeError(f"{folder} is not a macrophage detector")
    mac_t, nuc_t = det.thresholds
    out: dict[str, Any] = {"thresholds": [mac_t, nuc_t]}
    mon = [i for i in held if i.source == "monusac"]
    if mon:
        out["monusac_macrophages"] = score_macrophages(det, mon, (mac_t,))[str(mac_t)]
    nuc = [i for i in held if i.source != "monusac"]
    if nuc:
        out["nuclei"] = score_nuclei(det, nuc, (nuc_t,))[str(nuc_t)]
    return out
