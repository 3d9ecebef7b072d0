"""Mitosis building blocks: crop geometry, point accumulator, clustering, summary arithmetic."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.accumulate import BatchMeta
from models.analyses.hotspot import RegionMask
from models.analyses.mitosis import decode_tile, finalise_detections, summarise_mitoses
from models.analyses.settings_cells import MitosisSettings
from models.cells.mitosis_net import MEAN, STD, MitosisTileDetector
from models.cells.points import PointAccumulator


def _norm(img: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


@pytest.mark.parametrize("stride", [1, 2])
def test_candidates_find_dark_blob_and_crops_are_centred(stride: int) -> None:
    img = np.full((128, 128, 3), 235, dtype=np.uint8)
    yy, xx = np.mgrid[:128, :128]
    blob = (yy - 40) ** 2 + (xx - 90) ** 2 <= 36
    img[blob] = (40, 30, 90)  # dark haematoxylin-like chromatin
    det = MitosisTileDetector(stride=stride).eval()
    x = _norm(img)
    rc, val = det.candidates(x)
    assert int(val[0, 0]) != -1
    # full resolution: exact; on the 2-px grid: the centre of the 2 × 2 block, within 1 px
    assert np.abs(rc[0, 0].numpy() - (40, 90)).max() <= stride - 1
    assert (val[0, 1:] < 0).all()  # nothing else on a blank tile
    crops = det.crops(x, rc[:, :1])
    r0, c0 = rc[0, 0].tolist()
    assert torch.allclose(crops[0, :, 32, 32], x[0, :, r0, c0])
    # a candidate near the border pads with white, not with wrapped pixels
    edge = det.crops(x, torch.tensor([[[0, 0]]]))
    assert torch.allclose(edge[0, :, 0, 0], (1.0 - torch.tensor(MEAN)) / torch.tensor(STD))
    out = det(x)
    assert out.shape == (1, det.max_candidates, 7)
    assert torch.allclose(out[0, 1:, 3], torch.ones(det.max_candidates - 1))


def test_candidates_left_to_neighbours_are_not_classified_and_the_rest_unchanged() -> None:
    img = np.full((2, 160, 160, 3), 235, dtype=np.uint8)
    for r, c in [(8, 80), (80, 8), (152, 80), (80, 152), (80, 80), (40, 40), (120, 120)]:
        img[:, r - 6 : r + 7, c - 6 : c + 7] = (40, 30, 90)  # dark blobs, 4 in the margins
    x = torch.cat([_norm(im) for im in img]).contiguous(memory_format=torch.channels_last)
    torch.manual_seed(0)
    det = MitosisTileDetector().eval()
    det.configure(min_od=0.3, sigma_um=1.5, max_candidates=64, margin_px=16)
    nb = torch.zeros((2, 3, 3), dtype=torch.bool)
    nb[0, 2, :] = True  # tile 0: the tiles below it are scanned
    nb[1] = True  # tile 1: all neighbours scanned
    nb[1, 1, 1] = False
    with torch.inference_mode():
        full, skipped = det(x), det(x, neighbours=nb)
    r, c = full[..., 0], full[..., 1]
    side = lambda v: (v >= 16).long() + (v >= 160 - 16).long()  # noqa: E731
    left = nb[torch.arange(2).view(-1, 1), side(r), side(c)] & (full[..., 2] >= 0)
    assert left[0].any() and left[1].any() and (~left & (full[..., 2] >= 0)).any()
    assert (skipped[left][:, 2] == -1).all()  # not classified: padding
    torch.testing.assert_close(skipped[~left], full[~left], rtol=0, atol=1e-5)


def test_point_accumulator_margin_level0_and_state_roundtrip() -> None:
    acc = PointAccumulator("det", decode_tile(0.5), 4, l0_per_px=2.0, tile_px=100, margin_px=10)
    raw = np.full((2, 4, 7), -1.0, dtype=np.float32)
    raw[:, :, 3] = 1.0
    raw[0, 0] = (50, 20, 0.9, 0.1, 0.8, 0.05, 0.05)  # kept: P(mitosis) 0.9
    raw[0, 1] = (5, 50, 0.9, 0.1, 0.8, 0.05, 0.05)  # in the margin: dropped
    raw[0, 2] = (60, 60, 0.9, 0.7, 0.2, 0.05, 0.05)  # P(mitosis) 0.3: dropped
    raw[1, 0] = (30, 30, 0.9, 0.0, 0.1, 0.0, 0.9)
    meta = BatchMeta(np.array([3, 7]), np.array([[1000, 2000], [0, 0]]), np.array([True, True]))
    acc.add({"det": raw}, meta)
    rows = acc.finalize()
    assert rows.shape == (2, 6)
    np.testing.assert_allclose(rows[0, :2], [1000 + 20.5 * 2, 2000 + 50.5 * 2])
    st = acc.state(np.array([7]))
    other = PointAccumulator("det", decode_tile(0.5), 4, l0_per_px=2.0, tile_px=100, margin_px=10)
    other.load_state(np.array([7]), st)
    np.testing.assert_allclose(other.finalize(), rows[1:2])


def test_cluster_merges_split_figure_at_its_centre() -> None:
    det = np.array(
        [
            [100.0, 100.0, 0.9, 0.2, 0.0, 0.8],
            [120.0, 100.0, 0.9, 0.2, 0.0, 0.8],  # second chromosome group, 5 µm away
            [400.0, 400.0, 0.7, 0.6, 0.1, 0.0],
        ]
    )
    out = finalise_detections(det, nms_l0=30.0)
    assert len(out) == 2
    np.testing.assert_allclose(out[0, :2], [110.0, 100.0])


def test_summary_counts_classes_density_and_hpf_area() -> None:
    rng = np.random.default_rng(3)
    xy = rng.normal((5000, 5000), 300, size=(12, 2))
    p_tri = np.r_[np.full(4, 0.9), np.full(8, 0.05)]
    p_atyp = np.r_[np.full(4, 0.05), np.full(2, 0.8), np.full(6, 0.05)]
    det = np.column_stack([xy, np.full(12, 0.95), 1 - p_tri - p_atyp, p_atyp, p_tri])
    region = RegionMask(np.ones((40, 40), dtype=bool), l0_per_px=400.0)
    s = MitosisSettings(hpf_area_mm2=0.196)
    rep, points, circles = summarise_mitoses(
        det, mpp=0.25, region=region, viable_tumour_mm2=4.0, settings=s
    )
    assert (rep["count_total"], rep["count_atypical"], rep["count_tripolar"]) == (12, 6, 4)
    assert rep["count_typical"] == 6  # tripolar figures are atypical
    assert rep["percent_tripolar"] == pytest.approx(33.33, abs=0.01)
    assert rep["percent_atypical"] == pytest.approx(50.0)
    assert rep["per_mm2_viable_tumour"] == pytest.approx(3.0)
    assert rep["warnings"] == []
    dense, _, _ = summarise_mitoses(
        det, mpp=0.25, region=region, viable_tumour_mm2=0.2, settings=s
    )  # 60 per mm² > 40: warned, numbers still given
    assert dense["count_total"] == 12 and "implausibly high" in dense["warnings"][0]
    assert rep["mitoses_per_2mm2_hotspot"] == 12 and rep["mitoses_per_10hpf"] == 12
    assert rep["hpf_area_mm2"] == 0.196
    assert rep["hpf_circle"]["area_mm2"] == pytest.approx(1.96)
    assert "0.196" in rep["hpf_note"]
    names = [p.name for p in points]
    assert names == ["Mitosis: Typical", "Mitosis: Atypical", "Mitosis: Tripolar"]
    assert [len(p.l0_xy) for p in points] == [6, 2, 4]
    assert circles[0].l0_radius == pytest.approx(3191.5, abs=0.5)


def test_separable_max_filter_equals_square_max_pool() -> None:
    from models.cells.mitosis_net import max_filter

    h = torch.randn(2, 1, 67, 53)
    for r in (1, 4, 12):
        ref = torch.nn.functional.max_pool2d(h, 2 * r + 1, stride=1, padding=r)
        assert torch.equal(max_filter(h, r), ref)


def test_configure_sets_the_candidate_grid() -> None:
    det = MitosisTileDetector(stride=1)
    full_nms = det.nms_px
    det.configure(min_od=0.4, sigma_um=1.5, max_candidates=32, stride=2)
    assert det.stride == 2 and det.max_candidates == 32 and det.min_od == 0.4
    assert det.nms_px == round(full_nms / 2)
    x = torch.zeros(3, 3, 96, 64)
    assert det.haematoxylin(x).shape == (3, 1, 48, 32)


def test_decode_keeps_confident_tripolar_candidates_below_the_mitosis_threshold() -> None:
    raw = np.array(
        [
            [10, 10, 0.8, 0.02, 0.97, 0.0, 0.01],  # typical, P(mitosis) 0.98: kept
            [20, 20, 0.8, 0.07, 0.01, 0.0, 0.92],  # tripolar, P(mit) 0.93 < 0.96, P(tri) 0.92: kept
            [30, 30, 0.8, 0.07, 0.50, 0.0, 0.43],  # P(mitosis) 0.93, looks typical: dropped
            [40, 40, -1.0, 0.0, 0.0, 0.0, 1.0],  # padding: dropped
        ],
        dtype=np.float32,
    )
    out = decode_tile(0.96, 0.9)(raw)
    assert out[:, 0].tolist() == [10, 20]
    assert decode_tile(0.96)(raw)[:, 0].tolist() == [10]  # default: off


def test_coarse_slides_get_no_mitosis_count() -> None:
    from models.analyses.mitosis import resolution_refusal

    assert resolution_refusal(0.25, 0.5) is None
    assert resolution_refusal(0.504, 0.5) is None  # a 20× scan
    reason = resolution_refusal(1.0, 0.5)
    assert reason is not None and "1.00 µm/px" in reason and "max_slide_mpp" in reason


@pytest.mark.parametrize("n", [9, 40, 256])
def test_band_matrix_is_the_replicate_padded_convolution(n: int) -> None:
    import torch.nn.functional as F

    from models.cells.mitosis_net import band_matrix

    k = torch.tensor([0.05, 0.1, 0.2, 0.3, 0.2, 0.1, 0.05])
    v = torch.rand(3, 1, 5, n)
    r = k.numel() // 2
    ref = F.conv2d(F.pad(v, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    assert torch.allclose(v @ band_matrix(k, n).T, ref, atol=1e-6)
