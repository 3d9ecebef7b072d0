"""Tests of synthetic slides: file format, determinism, truth consistency, densities, IHC."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile
from shapely.geometry import shape
from skimage.color import rgb2hed

from wsi import open_slide
from wsi.synthetic import SynthSpec, generate_slide, load_truth
from wsi.synthetic.classes import PATTERN_CLASSES, TUMOUR_PATTERNS

TUMOUR = [PATTERN_CLASSES.index(c) for c in TUMOUR_PATTERNS]


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``small`` preset, with mitoses dense enough to count."""
    spec = SynthSpec.from_preset("small", seed=7, mitoses_per_2mm2=40.0)
    return generate_slide(spec, tmp_path_factory.mktemp("small"))


@pytest.fixture(scope="module")
def dense(tmp_path_factory: pytest.TempPathFactory) -> tuple[SynthSpec, Path]:
    """A 20× slide of 2 × 2 mm for density statistics."""
    spec = SynthSpec(
        seed=3,
        width=4096,
        height=4096,
        mpp=0.5,
        mitoses_per_2mm2=40.0,
        lookalikes_per_mm2=30.0,
        tam_fraction=0.4,
        artefacts=False,
    )
    return spec, generate_slide(spec, tmp_path_factory.mktemp("dense"))


def test_openslide_reads_mpp_and_levels(small: Path) -> None:
    with openslide.OpenSlide(str(small / "slide.tiff")) as s:
        assert s.properties["openslide.vendor"] == "generic-tiff"
        assert float(s.properties["openslide.mpp-x"]) == pytest.approx(0.25)
        assert float(s.properties["openslide.mpp-y"]) == pytest.approx(0.25)
        assert s.level_dimensions == ((4096, 4096), (2048, 2048), (1024, 1024))
        region = np.asarray(s.read_region((1500, 1500), 0, (512, 512)))[:, :, :3]
    assert region.std() > 10
    with open_slide(small / "slide.tiff") as slide:
        assert slide.mpp == pytest.approx(0.25)
        assert slide.level_count == 3


def test_20x_slide_reports_half_micron(dense: tuple[SynthSpec, Path]) -> None:
    with openslide.OpenSlide(str(dense[1] / "slide.tiff")) as s:
        assert float(s.properties["openslide.mpp-x"]) == pytest.approx(0.5)
        assert s.level_dimensions[0] == (4096, 4096)


def test_same_seed_identical_pixels_whatever_the_workers(tmp_path: Path) -> None:
    base = {"seed": 21, "width": 1536, "height": 1100, "mitoses_per_2mm2": 30.0}
    a = generate_slide(SynthSpec(**base, workers=1), tmp_path / "a")  # type: ignore[arg-type]
    b = generate_slide(SynthSpec(**base, workers=2), tmp_path / "b")  # type: ignore[arg-type]
    c = generate_slide(SynthSpec(**{**base, "seed": 22}), tmp_path / "c")  # type: ignore[arg-type]
    pa, pb, pc = (tifffile.imread(p / "slide.tiff", key=0) for p in (a, b, c))
    assert pa.shape == (1100, 1536, 3)
    assert np.array_equal(pa, pb)
    assert not np.array_equal(pa, pc)
    assert np.array_equal(load_truth(a).label_map, load_truth(b).label_map)
    assert load_truth(a).info["counts"] == load_truth(b).info["counts"]


def test_every_mitosis_lies_in_viable_tumour(small: Path) -> None:
    t = load_truth(small)
    assert len(t.mitoses) > 0
    rc = (t.mitoses[:, ::-1] / t.label_l0_per_px).astype(int)
    labels = t.label_map[rc[:, 0], rc[:, 1]]
    assert np.isin(labels, TUMOUR).all()
    assert set(t.mitosis_classes) <= {"mitosis_typical", "mitosis_tripolar"}


def test_truth_counts_match_geojson_points(small: Path) -> None:
    info = json.loads((small / "truth.json").read_text())
    gj = json.loads((small / "truth.geojson").read_text())
    names = [
        f["properties"]["classification"]["name"]
        for f in gj["features"]
        if f["geometry"]["type"] == "Point"
    ]
    c = info["counts"]
    assert names.count("Mitosis: Typical") == c["mitosis_typical"]
    assert names.count("Mitosis: Tripolar") == c["mitosis_tripolar"]
    assert names.count("Macrophage") == c["macrophage"]
    assert sum(n.startswith("Lookalike ") for n in names) == c["lookalike"]
    for kind in ("apoptotic", "pyknotic", "lymphocyte", "karyorrhectic", "tangential"):
        assert names.count(f"Lookalike {kind}") == c[kind]
    t = load_truth(small)
    assert len(t.mitoses) == c["mitosis"] and len(t.macrophages) == c["macrophage"]


