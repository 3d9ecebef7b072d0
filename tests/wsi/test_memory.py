"""Memory stays bounded: iterating every tile of a 40,000 × 30,000 slide."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.slide_helpers import ellipse_tissue, write_pyramid

CHILD = r"""
import json, resource, sys
from wsi import TileGrid, TileReader, compute_tissue_mask, open_slide
path = sys.argv[1]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with open_slide(path) as slide:
    mask = compute_tissue_mask(slide)
    grid = TileGrid.for_slide(slide, target_mpp=0.5, tile_px=256, mask=mask, min_tissue=0.1)
reader = TileReader(path, grid)
checksum = 0
for i in range(len(grid)):
    checksum += int(reader.read(i)["image"][0, 0, 0])
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
stats = {"tiles": len(grid), "before_kb": before, "after_kb": after, "checksum": checksum}
print(json.dumps(stats))
"""


@pytest.fixture(scope="session")
def big_slide(slide_cache: Path) -> Path:
    path = slide_cache / "ellipse-40000x30000-v1.tiff"
    if not path.exists():
        write_pyramid(path, 40_000, 30_000, 0.25, ellipse_tissue(40_000, 30_000), tile=512)
    return path


@pytest.mark.slow
def test_iterating_every_tile_keeps_rss_flat(big_slide: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(big_slide)],
        capture_output=True,
        text=True,
        check=True,
        timeout=240,
    )
    stats = json.loads(out.stdout.strip().splitlines()[-1])
    assert stats["tiles"] > 1000
    growth_mb = (stats["after_kb"] - stats["before_kb"]) / 1024
    assert growth_mb < 300, stats
