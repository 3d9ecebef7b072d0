"""Cell analyses on the real data in ``../shared/data``: AMi-Br mitosis crops, DeepLIIF IHC tiles.

No target is tuned to these; ``scripts/evaluate_cells.py`` reports them beside the synthetic
held-out figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from scipy import ndimage as ndi

from models.cells.dab import dab_cells
from models.cells.mitosis_net import MEAN, STD, MitosisTileDetector
from models.cells.stain import HED
from models.training.augment import normalise


def ami_br(det: MitosisTileDetector, root: Path) -> dict[str, Any]:
    """The real AMi-Br crops through the crop evaluation core (``atc-wsi evaluate mitosis``)."""
    from models.settings import PipelineSettings
    from models.training.crop_eval import evaluate_set
    from models.training.eval_tasks import mitosis_predictor, mitosis_task
    from models.training.labelled import read_labelled

    min_score = PipelineSettings().mitosis.min_score
    return evaluate_set(read_labelled(root), mitosis_task(min_score), mitosis_predictor())


def _ihc_net(peak_threshold: float, min_distance_um: float) -> Any:
    """``atc-tam-ihc-v1`` at 0.5 µm/px with the given peak threshold and spacing."""
    from models.cells import zoo  # noqa: F401
    from models.cells.heat_net import IhcMacrophageDetector
    from models.registry import create_model

    det = create_model("atc-tam-ihc-v1")
    assert isinstance(det, IhcMacrophageDetector)
    det.thresholds = (peak_threshold, 0.2)
    det.min_distance_px = round(min_distance_um / 0.5)
    return det.eval()


def _net_cells(det: Any, rgb: np.ndarray, min_distance_um: float = 4.0) -> int:
    """DAB-positive cells found by the IHC network ``det`` in one tile at 0.5 µm/px."""
    from models.cells.candidates import nms_points

    h, w = (-(-d // 8) * 8 for d in rgb.shape[:2])
    pad = np.full((h, w, 3), 255, np.uint8)
    pad[: rgb.shape[0], : rgb.shape[1]] = rgb
    x = normalise(torch.from_numpy(pad).permute(2, 0, 1)[None].float() / 255, MEAN, STD)
    with torch.inference_mode():
        peaks = det(x)[0, 0].numpy()
    peaks = peaks[peaks[:, 2] >= 0]
    keep = nms_points(peaks[:, [1, 0]].astype(np.float64), peaks[:, 2], min_distance_um / 0.5)
    return len(keep)


def deepliif(
    root: Path, mpp: float = 0.5, threshold: float = 0.15, peak_threshold: float = 0.1
) -> dict[str, Any]:
    """DAB-positive cell counts on the real Ki67 tiles vs their masks (red = positive nuclei):
    the classical DAB peaks (``detected``) and the ``atc-tam-ihc-v1`` network (``detected_net``,
    at the default ``tam.ihc_peak_threshold``)."""
    out = []
    net = _ihc_net(peak_threshold, 4.0)
    for f in sorted((root / "ihc").glob("*.png")):
        rgb = np.asarray(Image.open(f).convert("RGB"))
        gt = np.asarray(Image.open(root / "groundtruth" / f.name).convert("RGB")).astype(int)
        red = (gt[..., 0] > 150) & (gt[..., 1] < 100) & (gt[..., 2] < 100)
        n_true = int(ndi.label(red)[1])
        conc = HED.concentrations(rgb)
        res = dab_cells(conc[..., 2], conc.sum(-1), mpp=mpp, threshold=threshold, min_cell_um2=12)
        out.append(
            {
                "tile": f.name,
                "true_positive_nuclei": n_true,
                "detected": len(res.rc),
                "detected_net": _net_cells(net, rgb),
                "dab_area_fraction": round(res.positive_px / max(res.tissue_px, 1), 4),
                "true_positive_area_fraction": round(float(red.mean()), 4),
            }
        )
    tot_t = sum(int(o["true_positive_nuclei"]) for o in out)  # type: ignore[call-overload]
    tot_d = sum(int(o["detected"]) for o in out)  # type: ignore[call-overload]
    tot_n = sum(int(o["detected_net"]) for o in out)  # type: ignore[call-overload]
    return {
        "tiles": out,
        "total_true": tot_t,
        "total_detected": tot_d,
        "count_ratio": round(tot_d / max(tot_t, 1), 3),
        "total_detected_net": tot_n,
        "count_ratio_net": round(tot_n / max(tot_t, 1), 3),
        "assumed_mpp": mpp,
        "note": "Ki67 is nuclear DAB, not CD68/CD163 cytoplasm; mpp of the tiles is assumed.",
    }
