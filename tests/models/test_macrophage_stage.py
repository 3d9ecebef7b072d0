"""Second macrophage stage: crop gathering, offsets under flips and turns, pools, scoring,
cross-fitting and the two-stage module's output format (all small, CPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.cells.macrophage_stage import (
    CROP_PX,
    MacrophageCropNet,
    TwoStageMacrophageDetector,
    gather_crops,
    suppress,
)
from models.training import macrophage_stage as ms
from models.training.augment import StainAugment
from models.training.real_cells import CellImage

WHITE = (1.0 - 0.5) / 0.25


def _image(xy: list[tuple[float, float]], labels: list[str], organ: str = "kidney") -> CellImage:
    rgb = np.full((80, 80, 3), 230, np.uint8)
    for x, y in xy:
        rgb[int(y) - 2 : int(y) + 3, int(x) - 2 : int(x) + 3] = 40
    return CellImage(
        "monusac", "im", "p", "fold0", organ, rgb, 0.5, np.array(xy, float), np.array(labels)
    )


def test_gather_crops_centres_on_the_point_and_pads_white() -> None:
    x = torch.arange(3 * 20 * 30, dtype=torch.float32).view(3, 20, 30)
    rc = torch.tensor([[5, 7], [19, 0]])
    crops = gather_crops(x, rc, size=8)
    assert crops.shape == (2, 3, 8, 8)
    assert torch.equal(crops[0, :, 4, 4], x[:, 5, 7])
    assert torch.equal(crops[0, :, 0, 0], x[:, 1, 3])
    assert torch.equal(crops[1, :, 4, 4], x[:, 19, 0])
    assert torch.allclose(crops[1, :, 7, 7], torch.full((3,), WHITE))  # below the tile
    assert torch.allclose(crops[1, :, 4, 0], torch.full((3,), WHITE))  # left of the tile


def test_suppress_keeps_the_best_of_close_points_only() -> None:
    xy = torch.tensor([[0.0, 0.0], [3.0, 0.0], [20.0, 0.0], [21.0, 0.0]])
    score = torch.tensor([0.5, 0.9, 0.7, 0.7])
    assert suppress(xy, score, 5.0).tolist() == [False, True, True, False]
    assert suppress(torch.zeros((0, 2)), torch.zeros(0), 5.0).shape == (0,)


@pytest.mark.parametrize("k", [0, 1, 2, 3])
@pytest.mark.parametrize("flip", [False, True])
def test_dihedral_turns_offsets_with_the_crop(k: int, flip: bool) -> None:
    c = CROP_PX // 2
    x = torch.zeros(1, 1, CROP_PX, CROP_PX)
    dx, dy = 7, -4
    x[0, 0, c + dy, c + dx] = 1.0
    y, off = ms.dihedral(x, torch.tensor([[float(dx), float(dy)]]), k, flip)
    r, col = np.unravel_index(int(y[0, 0].argmax()), (CROP_PX, CROP_PX))
    # the crop centre sits half a pixel off the geometric centre: allow 1 px
    assert abs((col - c) - float(off[0, 0])) <= 1 and abs((r - c) - float(off[0, 1])) <= 1


def test_pools_and_offsets_point_at_the_macrophage() -> None:
    im = _image([(30, 30), (60, 20)], ["macrophage", "lymphocyte"])
    cand = np.array([[33.0, 31.0], [60.0, 21.0], [10.0, 70.0], [39.0, 30.0]])
    data = ms.StageData()
    data.add_monusac(im, cand)
    n = data.counts()
    # candidate 3 px off the macrophage is a positive; 9 px off is left out (4-6 µm band)
    assert n["pos/monusac_truth"] == 1 and n["pos/monusac_cand"] == 1
    assert n["neg/monusac_cand"] == 2 and n["neg/monusac_label"] == 1
    crops, lab, off = data.draw(200, np.random.default_rng(0))
    assert crops.shape == (200, CROP_PX, CROP_PX, 3) and lab.sum() == 100
    c = CROP_PX // 2
    for crop, o in zip(crops[lab == 1], off[lab == 1], strict=True):
        x, y = round(float(c + o[0])), round(float(c + o[1]))
        assert crop[y, x].max() < 100  # the dark macrophage nucleus is where the offset points
        assert np.hypot(*o) <= ms.NEAR_PX + 1


def test_complete_sets_leave_out_unknown_classes() -> None:
    im = _image([(20, 20), (60, 60)], ["epithelial", "other"])
    im = CellImage("consep", "c", "g", "train", "colon", im.rgb, 0.5, im.xy, im.labels)
    data = ms.StageData()
    data.add_complete(im, np.array([[21.0, 20.0], [61.0, 59.0], [5.0, 70.0]]))
    assert data.counts()["neg/consep"] == 3  # epithelial + 2 candidates; none near "other"


def test_score_calls_and_cross_fit() -> None:
    fold0 = _image([(20, 20), (60, 60), (20, 60)], ["macrophage", "lymphocyte", "epithelial"])
    fold1 = _image([(40, 40)], ["macrophage"], organ="lung")
    # perfect calls at 0.8, an extra call on the lymphocyte at 0.4
    calls0 = np.array([[21.0, 20.0, 0.8], [60.0, 61.0, 0.4], [22.0, 21.0, 0.3]])
    calls1 = np.array([[40.0, 41.0, 0.6], [10.0, 10.0, 0.5]])
    grid = (0.3, 0.55, 0.7)
    s0 = ms.score_calls([(fold0, calls0)], grid)
    s1 = ms.score_calls([(fold1, calls1)], grid)
    assert s0["0.3"]["all"]["tp"] == 1 and s0["0.3"]["all"]["found"] == 2  # 0.3 call suppressed
    assert s0["0.3"]["all"]["immune_called_macrophage"] == 1
    assert s0["0.55"]["all"]["f1"] == 1.0 and s0["0.55"]["kidney"]["true"] == 1
    assert s1["0.55"]["lung"]["f1"] == 1.0 and s1["0.7"]["all"]["tp"] == 0
    cf = ms.cross_fit([s0, s1], grid)
    # fold 0's threshold comes from fold 1's sweep (best 0.55), and the other way round
    assert cf["model0_on_held_out"]["threshold"] == 0.55
    assert cf["model1_on_held_out"]["threshold"] == 0.55
    assert cf["pooled"]["tp"] == 2 and cf["pooled"]["f1"] == 1.0
    with pytest.raises(ValueError, match="two folds"):
        ms.cross_fit([s0], grid)


def test_train_stage_runs_and_two_stage_output_format() -> None:
    data = ms.StageData()
    im = _image([(30, 30), (60, 20)], ["macrophage", "lymphocyte"])
    data.add_monusac(im, np.array([[31.0, 30.0], [10.0, 70.0]]))
    net = ms.train_stage(data, steps=3, batch=8, log=lambda s: None)
    assert isinstance(net, MacrophageCropNet) and not net.training
    calls = ms.stage_calls(net, im, np.array([[31.0, 30.0], [10.0, 70.0]]))
    assert calls.shape == (2, 3) and ((calls[:, 2] >= 0) & (calls[:, 2] <= 1)).all()
    x, lab, off = ms.make_batch(
        data, 8, np.random.default_rng(1), torch.Generator(), StainAugment()
    )
    assert x.shape == (8, 3, CROP_PX, CROP_PX) and torch.isfinite(ms.stage_loss(net(x), lab, off))

    det = TwoStageMacrophageDetector(max_cells=16, thresholds=(0.0, 0.2)).eval()
    det.stage.load_state_dict(net.state_dict())
    with torch.inference_mode():
        out = det(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 2, 16, 3)
    called = out[:, 0][out[:, 0, :, 2] >= 0]
    assert ((called[:, :2] >= 0) & (called[:, :2] <= 63)).all()
    det.thresholds = (1.01, 0.2)  # no probability reaches it: no call
    with torch.inference_mode():
        assert (det(torch.randn(1, 3, 64, 64))[:, 0, :, 2] < 0).all()


def test_hard_negatives_pool_and_shares() -> None:
    data = ms.StageData()
    im = _image([(30, 30), (60, 20)], ["macrophage", "lymphocyte"])
    data.add_monusac(im, np.array([[31.0, 30.0], [10.0, 70.0]]))
    net = MacrophageCropNet()
    assert data.add_hard_negatives(net, 0.0, 0.4) == 2  # every real negative scores >= 0
    assert data.add_hard_negatives(net, 1.01, 0.4) == 0  # none reaches a probability > 1
    assert sum(data.neg_shares.values()) == pytest.approx(1.0)
    assert data.neg_shares["hard"] == 0.4
    crops = data.crops_of(data.neg["monusac_label"], np.array([0]))
    assert crops[0, CROP_PX // 2, CROP_PX // 2].max() < 100  # centred on the lymphocyte


def test_two_stage_model_folder_resolves_and_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from models import _registry
    from models.cells.macrophage_stage import TWO_STAGE_NAME, register_two_stage
    from models.registry import create_model, file_sha256, get_spec, list_models
    from wsi.io import atomic_write_json

    # register into a copy of the table (shipped models loaded first): other tests iterate
    # over the shipped models only
    list_models()
    monkeypatch.setattr(_registry, "_ENTRIES", dict(_registry._ENTRIES))
    monkeypatch.setattr(_registry, "_SPECS", dict(_registry._SPECS))
    register_two_stage()
    register_two_stage()  # idempotent
    assert TWO_STAGE_NAME in list_models("atc-tam-*")
    det = TwoStageMacrophageDetector()
    torch.save(det.state_dict(), tmp_path / "weights.pt")
    atomic_write_json(
        tmp_path / "card.json",
        {
            "name": "atc-tam-v1",
            "version": "9.9.9",
            "base": TWO_STAGE_NAME,
            "weights_file": "weights.pt",
            "sha256": file_sha256(tmp_path / "weights.pt"),
        },
    )
    spec = get_spec(str(tmp_path))
    assert spec.ref == "atc-tam-v1@9.9.9" and spec.input_mpp == 0.5 and spec.tile_px == 256
    loaded = create_model(str(tmp_path))
    assert isinstance(loaded, TwoStageMacrophageDetector)
    assert torch.equal(loaded.stage.head[2].weight, det.stage.head[2].weight)
