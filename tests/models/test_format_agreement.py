"""One slide in two formats gives one answer: CMU-1-Small-Region as Aperio SVS and as a DICOM
series whose JPEG frames are YCbCr labelled RGB (corrected by the glass-colour check)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from models.analysis import analyze_slide
from models.settings import PipelineSettings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reports(shared_data: Path) -> dict[str, dict[str, Any]]:
    settings = PipelineSettings()
    slides = {
        "svs": shared_data / "slides" / "CMU-1-Small-Region.svs",
        "dicom": shared_data / "slides" / "dicom" / "cmu-1-small-region",
    }
    return {name: analyze_slide(path, settings).report for name, path in slides.items()}


def test_dicom_copy_is_corrected_and_recorded(reports: dict[str, dict[str, Any]]) -> None:
    assert reports["svs"]["qc"]["colour"]["verdict"] == "neutral"
    colour = reports["dicom"]["qc"]["colour"]
    assert colour["verdict"] == "ycbcr_as_rgb" and colour["corrected"] is True


def test_svs_and_dicom_agree(reports: dict[str, dict[str, Any]]) -> None:
    svs, dcm = reports["svs"], reports["dicom"]
    assert dcm["tissue"]["area_mm2"] == pytest.approx(svs["tissue"]["area_mm2"], rel=0.05)
    assert dcm["pattern"]["predominant"] == svs["pattern"]["predominant"] is not None
    pct = svs["necrosis"]["percent_of_tumour_bed"]
    assert dcm["necrosis"]["percent_of_tumour_bed"] == pytest.approx(pct, rel=0.10)


@pytest.mark.xfail(
    reason="with atc-mitosis-v1 2.1.0 and atc-tam-v1 1.3.0 the cell counts on this benign slide "
    "differ between the formats (mitoses 145 vs 50, macrophages 30 vs 21, from the DICOM copy's "
    "lower-level tumour map): issues 15/21 left open",
    strict=False,
)
def test_svs_and_dicom_mitosis_counts_agree(reports: dict[str, dict[str, Any]]) -> None:
    svs, dcm = reports["svs"], reports["dicom"]
    assert dcm["mitosis"]["count_total"] == pytest.approx(svs["mitosis"]["count_total"], rel=0.10)
    assert dcm["tam"]["macrophages"] == pytest.approx(svs["tam"]["macrophages"], rel=0.10)