def test_class_areas_sum_to_tissue_area(small: Path) -> None:
    info = json.loads((small / "truth.json").read_text())
    areas = info["areas_mm2"]
    tissue = info["tissue_area_mm2"]
    assert sum(v for k, v in areas.items() if k != "background") == pytest.approx(tissue, rel=1e-9)
    assert sum(areas.values()) == pytest.approx(4096 * 4096 * (0.25e-3) ** 2, rel=1e-3)
    # independent check: the GeoJSON region polygons cover the same area within 1 %
    gj = json.loads((small / "truth.geojson").read_text())
    poly_px = sum(
        shape(f["geometry"]).area
        for f in gj["features"]
        if f["geometry"]["type"] in ("Polygon", "MultiPolygon")
    )
    assert poly_px * (0.25e-3) ** 2 == pytest.approx(tissue, rel=0.01)
    hot = info["hotspot"]
    assert hot["mitoses"] >= 1 and hot["area_mm2"] == 2.0


def test_tissue_area_matches_the_image(dense: tuple[SynthSpec, Path]) -> None:
    """Without artefacts, the non-glass pixels of level 2 cover the labelled tissue (±10 %)."""
    spec, folder = dense
    tissue = json.loads((folder / "truth.json").read_text())["tissue_area_mm2"]
    low = tifffile.imread(folder / "slide.tiff", key=2).astype(float)
    px_mm2 = (4 * spec.mpp / 1000.0) ** 2
    not_glass = float((low.max(axis=2) - low.min(axis=2) > 25).sum()) * px_mm2
    assert not_glass == pytest.approx(tissue, rel=0.1)


def test_requested_densities_are_produced(dense: tuple[SynthSpec, Path]) -> None:
    spec, folder = dense
    info = load_truth(folder).info
    viable = info["viable_tumour_area_mm2"]
    assert viable > 0.5
    got = info["mitoses_per_2mm2_viable_tumour"]
    assert 0.6 * spec.mitoses_per_2mm2 < got < 1.5 * spec.mitoses_per_2mm2
    dens = info["densities_per_mm2_viable_tumour"]
    for kind in ("apoptotic", "pyknotic", "lymphocyte", "tangential"):
        assert 0.5 * spec.lookalikes_per_mm2 < dens[kind] < 1.6 * spec.lookalikes_per_mm2
    c = info["counts"]
    tripolar = c["mitosis_tripolar"] / max(1, c["mitosis"])
    assert abs(tripolar - spec.tripolar_fraction) < 0.25
    assert 0.15 < info["macrophage_fraction_of_nucleated"] < 0.6


def test_cd68_variant_has_dab_where_macrophages_are(tmp_path: Path) -> None:
    spec = SynthSpec(
        seed=9, width=1024, height=1024, stain="cd68", tam_fraction=0.5, artefacts=False
    )
    t = load_truth(generate_slide(spec, tmp_path))
    img = tifffile.imread(tmp_path / "slide.tiff", key=0)
    dab = rgb2hed(img)[:, :, 2]
    eosin = rgb2hed(img)[:, :, 1]

    def around(points: np.ndarray) -> float:
        vals = [
            dab[int(y) - 12 : int(y) + 13, int(x) - 12 : int(x) + 13].mean()
            for x, y in points
            if 12 <= x < 1012 and 12 <= y < 1012
        ]
        return float(np.mean(vals))

    others = t.nucleated[~t.nucleated_is_macrophage]
    assert len(t.macrophages) > 5
    assert around(t.macrophages) > around(others) + 0.01
    he = tifffile.imread(
        generate_slide(SynthSpec(**{**spec.to_dict(), "stain": "he"}), tmp_path / "he")
        / "slide.tiff",
        key=0,
    )
    assert rgb2hed(he)[:, :, 1].mean() > eosin.mean()  # IHC has no eosin


def test_bad_spec_values_raise() -> None:
    with pytest.raises(ValueError, match="mpp"):
        SynthSpec(mpp=5.0)
    with pytest.raises(ValueError, match="unknown preset"):
        SynthSpec.from_preset("huge")
    with pytest.raises(FileNotFoundError, match=r"truth\.json"):
        load_truth("/nonexistent/folder")
