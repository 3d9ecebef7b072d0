"""Pyramidal overlay TIFFs: OpenSlide opens them aligned with the slide, values are exact."""

from __future__ import annotations

import math
import tracemalloc
from pathlib import Path

import numpy as np
import openslide
import pytest

from wsi import open_slide
from wsi.export import ExportError
from wsi.export import overlays as ov
from wsi.export.colors import colormap_for
from wsi.results import RasterMap

SLIDE = Path(__file__).resolve().parents[3] / "shared/data/slides/CMU-1-Small-Region.svs"
STEP = 224.0


@pytest.fixture(scope="module")
def slide_geometry() -> tuple[tuple[int, int], float]:
    with open_slide(SLIDE) as slide:
        return slide.dimensions, slide.mpp


def gradient_map(dims: tuple[int, int], name: str = "pattern_spindle") -> RasterMap:
    rows, cols = math.ceil(dims[1] / STEP), math.ceil(dims[0] / STEP)
    values = (np.arange(rows * cols).reshape(rows, cols) / (rows * cols - 1)).astype(np.float32)
    return RasterMap(name, values, STEP, "probability")


def centre_l0(i: int, j: int, raster: RasterMap, dims: tuple[int, int]) -> tuple[int, int]:
    """Centre of the part of grid cell (i, j) that lies inside the slide."""
    ox, oy = raster.l0_origin
    step = raster.l0_per_px
    x0, y0 = ox + j * step, oy + i * step
    return int((x0 + min(x0 + step, dims[0])) / 2), int((y0 + min(y0 + step, dims[1])) / 2)


@pytest.mark.parametrize("form", ["u8", "rgba"])
def test_openslide_opens_overlay_with_slide_geometry(tmp_path, slide_geometry, form) -> None:
    dims, mpp = slide_geometry
    raster = gradient_map(dims)
    path = tmp_path / ov.overlay_filename(raster.name, form)
    ov.write_overlay_tiff(raster, path, l0_dimensions=dims, mpp=mpp, form=form)
    with openslide.OpenSlide(str(path)) as osr:
        assert osr.properties["openslide.vendor"] == "generic-tiff"
        assert osr.dimensions == dims
        assert float(osr.properties["openslide.mpp-x"]) == pytest.approx(mpp, rel=1e-6)
        assert float(osr.properties["openslide.mpp-y"]) == pytest.approx(mpp, rel=1e-6)
        assert osr.level_count == len(ov.level_shapes(dims, 256)) >= 4
        assert [round(d) for d in osr.level_downsamples] == [2**k for k in range(osr.level_count)]
    with open_slide(path) as overlay:  # and through the project's own reader
        assert overlay.dimensions == dims and overlay.mpp == pytest.approx(mpp, rel=1e-6)


