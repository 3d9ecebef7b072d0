"""Root fixtures: the real files in ../shared/data and small generated pyramidal TIFFs."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.slide_helpers import CACHE, SHARED, ellipse_tissue, write_pyramid


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only real data folder."""
    if not SHARED.is_dir():
        pytest.skip(f"shared data not found at {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def real_slide(shared_data: Path) -> Path:
    """The real Aperio H&E slide CMU-1-Small-Region.svs (read-only)."""
    return shared_data / "slides" / "CMU-1-Small-Region.svs"


@pytest.fixture(scope="session")
def slide_cache() -> Path:
    """A cache folder for generated slides, kept between test sessions."""
    CACHE.mkdir(parents=True, exist_ok=True)
    return CACHE


@pytest.fixture(scope="session")
def ellipse_slide(slide_cache: Path) -> Path:
    """A 6000 × 4000 pyramidal TIFF at 0.25 µm/px with an elliptical piece of tissue."""
    path = slide_cache / "ellipse-6000x4000-v1.tiff"
    if not path.exists():
        write_pyramid(path, 6000, 4000, 0.25, ellipse_tissue(6000, 4000))
    return path


@pytest.fixture()
def writable_copy(tmp_path: Path) -> Callable[[Path], Path]:
    """Copy a read-only file into the test's tmp folder."""

    def copy(src: Path) -> Path:
        dst = tmp_path / src.name
        shutil.copy2(src, dst)
        return dst

    return copy
