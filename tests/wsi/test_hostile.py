"""Hostile and odd inputs on the slide layer: cost bound, colour check, cancellable tissue read."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from tests.hostile_files import write_repeated_tile_tiff
from tests.slide_helpers import write_pyramid
from wsi import SlideSettings, TissueSettings, compute_tissue_mask, open_slide
from wsi.colour import glass_colour, jpeg_markers, judge, ycbcr_to_rgb
from wsi.cost import tissue_read_px
from wsi.errors import ReadBudgetError, SlideColourError, StageCancelled, WsiError
from wsi.tiling import TileGrid

DICOM_CMU = "slides/dicom/cmu-1-small-region"


@pytest.fixture(scope="module")
def giant(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """900,000 × 900,000 px at 0.25 µm/px in ~440 KB: one level, every tile the same bytes."""
    return write_repeated_tile_tiff(
        tmp_path_factory.mktemp("giant") / "giant.tif", 900_000, 900_000
    )


def test_giant_single_level_tiff_is_refused_before_any_read(giant: Path) -> None:
    assert giant.stat().st_size < 600_000
    t0 = time.monotonic()
    with open_slide(giant) as slide:
        assert slide.dimensions == (900_000, 900_000) and slide.level_count == 1
        with pytest.raises(ReadBudgetError, match="single level") as info:
            compute_tissue_mask(slide)
        assert info.value.stage == "tissue" and info.value.read_px == 900_000**2
        with pytest.raises(ReadBudgetError, match="thumbnail"):
            slide.get_thumbnail(512)
    assert time.monotonic() - t0 < 30  # the target; here it takes well under 2 s


def test_budget_refuses_an_analysis_grid(tmp_path: Path) -> None:
    path = write_pyramid(tmp_path / "s.tiff", 2048, 2048, 0.5, lambda x, y: _pink(x))
    tight = SlideSettings(max_stage_read_px=500_000)
    with open_slide(path, settings=tight) as slide:
        with pytest.raises(ReadBudgetError, match="tiles stage"):
            TileGrid.for_slide(slide, target_mpp=0.5, tile_px=224)
        assert len(TileGrid.for_slide(slide, target_mpp=8.0, tile_px=16)) > 0


def test_tissue_read_is_chunked_cancellable_and_reports_progress(tmp_path: Path) -> None:
    # one level of 6000 × 5000: the tissue mask reads level 0 in 2048-px chunks (3 × 3)
    path = write_repeated_tile_tiff(tmp_path / "one-level.tif", 6000, 5000, tile=512)
    with open_slide(path) as slide:
        assert tissue_read_px(slide, 4.0) == (0, 30_000_000)
        seen: list[tuple[int, int]] = []
        mask = compute_tissue_mask(slide, progress=lambda d, t: seen.append((d, t)))
        assert seen[-1] == (9, 9) and [d for d, _ in seen] == list(range(1, 10))
        assert mask.mask.shape[0] > 0
        polls = iter(range(100))
        with pytest.raises(StageCancelled, match="after 2 of 9 chunks"):
            compute_tissue_mask(slide, cancel=lambda: next(polls) >= 2)


def test_dicom_ycbcr_labelled_rgb_is_corrected(shared_data: Path) -> None:
    folder = shared_data / DICOM_CMU
    raw_settings = SlideSettings(colour_fix="off")
    with open_slide(folder, settings=raw_settings) as raw:  # the series folder opens too
        assert raw.colour.verdict == "skipped"
        salmon = raw.read_region((0, 0), 3, raw.level_dimensions[3])
    r, g, b = glass_colour(salmon)
    assert r - min(g, b) > 80  # what OpenSlide hands out: salmon glass
    with open_slide(folder) as slide:
        qc = slide.colour.as_qc()
        assert qc["verdict"] == "ycbcr_as_rgb" and qc["corrected"] is True
        assert qc["jpeg_markers"] == "JFIF (YCbCr)"
        fixed = slide.read_region((0, 0), 3, slide.level_dimensions[3])
        assert max(glass_colour(fixed)) - min(glass_colour(fixed)) < 10
        thumb = slide.get_thumbnail(256)
        assert max(glass_colour(thumb)) - min(glass_colour(thumb)) < 10
    with pytest.raises(SlideColourError, match="YCbCr"):
        open_slide(folder, settings=SlideSettings(colour_fix="refuse"))


def test_svs_glass_is_neutral_and_untouched(real_slide: Path) -> None:
    with open_slide(real_slide) as slide:
        assert slide.colour.verdict == "neutral" and not slide.colour.corrected
        assert slide.colour.jpeg_markers == "none"  # TIFF tiles carry no JFIF marker


def test_svs_and_dicom_tissue_masks_agree(real_slide: Path, shared_data: Path) -> None:
    areas = []
    for path in (real_slide, shared_data / DICOM_CMU):
        with open_slide(path) as slide:
            areas.append(compute_tissue_mask(slide, TissueSettings()).area_mm2)
    assert areas[1] == pytest.approx(areas[0], rel=0.05), areas


def test_judge_separates_fault_from_tinted_glass() -> None:
    glass = np.full((32, 32, 3), (246, 130, 132), np.uint8)  # white stored as Y, Cb, Cr
    assert judge(glass, 0, 40.0, "JFIF (YCbCr)").verdict == "ycbcr_as_rgb"
    assert judge(glass, 0, 40.0, "Adobe RGB").verdict == "off_neutral"  # markers say RGB
    yellow = np.full((32, 32, 3), (250, 240, 150), np.uint8)  # tinted glass: not that fault
    assert judge(yellow, 0, 40.0, "none").verdict == "off_neutral"
    white = np.full((32, 32, 3), 240, np.uint8)
    assert judge(white, 0, 40.0, "none").verdict == "neutral"
    assert ycbcr_to_rgb(np.array([[128, 128, 128]], np.uint8)).tolist() == [[128, 128, 128]]


def test_jpeg_markers_read_from_file(tmp_path: Path, real_slide: Path) -> None:
    jfif = tmp_path / "a.bin"
    jfif.write_bytes(b"xx\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01" + bytes(40))
    assert jpeg_markers(jfif) == "JFIF (YCbCr)"
    adobe = tmp_path / "b.bin"
    adobe.write_bytes(b"\xff\xd8\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00" + bytes(8))
    assert jpeg_markers(adobe) == "Adobe RGB"
    assert jpeg_markers(tmp_path / "missing") == "unknown"


def test_every_refusal_is_a_wsi_error() -> None:
    for cls in (ReadBudgetError, SlideColourError, StageCancelled):
        assert issubclass(cls, WsiError)


def _pink(x: np.ndarray) -> np.ndarray:
    out = np.full((*x.shape, 3), 240, np.uint8)
    out[..., 1] = 150
    return out