def test_u8_pixels_equal_stored_probabilities(tmp_path, slide_geometry) -> None:
    dims, mpp = slide_geometry
    raster = gradient_map(dims)
    path = tmp_path / "g.u8.tiff"
    ov.write_overlay_tiff(raster, path, l0_dimensions=dims, mpp=mpp, form="u8")
    rows, cols = raster.values.shape
    with open_slide(path) as overlay:
        for i, j in [(0, 0), (3, 7), (rows - 1, 0), (rows // 2, cols // 2), (rows - 2, cols - 2)]:
            x, y = centre_l0(i, j, raster, dims)
            expected = round(float(raster.values[i, j]) * 255)
            for level in range(3):  # level 0 and two reduced levels agree
                ds = 2**level
                px = overlay.read_region((x, y), level, (1, 1))
                assert px[0, 0, 0] == expected, (i, j, level)
                assert x // ds < overlay.level_dimensions[level][0]


def test_rgba_pixels_are_the_colour_map(tmp_path, slide_geometry) -> None:
    dims, mpp = slide_geometry
    raster = gradient_map(dims)
    path = tmp_path / "g.rgba.tiff"
    ov.write_overlay_tiff(raster, path, l0_dimensions=dims, mpp=mpp, form="rgba")
    lut = colormap_for(raster.name, raster.kind).lut
    with openslide.OpenSlide(str(path)) as osr:
        for i, j in [(2, 2), (9, 5), (12, 8)]:
            code = round(float(raster.values[i, j]) * 255)
            px = np.asarray(osr.read_region(centre_l0(i, j, raster, dims), 0, (1, 1)))[0, 0]
            assert px[3] == lut[code, 3]
            # OpenSlide premultiplies and un-premultiplies: colour exact up to rounding at low alpha
            assert (
                np.abs(px[:3].astype(int) - lut[code, :3].astype(int)).max()
                <= 255 / lut[code, 3] + 1
            )


def test_origin_nan_density_and_label(tmp_path) -> None:
    dims = (1000, 800)
    values = np.array([[np.nan, 50.0], [100.0, 400.0]], dtype=np.float32)
    raster = RasterMap(
        "tam_density",
        values,
        200.0,
        "density",
        unit="cells/mm²",
        vmax=200.0,
        l0_origin=(300.0, 100.0),
    )
    path = tmp_path / "d.u8.tiff"
    ov.write_overlay_tiff(raster, path, l0_dimensions=dims, mpp=0.25, form="u8", tile_px=128)
    with open_slide(path) as overlay:

        def code(x: int, y: int) -> int:
            return int(overlay.read_region((x, y), 0, (1, 1))[0, 0, 0])

        assert code(50, 50) == 0  # before the origin: outside the map
        assert code(350, 150) == 0  # NaN
        assert code(550, 150) == round(50 / 200 * 255)
        assert code(350, 350) == round(100 / 200 * 255)
        assert code(550, 350) == 255  # clipped at vmax
        assert code(900, 700) == 0  # past the map's end
    labels = RasterMap("labels", np.array([[0, 3], [5, 1]], np.float32), 400.0, "label")
    ov.write_overlay_tiff(
        labels, tmp_path / "l.u8.tiff", l0_dimensions=(800, 800), mpp=0.5, form="u8"
    )
    with open_slide(tmp_path / "l.u8.tiff") as overlay:
        assert overlay.read_region((600, 100), 0, (1, 1))[0, 0, 0] == 3
        assert overlay.read_region((100, 600), 0, (1, 1))[0, 0, 0] == 5


def test_render_codes_matches_tiff(tmp_path, slide_geometry) -> None:
    dims, mpp = slide_geometry
    raster = gradient_map(dims)
    small = ov.render_codes(raster, dims, (dims[0] // 16, dims[1] // 16))
    ov.write_overlay_tiff(raster, tmp_path / "g.u8.tiff", l0_dimensions=dims, mpp=mpp, form="u8")
    with open_slide(tmp_path / "g.u8.tiff") as overlay:
        level = max(k for k, d in enumerate(overlay.level_downsamples) if round(d) <= 16)
        assert round(overlay.level_downsamples[level]) == 16
        w, h = overlay.level_dimensions[level]
        arr = overlay.read_region((0, 0), level, (w - 1, h - 1))[..., 0]
    assert np.mean(arr == small[: h - 1, : w - 1]) > 0.97  # equal except a few edge pixels


def test_large_slide_memory_stays_bounded(tmp_path) -> None:
    dims = (24_000, 16_000)  # 384 Mpx at level 0: far above the allowed peak if held whole
    rng = np.random.default_rng(0)
    values = rng.random((16_000 // 448 + 1, 24_000 // 448 + 1)).astype(np.float32)
    values[:, :20] = 0.0
    raster = RasterMap("pattern_squamoid", values, 448.0, "probability")
    tracemalloc.start()
    ov.write_overlay_tiff(
        raster, tmp_path / "big.u8.tiff", l0_dimensions=dims, mpp=0.25, form="u8", tile_px=512
    )
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 64 << 20, f"peak {peak / 2**20:.1f} MiB"
    with open_slide(tmp_path / "big.u8.tiff") as overlay:
        assert overlay.dimensions == dims
        x, y = int(448 * 40.5), int(448 * 30.5)
        assert overlay.read_region((x, y), 0, (1, 1))[0, 0, 0] == round(float(values[30, 40]) * 255)


def test_crash_keeps_previous_file_or_none(tmp_path, monkeypatch, slide_geometry) -> None:
    dims, mpp = slide_geometry
    raster = gradient_map(dims)
    path = tmp_path / "g.u8.tiff"
    ov.write_overlay_tiff(raster, path, l0_dimensions=dims, mpp=mpp, form="u8")
    before = path.read_bytes()
    calls = {"n": 0}
    original = ov._TileSource.encoded

    def failing(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] > 20:
            raise OSError("disk full")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ov._TileSource, "encoded", failing)
    brighter = RasterMap(raster.name, raster.values * 0.5, STEP, "probability")
    with pytest.raises(OSError, match="disk full"):
        ov.write_overlay_tiff(brighter, path, l0_dimensions=dims, mpp=mpp, form="u8")
    assert path.read_bytes() == before
    calls["n"] = 0
    with pytest.raises(OSError):
        ov.write_overlay_tiff(
            brighter, tmp_path / "new.u8.tiff", l0_dimensions=dims, mpp=mpp, form="u8"
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.u8.tiff"]  # no temp files, no new file


@pytest.mark.parametrize(
    ("raster", "match"),
    [
        (RasterMap("a", np.zeros(5, np.float32), 10.0, "probability"), "2-D"),
        (RasterMap("a", np.zeros((2, 2), np.float32), 0.0, "probability"), "l0_per_px"),
        (RasterMap("a", np.zeros((2, 2), np.float32), 10.0, "density", vmax=0.0), "vmax"),
        (RasterMap("../evil", np.zeros((2, 2), np.float32), 10.0, "mask"), "file-safe"),
    ],
)
def test_bad_maps_are_refused(tmp_path, raster, match) -> None:
    with pytest.raises(ExportError, match=match):
        ov.write_overlay_tiff(
            raster, tmp_path / "x.tiff", l0_dimensions=(100, 100), mpp=0.5, form="u8"
        )
    assert not any(tmp_path.iterdir())


def test_duplicate_names_and_bad_geometry(tmp_path) -> None:
    m = RasterMap("a", np.zeros((2, 2), np.float32), 10.0, "mask")
    with pytest.raises(ExportError, match="repeated: a"):
        ov.write_overlays([m, m], tmp_path, l0_dimensions=(100, 100), mpp=0.5)
    with pytest.raises(ExportError, match="mpp"):
        ov.write_overlay_tiff(m, tmp_path / "a.tiff", l0_dimensions=(100, 100), mpp=-1.0, form="u8")
