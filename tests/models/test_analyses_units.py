"""Pure parts of the pattern and necrosis analyses and the analysis plan."""

from __future__ import annotations

import numpy as np
import pytest

from models.analyses import plan_analyses
from models.analyses.necrosis import mask_to_polygons, stitch, tumour_bed_gate
from models.analyses.pattern import summarise_patterns
from models.errors import UnknownModelError
from wsi import build_tile_grid
from wsi.synthetic.classes import PATTERN_CLASSES


def test_prerequisites_are_added_and_ordered() -> None:
    assert [a.name for a in plan_analyses(["necrosis"])] == ["pattern", "scope", "necrosis"]
    assert [a.name for a in plan_analyses(["grading"])] == ["pattern", "scope", "grading"]
    with pytest.raises(UnknownModelError, match="pattern"):
        plan_analyses(["patterns"])


def test_stitching_takes_every_pixel_from_its_owning_tile() -> None:
    # 1 µm/px slide, 2 µm/px tiles of 64 px with 16 px overlap; map downsample 2
    grid = build_tile_grid(
        l0_dimensions=(500, 400),
        mpp=1.0,
        level_downsamples=(1.0,),
        target_mpp=2.0,
        tile_px=64,
        overlap_px=16,
    )
    ds, s = 2, 32
    stride_l0 = grid.l0_stride / grid.stride_px * ds  # level-0 px per map px

    def truth(r: np.ndarray, c: np.ndarray) -> np.ndarray:
        return ((np.sin(r / 7.0) + np.cos(c / 5.0)) * 60 + 128).astype(np.uint8)

    tiles = np.zeros((len(grid), s, s), np.uint8)
    r, c = np.mgrid[0:s, 0:s]
    for k, (x, y) in enumerate(grid.l0_xy.tolist()):
        tiles[k] = truth(r + y / stride_l0, c + x / stride_l0)
        m = (grid.overlap_px // 2) // ds  # corrupt each tile's margin: it must never be used
        tiles[k, :m], tiles[k, -m:], tiles[k, :, :m], tiles[k, :, -m:] = 0, 0, 0, 0
        if grid.grid_ij[k, 0] == 0:
            tiles[k, :m] = truth(r[:m] + y / stride_l0, c[:m] + x / stride_l0)
        if grid.grid_ij[k, 1] == 0:
            tiles[k, :, :m] = truth(r[:, :m] + y / stride_l0, c[:, :m] + x / stride_l0)
    out = stitch(grid, tiles, ds)
    rr, cc = np.mgrid[0 : out.shape[0], 0 : out.shape[1]]
    inner = out[: out.shape[0] - m, : out.shape[1] - m]
    assert np.array_equal(inner, truth(rr, cc)[: inner.shape[0], : inner.shape[1]])


def test_polygons_keep_holes_and_area() -> None:
    yy, xx = np.mgrid[0:200, 0:200]
    d = np.hypot(yy - 100, xx - 100)
    mask = (d < 80) & (d > 30)
    mask[5:15, 5:15] = True  # a second, small region
    polys = mask_to_polygons(mask, l0_per_px=4.0, min_area_l0=0.0, simplify_l0=0.0)
    assert len(polys) == 2
    big = max(polys, key=lambda p: p.area)
    assert len(big.interiors) == 1 and big.is_valid
    assert big.area == pytest.approx((mask.sum() - 100) * 16, rel=0.02)
    assert len(mask_to_polygons(mask, 4.0, min_area_l0=200 * 16, simplify_l0=0.0)) == 1


def test_pattern_summary_predominant_and_mixed() -> None:
    idx = {c: i for i, c in enumerate(PATTERN_CLASSES)}
    labels = ["spindle"] * 8 + ["pleomorphic"] * 3 + ["squamoid"] * 1 + ["non_tumour"] * 3
    probs = np.full((len(labels) + 1, 6), 0.02, np.float32)
    for k, c in enumerate(labels):
        probs[k, idx[c]] = 0.9
    probs[-1] = np.nan  # unreadable tile
    tissue = np.full(len(probs), 0.05)
    rep = summarise_patterns(probs, tissue, PATTERN_CLASSES, 0.10)
    assert rep["predominant"] == "spindle" and rep["mixed"]
    assert rep["secondary_patterns"] == ["pleomorphic"]  # squamoid: 1/12 = 8% < 10%
    assert rep["viable_tumour_mm2"] == pytest.approx(0.60)
    assert rep["per_class"]["spindle"]["percent_of_tumour"] == pytest.approx(66.67, abs=0.01)


def test_crop_labels_are_the_majority_class_of_the_crop_itself() -> None:
    from models.training.data import majority_labels

    masks = np.zeros((3, 4, 4), dtype=np.uint8)
    masks[0] = 2  # all class 2
    masks[1, :, :3] = 5  # 12 of 16 pixels class 5
    masks[2, :1] = 1  # 4 of 16 pixels class 1: the rest (0) wins
    assert majority_labels(masks, 6).tolist() == [2, 5, 0]


def test_necrosis_counts_only_in_the_pattern_tumour_bed() -> None:
    # 4 × 3 pattern tiles of 100 level-0 px; map at 10 level-0 px per pixel.
    grid = build_tile_grid(
        l0_dimensions=(400, 300), mpp=1.0, level_downsamples=(1.0,), target_mpp=1.0, tile_px=100
    )
    label = {(0, 0): "necrosis", (0, 3): "spindle", (2, 2): "non_tumour", (2, 3): "non_tumour"}
    probs = np.zeros((len(grid), len(PATTERN_CLASSES)), np.float32)
    for k, (i, j) in enumerate(grid.grid_ij.tolist()):
        probs[k, PATTERN_CLASSES.index(label.get((i, j), "background"))] = 1.0
    gate = tumour_bed_gate(grid, probs, PATTERN_CLASSES, (30, 40), 10.0)
    assert gate[:10, :10].all()  # the necrosis tile
    assert gate[:20, :20].all()  # its neighbours: the edge of the necrotic region
    assert gate[:10, 30:40].all()  # a tumour tile: necrosis inside the tumour bed counts
    assert not gate[20:30, 20:40].any()  # non-tumour: benign, never tumour necrosis
    assert not gate[:, 20:30].any()  # glass away from necrosis and tumour
    assert int(gate.sum()) == 500
