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
    assert dcm["scope"]["verdict"] == svs["scope"]["verdict"]
    assert dcm["pattern"]["predominant"] == svs["pattern"]["predominant"]
    pct = svs["necrosis"]["percent_of_tumour_bed"]
    if pct is None:  # withheld outside in_scope: withheld on both
        assert dcm["necrosis"]["percent_of_tumour_bed"] is None
    else:
        assert dcm["necrosis"]["percent_of_tumour_bed"] == pytest.approx(pct, rel=0.10)
    assert dcm["necrosis"]["area_mm2"] == pytest.approx(svs["necrosis"]["area_mm2"], abs=0.01)


def _close(a: int, b: int) -> bool:
    """Within 10 % of the SVS count, or one cell (10 % of a count under 10 is under one cell)."""
    return abs(a - b) <= max(0.10 * b, 1)


def test_svs_and_dicom_mitosis_counts_agree(reports: dict[str, dict[str, Any]]) -> None:
    """Counted on both, within 10 % or a cell; or withheld (null) on both."""
    svs, dcm = reports["svs"], reports["dicom"]
    for section, key in (("mitosis", "count_total"), ("tam", "macrophages")):
        a, b = dcm[section][key], svs[section][key]
        assert (a is None) == (b is None), (section, a, b)
        if a is not None and b is not None:
            assert _close(a, b), (section, a, b)


def test_no_tumour_slide_counts_no_cells(reports: dict[str, dict[str, Any]]) -> None:
    """Benign skin is judged 'no tumour found': no count (null, not 0), the reason beside it."""
    for rep in reports.values():
        assert rep["scope"]["verdict"] == "no_tumour"
        note = f"no_tumour: {rep['scope']['reason']}"
        mit, tam = rep["mitosis"], rep["tam"]
        assert mit["withheld"] == note and tam["withheld"] == note
        assert mit["count_total"] is None and mit["hotspot_2mm2"] is None
        assert mit["mitoses_per_2mm2_hotspot"] is None and mit["mitoses_per_10hpf"] is None
        assert tam["macrophages"] is None and tam["density_per_mm2"] is None
        assert any("no tumour found" in w for w in mit["warnings"])
