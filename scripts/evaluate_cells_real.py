"""Cell analyses on the real data in ``../shared/data``: AMi-Br mitosis crops, DeepLIIF IHC tiles.

No target is tuned to these; ``scripts/evaluate_cells.py`` reports them beside the synthetic
held-out figures.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from models.cells.mitosis_net import CROP_PX, MEAN, STD, MitosisTileDetector
from models.training.augment import normalise


def ami_br(det: MitosisTileDetector, root: Path) -> dict[str, Any]:
    """Typical vs atypical on the real AMi-Br crops (128 px at 0.25 µm/px, centre 64 px)."""
    rows = list(csv.DictReader((root / "labels_subset.csv").open(encoding="utf-8")))
    imgs, y = [], []
    for r in rows:
        img = np.asarray(Image.open(root / r["file"]).convert("RGB"))
        c0 = (img.shape[0] - CROP_PX) // 2
        imgs.append(img[c0 : c0 + CROP_PX, c0 : c0 + CROP_PX])
        y.append(1 if r["label"] == "atypical" else 0)
    x = normalise(torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 255, MEAN, STD)
    with torch.inference_mode():
        p = torch.softmax(det.classifier.eval()(x), 1).numpy()
    yt = np.array(y)
    pred_atyp = p[:, 2] > p[:, 1]
    rec_a = float(pred_atyp[yt == 1].mean())
    rec_n = float((~pred_atyp[yt == 0]).mean())
    return {
        "n": len(yt),
        "n_atypical": int(yt.sum()),
        "balanced_accuracy_typical_vs_atypical": round((rec_a + rec_n) / 2, 4),
        "recall_atypical_as_tripolar": round(rec_a, 4),
        "recall_normal_as_typical": round(rec_n, 4),
        "called_mitosis_at_0.5": round(float((p[:, 1] + p[:, 2] >= 0.5).mean()), 4),
        "called_mitosis_at": {  # the real figures' recall at candidate thresholds
            str(t): round(float((p[:, 1] + p[:, 2] >= t).mean()), 4)
            for t in (0.7, 0.8, 0.85, 0.9, 0.93, 0.96)
        },
        "note": "AMi-Br 'atypical' covers many forms (segregation errors, asymmetric, ring); the "
        "model knows only 'tripolar' as atypical, so this measures transfer, not the target.",
    }


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
