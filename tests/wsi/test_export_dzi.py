"""Deep Zoom tiles from a real slide: geometry as OpenSlide's generator, pixels from the slide."""

from __future__ import annotations

import io
import math
import threading
from pathlib import Path

import numpy as np
import openslide
import pytest
from openslide.deepzoom import DeepZoomGenerator
from PIL import Image

from wsi import open_slide
from wsi.export import ExportError
from wsi.export.dzi import DeepZoom, TileCache, lut_transform

SLIDE = Path(__file__).resolve().parents[3] / "shared/data/slides/CMU-1-Small-Region.svs"


@pytest.fixture(scope="module")
def dz():  # type: ignore[no-untyped-def]
    with open_slide(SLIDE) as slide:
        yield DeepZoom(slide, tile_size=254, overlap=1)


def test_geometry_matches_openslide_generator(dz: DeepZoom) -> None:
    with openslide.OpenSlide(str(SLIDE)) as osr:
        ref = DeepZoomGenerator(osr, tile_size=254, overlap=1, limit_bounds=False)
        assert dz.level_count == ref.level_count == math.ceil(math.log2(2967)) + 1
        for level in range(dz.level_count):
            assert dz.z_dimensions(level) == ref.level_dimensions[level]
            assert dz.tile_count(level) == ref.level_tiles[level]
        assert 'Width="2220" Height="2967"' in dz.dzi_xml()
        assert 'TileSize="254"' in dz.dzi_xml() and 'Overlap="1"' in dz.dzi_xml()
        # full-resolution tiles equal the reference generator's pixels
        top = dz.level_count - 1
        for col, row in [(0, 0), (1, 2), (8, 11)]:
            ours = dz.tile_array(top, col, row)
            theirs = np.asarray(ref.get_tile(top, (col, row)).convert("RGB"))
            assert ours.shape == theirs.shape
            assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1


def test_full_resolution_tile_is_the_slide_region(dz: DeepZoom) -> None:
    top = dz.level_count - 1
    tile = dz.tile_array(top, 1, 2)
    assert tile.shape == (256, 256, 3)  # 254 + overlap on both sides
    region = dz.source.read_region((253, 507), 0, (256, 256))
    np.testing.assert_array_equal(tile, region)


def test_low_level_tile_is_a_downsampled_slide(dz: DeepZoom) -> None:
    level = dz.level_count - 1 - 4  # 16× smaller
    tile = dz.tile_array(level, 0, 0)
    assert tile.shape[:2] == (math.ceil(2967 / 16), math.ceil(2220 / 16))
    whole = dz.source.read_region((0, 0), 0, (2220, 2967))
    ref = np.asarray(Image.fromarray(whole).resize(tile.shape[1::-1], Image.Resampling.BOX))
    assert np.abs(tile.astype(float) - ref.astype(float)).mean() < 6


def test_encoded_tiles_and_errors(dz: DeepZoom) -> None:
    img = Image.open(io.BytesIO(dz.tile(dz.level_count - 1, 0, 0)))
    assert img.format == "JPEG" and img.size == (255, 255)
    with pytest.raises(ExportError, match="out of range"):
        dz.tile(dz.level_count - 1, 9, 0)
    with pytest.raises(ExportError, match="level 99"):
        dz.tile(99, 0, 0)
    with pytest.raises(ExportError, match="tile_size"):
        DeepZoom(dz.source, tile_size=0)


def test_lut_transform_makes_png_with_alpha(dz: DeepZoom) -> None:
    lut = np.zeros((256, 4), np.uint8)
    lut[:, 3] = np.arange(256)
    png = DeepZoom(dz.source, fmt="png", transform=lut_transform(lut), resample="nearest")
    arr = png.tile_array(png.level_count - 1, 0, 0)
    assert arr.shape == (255, 255, 4)
    np.testing.assert_array_equal(arr[..., 3], dz.source.read_region((0, 0), 0, (255, 255))[..., 0])
    assert Image.open(io.BytesIO(png.tile(png.level_count - 1, 0, 0))).mode == "RGBA"


def test_tile_cache_is_lru_bounded_and_thread_safe() -> None:
    cache = TileCache(max_bytes=30)
    made: list[str] = []

    def make(key: str) -> bytes:
        made.append(key)
        return key.encode() * 10

    for key in ["a", "b", "c", "a", "d"]:  # 10 bytes each: holds 3
        cache.get_or_create(key, lambda k=key: make(k))  # type: ignore[misc]
    assert made == ["a", "b", "c", "d"] and cache.hits == 1 and len(cache) == 3
    cache.get_or_create("b", lambda: make("b"))  # b was the least recently used: evicted
    assert made[-1] == "b"
    cache.get_or_create("a", lambda: make("a"))
    assert made[-1] == "b"  # a still cached

    threads = [
        threading.Thread(
            target=lambda i=i: [cache.get_or_create(i % 5, lambda: b"x" * 5) for _ in range(200)]
        )
        for i in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(cache) <= 6
