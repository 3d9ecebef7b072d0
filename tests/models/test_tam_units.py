"""TAM building blocks without the generator: DAB cells, route choice, density map, stain."""

from __future__ import annotations

import numpy as np
import pytest

from models.analyses.settings_cells import TamSettings
from models.analyses.tam import choose_route, density_map
from models.cells.dab import dab_cells
from models.cells.stain import (
    DAB,
    EOSIN,
    HAEMATOXYLIN,
    HDAB,
    HED,
    estimate_two_stains,
    stain_evidence,
)


def _render(conc: dict[str, np.ndarray]) -> np.ndarray:
    """Beer–Lambert rendering of stain concentration maps into uint8 RGB."""
    vecs = {"h": HAEMATOXYLIN, "e": EOSIN, "d": DAB}
    shape = next(iter(conc.values())).shape
    od = np.zeros((*shape, 3))
    for k, c in conc.items():
        od += c[..., None] * (vecs[k] / np.linalg.norm(vecs[k]))
    return np.asarray(np.clip(255 * 10 ** (-od), 0, 255), dtype=np.uint8)


def _disk(shape: tuple[int, int], centres: list[tuple[int, int]], r: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    out = np.zeros(shape)
    for cy, cx in centres:
        out = np.maximum(out, ((yy - cy) ** 2 + (xx - cx) ** 2 <= r**2).astype(float))
    return out


def test_dab_cells_counts_planted_cells_and_ignores_thin_processes() -> None:
    shape = (200, 200)
    centres = [(30, 30), (30, 100), (100, 60), (150, 150), (170, 40)]
    dab = 0.6 * _disk(shape, centres, 9)
    dab[98:101, 60:190] = 0.6  # a long thin process (1.5 µm wide) attached to one cell
    h = 0.3 * _disk(shape, [(60, 170), (120, 120)], 8)  # negative nuclei
    rgb = _render({"h": h + 0.1, "d": dab})
    conc = HED.concentrations(rgb)
    res = dab_cells(conc[..., 2], conc.sum(-1), mpp=0.5, threshold=0.15, min_cell_um2=12)
    assert len(res.rc) == len(centres)
    frac = res.positive_px / res.tissue_px
    assert 0.05 < frac < 0.25


def test_stain_evidence_separates_he_from_dab() -> None:
    shape = (128, 128)
    nuc = _disk(shape, [(30, 30), (90, 70)], 10)
    he = _render({"h": 0.5 * nuc + 0.05, "e": 0.4 * np.ones(shape)})
    ihc = _render({"h": 0.3 * nuc + 0.05, "d": 0.5 * _disk(shape, [(60, 60)], 20)})
    ev_he, ev_ihc = stain_evidence(he, 0.15), stain_evidence(ihc, 0.15)
    assert not ev_he.looks_ihc(0.01)
    assert ev_ihc.looks_ihc(0.01)


def test_estimated_vectors_stay_near_reference() -> None:
    rng = np.random.default_rng(0)
    shape = (96, 96)
    rgb = _render({"h": rng.uniform(0, 0.6, shape), "d": rng.uniform(0, 0.6, shape)})
    from models.cells.stain import od_from_rgb

    m = estimate_two_stains(od_from_rgb(rgb).reshape(-1, 3), HDAB)
    assert float(m.vectors[1] @ HDAB.vectors[1]) > 0.98
    assert float(m.vectors[0] @ HDAB.vectors[0]) > 0.98


def test_route_choice_and_warnings() -> None:
    from models.cells.stain import StainEvidence

    he_like = StainEvidence(10_000, dab_fraction=0.001, eosin_fraction=0.6)
    ihc_like = StainEvidence(10_000, dab_fraction=0.08, eosin_fraction=0.0)
    assert choose_route(TamSettings(route="auto"), he_like) == ("he", None)
    assert choose_route(TamSettings(route="auto"), ihc_like) == ("ihc", None)
    route, warn = choose_route(TamSettings(route="ihc", stain="cd163"), he_like)
    assert route is None and warn is not None
    assert "CD163" in warn and "no DAB" in warn and "H&E" in warn
    route, warn = choose_route(TamSettings(route="he"), ihc_like)
    assert route is None and warn is not None and "immunohistochemistry" in warn
    with pytest.raises(ValueError):
        TamSettings(route="dab")  # type: ignore[arg-type]


def test_density_map_units() -> None:
    mpp = 0.25
    cell_um = 100.0  # 400 l0 px; 0.01 mm² per cell
    pts = np.array([[10.0, 10.0], [20.0, 30.0], [500.0, 10.0]])
    m = density_map(pts, (800, 400), mpp, cell_um, "tam_density")
    assert m.values.shape == (1, 2)
    assert m.values[0, 0] == pytest.approx(200.0)  # 2 cells / 0.01 mm²
    assert m.values[0, 1] == pytest.approx(100.0)
    assert m.l0_per_px == pytest.approx(400.0) and m.unit == "cells/mm²"


def test_region_tissue_area_counts_tissue_inside_the_region_only() -> None:
    from models.analyses.hotspot import RegionMask
    from models.analyses.tam import region_tissue_mm2
    from wsi.tissue import TissueMask

    mask = np.ones((100, 100), dtype=bool)
    mask[:, 90:] = False  # glass on the right
    tissue = TissueMask(mask, 16.0, 4.0, 0.0, 0.0, {})
    # region raster of 2 × 2 cells of 800 level-0 px: the left column is tumour
    region = RegionMask(np.array([[True, False], [True, False]]), 800.0)
    px_mm2 = (16.0 * 0.25 / 1000.0) ** 2
    assert region_tissue_mm2(region, tissue, 0.25) == pytest.approx(100 * 50 * px_mm2)
    right = RegionMask(np.array([[False, True], [False, True]]), 800.0)
    assert region_tissue_mm2(right, tissue, 0.25) == pytest.approx(100 * 40 * px_mm2)


def test_viable_region_leaves_out_necrosis() -> None:
    """TAMs are counted, and their area taken, in the tumour region minus the necrosis mask."""
    from models.analyses.hotspot import RegionMask
    from models.analyses.tam import ViableRegion, region_tissue_mm2
    from wsi.tissue import TissueMask

    tissue = TissueMask(np.ones((100, 100), dtype=bool), 16.0, 4.0, 0.0, 0.0, {})
    region = RegionMask(np.array([[True, False], [True, False]]), 800.0)  # left half
    necrosis = np.zeros((400, 400), dtype=bool)
    necrosis[:, :100] = True  # the left quarter of the slide (4 level-0 px per mask px)
    viable = ViableRegion(region, RegionMask(necrosis, 4.0))
    px_mm2 = (16.0 * 0.25 / 1000.0) ** 2
    assert region_tissue_mm2(viable, tissue, 0.25) == pytest.approx(100 * 25 * px_mm2)
    pts = np.array([[100.0, 100.0], [600.0, 100.0], [1200.0, 100.0]])
    assert viable.contains(pts).tolist() == [False, True, False]
    assert ViableRegion(region, None).contains(pts).tolist() == [True, True, False]


def test_ihc_detector_unmixes_dab_and_haematoxylin_in_the_graph() -> None:
    import torch

    from models.cells.heat_net import IhcMacrophageDetector
    from models.cells.stain import StainMatrix

    shape = (64, 64)
    dab = _disk(shape, [(20, 20)], 8) * 0.8
    hae = _disk(shape, [(44, 44)], 6) * 0.6
    rgb = _render({"d": dab, "h": hae})
    det = IhcMacrophageDetector(with_dab=True).eval()
    x = (torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0 - 0.5) / 0.25
    conc, od_sum = det.concentrations(x)
    h_map, d_map = conc[0, 0].numpy(), conc[0, 1].numpy()
    assert d_map[20, 20] == pytest.approx(0.8, abs=0.08) and abs(h_map[20, 20]) < 0.08
    assert h_map[44, 44] == pytest.approx(0.6, abs=0.08) and abs(d_map[44, 44]) < 0.08
    assert float(od_sum[0, 0, 0, 0]) < 0.02  # white background
    peaks, maps = det(x)
    assert peaks.shape[:2] == (1, 2) and peaks.shape[-1] == 3
    assert maps.shape == (1, 2, *shape)
    assert maps[0, 0, 20, 20] == pytest.approx(0.8, abs=0.08)
    # the slide's own stain vectors unmix the DAB map; the network input keeps the reference
    before, net_in = det.area_unmix.clone(), det.unmix.clone()
    other = StainMatrix.from_two(HAEMATOXYLIN, EOSIN, ("haematoxylin", "eosin"))
    det.set_stains(other)
    assert not torch.allclose(before, det.area_unmix)
    assert torch.allclose(net_in, det.unmix)
    det.set_stains(HDAB)
    assert torch.allclose(before, det.area_unmix)
