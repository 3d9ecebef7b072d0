"""Cell analyses on the real data in ``../shared/data``: AMi-Br mitosis crops, DeepLIIF IHC tiles.

No target is tuned to these; ``scripts/evaluate_cells.py`` reports them beside the synthetic
held-out figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from models.cells.mitosis_net import MitosisTileDetector


def ami_br(det: MitosisTileDetector, root: Path) -> dict[str, Any]:
    """The real AMi-Br crops through the crop evaluation core (``atc-wsi evaluate mitosis``)."""
    from models.settings import PipelineSettings
    from models.training.crop_eval import evaluate_set
    from models.training.eval_tasks import mitosis_predictor, mitosis_task
    from models.training.labelled import read_labelled

    min_score = PipelineSettings().mitosis.min_score
    return evaluate_set(read_labelled(root), mitosis_task(min_score), mitosis_predictor())


def deepliif(root: Path, threshold: float = 0.15, peak_threshold: float = 0.1) -> dict[str, Any]:
    """DAB-positive cell counts on the real Ki67 tiles vs their masks (red = positive nuclei):
    the classical DAB peaks (``detected``) and the ``atc-tam-ihc-v1`` network (``detected_net``,
    at the default ``tam.ihc_peak_threshold``), on the tiles resampled from their 0.25 µm/px
    (``models.training.real_cells``; 0.5 was assumed until issue 17) to 0.5 µm/px. Thresholds
    chosen on real Ki67 splits: ``scripts/evaluate_real_cells.py``."""
    from models.cells import zoo  # noqa: F401
    from models.cells.heat_net import MacrophageDetector
    from models.registry import create_model
    from models.training.real_cells import load_deepliif
    from models.training.real_scoring import ihc_positive_points

    net = create_model("atc-tam-ihc-v1")
    assert isinstance(net, MacrophageDetector)
    out = []
    for im in load_deepliif(root.parent.parent):
        _, classical = ihc_positive_points(None, im, threshold=0.0, dab_threshold=threshold)
        _, found = ihc_positive_points(net, im, threshold=peak_threshold)
        out.append(
            {
                "tile": f"{im.name}.png",
                "true_positive_nuclei": len(im.of("positive")),
                "detected": len(classical),
                "detected_net": len(found),
            }
        )
    tot_t = sum(int(o["true_positive_nuclei"]) for o in out)
    tot_d = sum(int(o["detected"]) for o in out)
    tot_n = sum(int(o["detected_net"]) for o in out)
    return {
        "tiles": out,
        "total_true": tot_t,
        "total_detected": tot_d,
        "count_ratio": round(tot_d / max(tot_t, 1), 3),
        "total_detected_net": tot_n,
        "count_ratio_net": round(tot_n / max(tot_t, 1), 3),
        "assumed_mpp": im.mpp,
        "note": "Ki67 is nuclear DAB, not CD68/CD163 cytoplasm; mpp estimated from nucleus size.",
    }
