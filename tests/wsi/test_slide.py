"""Slide reading: metadata, mpp, typed errors on the real bad-input set, read_region."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from tests.slide_helpers import write_pyramid
from wsi import (
    ImplausibleMppError,
    MissingMppError,
    RegionTooLargeError,
    SlideNotFoundError,
    SlideSettings,
    SlideTooLargeError,
    TileReadError,
    UnsupportedSlideError,
    WsiError,
    open_slide,
)


def test_real_svs_metadata(real_slide: Path) -> None:
    with open_slide(real_slide) as slide:
        assert slide.dimensions == (2220, 2967)
        assert slide.mpp == pytest.approx(0.499)
        assert slide.vendor == "aperio"
        assert slide.objective_power == 20
        assert slide.fingerprint.startswith("quickhash1:")
        region = slide.read_region((100, 200), 0, (64, 32))
        assert region.shape == (32, 64, 3) and region.dtype == np.uint8


def test_dicom_series_any_instance_opens_whole_pyramid(shared_data: Path) -> None:
    folder = shared_data / "slides" / "dicom" / "cmu-1-small-region"
    with open_slide(folder / "level-3-frames-0-1.dcm") as slide:
        assert slide.level_count == 12
        assert slide.dimensions == (2220, 2967)
        assert slide.mpp == pytest.approx(0.499)


def test_ndpi_opens_with_its_mpp(shared_data: Path) -> None:
    with open_slide(shared_data / "slides" / "ndpi" / "test3-DAPI-2-(387).ndpi") as slide:
        assert slide.vendor == "hamamatsu"
        assert slide.mpp == pytest.approx(0.2282, abs=1e-3)
        assert slide.level_count == 7


def test_mpp_override_replaces_slide_value(real_slide: Path) -> None:
    with open_slide(real_slide, mpp_override=0.25) as slide:
        assert slide.mpp == 0.25 and slide.mpp_source == "override"


@pytest.mark.parametrize("bad", [0.0, -1.0, 352.0, float("nan")])
def test_implausible_override_rejected(real_slide: Path, bad: float) -> None:
    with pytest.raises(ImplausibleMppError, match="plausible"):
        open_slide(real_slide, mpp_override=bad)


UNOPENABLE = [
    "slides/dicom/pathml_small_dicom.dcm",  # malformed DICOM
    "slides/dicom/OT-MONO2-8-colon.dcm",  # a DICOM that is no WSI
    "slides/openslide-fixtures/unopenable.tiff",  # unsupported TIFF compression
    "slides/openslide-fixtures/boxes.png",
    "slides/openslide-fixtures/boxes-no-icc.png",
    "slides/pathml/small_vectra.qptiff",
    "slides/pathml/smalltif.tif",
    "slides/vsi/vsi-ets-test-jpg2k.vsi",
]


@pytest.mark.parametrize("rel", UNOPENABLE)
def test_unopenable_files_raise_unsupported(shared_data: Path, rel: str) -> None:
    with pytest.raises(UnsupportedSlideError) as info:
        open_slide(shared_data / rel)
    assert rel.split("/")[-1] in str(info.value)


@pytest.mark.parametrize(
    "rel", ["slides/openslide-fixtures/boxes.tiff", "slides/pathml/small_HE_levels.tiff"]
)
def test_dpi_derived_mpp_is_implausible(shared_data: Path, rel: str) -> None:
    with pytest.raises(ImplausibleMppError) as info:
        open_slide(shared_data / rel)
    assert info.value.mpp == pytest.approx(352.8, abs=0.2)
    with open_slide(shared_data / rel, mpp_override=0.5) as slide:  # the way out works
        assert slide.mpp == 0.5


def test_corrupt_tile_raises_tile_read_error(shared_data: Path) -> None:
    path = shared_data / "slides/openslide-fixtures/unreadable.svs"
    with open_slide(path) as slide, pytest.raises(TileReadError) as info:
        slide.read_region((0, 0), 0, (16, 16))
    assert info.value.l0_xy == (0, 0) and info.value.level == 0


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SlideNotFoundError):
        open_slide(tmp_path / "nope.svs")
    with pytest.raises(SlideNotFoundError, match="folder"):
        open_slide(tmp_path)


def test_zero_byte_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.svs"
    empty.write_bytes(b"")
    with pytest.raises(UnsupportedSlideError, match="empty"):
        open_slide(empty)


def test_truncated_file(tmp_path: Path, real_slide: Path) -> None:
    data = real_slide.read_bytes()
    cut = tmp_path / "truncated.svs"
    cut.write_bytes(data[: len(data) // 3])
    # Either opening fails or reading the missing half fails: always a typed error, never a crash.
    with pytest.raises(WsiError), open_slide(cut) as slide:
        w, h = slide.dimensions
        for y in range(0, h, 512):
            slide.read_region((0, y), 0, (w, min(512, h - y)))


def test_wrong_extension_is_judged_by_content(tmp_path: Path, real_slide: Path) -> None:
    renamed = tmp_path / "slide.png"
    renamed.write_bytes(real_slide.read_bytes())
    with open_slide(renamed) as slide:  # OpenSlide detects Aperio from the TIFF header
        assert slide.mpp == pytest.approx(0.499)
    text = tmp_path / "notes.svs"
    text.write_text("not a slide at all\n")
    with pytest.raises(UnsupportedSlideError):
        open_slide(text)


def test_missing_mpp_needs_override(tmp_path: Path) -> None:
    path = tmp_path / "nompp.tiff"
    with tifffile.TiffWriter(path) as tw:
        tw.write(np.full((512, 512, 3), 200, np.uint8), tile=(256, 256), photometric="rgb")
    with pytest.raises(MissingMppError, match="--mpp"):
        open_slide(path)
    with open_slide(path, mpp_override=0.25) as slide:
        assert slide.mpp == 0.25


def test_generated_tiff_mpp_from_resolution_tags(ellipse_slide: Path) -> None:
    with open_slide(ellipse_slide) as slide:
        assert slide.vendor == "generic-tiff"
        assert slide.mpp == pytest.approx(0.25, rel=1e-6)
        assert slide.level_count >= 3
        assert slide.level_downsamples[1] == pytest.approx(2.0)


def test_read_region_agrees_between_levels(ellipse_slide: Path) -> None:
    with open_slide(ellipse_slide) as slide:
        l0 = slide.read_region((1000, 1000), 0, (1024, 1024)).astype(np.float32)
        l2 = slide.read_region((1000, 1000), 2, (256, 256)).astype(np.float32)
    pooled = l0.reshape(256, 4, 256, 4, 3).mean(axis=(1, 3))
    assert np.abs(pooled - l2).mean() < 6.0  # JPEG and edge resampling only


def test_region_budget(real_slide: Path) -> None:
    settings = SlideSettings(max_region_px=10_000)
    with open_slide(real_slide, settings=settings) as slide, pytest.raises(RegionTooLargeError):
        slide.read_region((0, 0), 0, (200, 200))


def test_absurd_dimensions(real_slide: Path) -> None:
    with pytest.raises(SlideTooLargeError):
        open_slide(real_slide, settings=SlideSettings(max_dimension_px=1000))


def test_best_level_for_mpp(ellipse_slide: Path) -> None:
    with open_slide(ellipse_slide) as slide:
        assert slide.best_level_for_mpp(0.25) == (0, 1.0)
        assert slide.best_level_for_mpp(1.0) == (2, 1.0)
        level, scale = slide.best_level_for_mpp(0.8)
        assert level == 1 and scale == pytest.approx(0.625)
        assert slide.best_level_for_mpp(0.1) == (0, 2.5)
        with pytest.raises(ValueError):
            slide.best_level_for_mpp(0)


def test_pyramid_written_without_level0_whole(tmp_path: Path) -> None:
    path = write_pyramid(
        tmp_path / "t.tiff", 1000, 700, 0.5, lambda x, y: np.full((*x.shape, 3), 128, np.uint8)
    )
    with open_slide(path) as slide:
        assert slide.dimensions == (1000, 700) and slide.mpp == pytest.approx(0.5)


def test_region_beyond_the_slide_is_white(tmp_path: Path) -> None:
    """OpenSlide returns transparent pixels outside the image; they come back white, the inside
    unchanged (the opaque fast path and the compositing path of one read)."""
    path = write_pyramid(
        tmp_path / "t.tiff",
        600,
        400,
        0.5,
        lambda x, y: np.full((*x.shape, 3), 60, np.uint8),
        compression="zlib",
    )
    with open_slide(path) as slide:
        inside = slide.read_region((100, 100), 0, (64, 64))
        edge = slide.read_region((568, 100), 0, (64, 64))
    assert inside.shape == (64, 64, 3) and inside.flags.c_contiguous
    assert (inside == 60).all()
    assert (edge[:, :32] == 60).all() and (edge[:, 32:] == 255).all()
