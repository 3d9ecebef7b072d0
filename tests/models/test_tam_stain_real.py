"""Stain detection (H&E versus DAB IHC) on the real files in ../shared/data and generated slides.

Regression: fixed Ruifrok–Johnston H-E-DAB deconvolution called the real Aperio H&E slide "IHC"
(DAB 77 % of tissue pixels), which sent TAM down the IHC route and stopped the mitosis count.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.analyses.settings_cells import TamSettings
from models.cells.stain import BROWN_BLUE_GREEN_RATIO, stain_evidence
from wsi.slide import open_slide
from wsi.synthetic.slide import generate_slide
from wsi.synthetic.spec import SynthSpec
from wsi.tissue import read_downsampled

_S = TamSettings()


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _low(path: Path) -> np.ndarray:
    with open_slide(path) as slide:
        low, _ = read_downsampled(slide, 4.0)
    return np.asarray(low)


def _real_he(shared: Path) -> list[Path]:
    files = sorted((shared / "patches" / "kather").glob("*/*.png"))
    files += sorted((shared / "nuclei" / "miccai2015_seg").glob("image[0-9][0-9].png"))
    return files


def test_real_he_slide_is_he(real_slide: Path) -> None:
    ev = stain_evidence(_low(real_slide), _S.dab_od_threshold)
    assert ev.counterpart == "eosin"
    assert ev.blue_green_ratio is not None and ev.blue_green_ratio < BROWN_BLUE_GREEN_RATIO
    assert not ev.looks_ihc(_S.dab_slide_fraction_ihc)
    assert ev.eosin_fraction > 0.3 and ev.dab_fraction == 0.0


def test_real_he_patches_are_he(shared_data: Path) -> None:
    files = _real_he(shared_data)
    assert len(files) >= 5
    for f in files:
        ev = stain_evidence(_png(f), _S.dab_od_threshold)
        assert ev.counterpart == "eosin", f.name
        assert not ev.looks_ihc(_S.dab_slide_fraction_ihc), f.name


def test_real_dab_tiles_are_ihc(shared_data: Path) -> None:
    files = sorted((shared_data / "ihc" / "deepliif" / "ihc").glob("*.png"))
    assert len(files) >= 4
    for f in files:
        ev = stain_evidence(_png(f), _S.dab_od_threshold)
        assert ev.counterpart == "dab", f.name
        assert ev.looks_ihc(_S.dab_slide_fraction_ihc), f.name


@pytest.mark.parametrize("stain", ["he", "cd68", "cd163"])
def test_generated_slides_by_stain(tmp_path: Path, stain: str) -> None:
    spec = SynthSpec(seed=23, width=1024, height=1024, stain=stain, tam_fraction=0.4, workers=1)
    generate_slide(spec, tmp_path)
    ev = stain_evidence(_low(tmp_path / "slide.tiff"), _S.dab_od_threshold)
    assert ev.looks_ihc(_S.dab_slide_fraction_ihc) == (stain != "he")
    assert ev.counterpart == ("eosin" if stain == "he" else "dab")
