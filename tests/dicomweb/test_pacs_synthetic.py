"""A synthetic slide converted to DICOM by ``OrthancWSIDicomizer``, end to end against a real
Orthanc: stored, discovered once, analysed through the PACS path, results stored back and read
back (annotation counts equal report.json), and its analysis agrees with the TIFF's.

The slide (3072 × 3072 px at 0.25 µm/px, seed 19, 120 mitoses per 2 mm² so that a 0.6 mm² slide
holds a handful) is generated once into the test-slide cache; the conversion takes 0.2 s.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import highdicom as hd
import pydicom
import pytest

from tests.dicomweb.readback import (
    analyse_stored_series,
    check_annotations,
    retrieve_one,
    sr_numbers,
)
from tests.orthanc_server import Orthanc, dicomize, dicomizer_available, wsi_dataset
from tests.slide_helpers import synthetic_cache
from workers.jobs import ServiceContext
from workers.pacs import PacsWatcher
from workers.pipeline import run_pipeline
from wsi import open_slide

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SEED, SIZE_PX, MPP, MITOSES_PER_2MM2 = 19, 3072, 0.25, 120.0


@dataclass(frozen=True)
class SyntheticDicom:
    """A generated slide and its DICOM copy."""

    tiff: Path
    files: list[Path]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> SyntheticDicom:
    """The synthetic TIFF (cached) and its DICOM series (converted afresh)."""
    why = dicomizer_available()
    if why:
        pytest.skip(why)
    from wsi.synthetic import SynthSpec, generate_slide

    folder = synthetic_cache() / f"dicomize-{SEED}-{SIZE_PX}"
    if not (folder / "slide.tiff").is_file():
        spec = SynthSpec(
            seed=SEED,
            width=SIZE_PX,
            height=SIZE_PX,
            mpp=MPP,
            mitoses_per_2mm2=MITOSES_PER_2MM2,
        )
        generate_slide(spec, folder)
    files = dicomize(
        folder / "slide.tiff",
        tmp_path_factory.mktemp("dicomized") / "series",
        width=SIZE_PX,
        height=SIZE_PX,
        mpp=MPP,
        dataset=wsi_dataset(f"ATC-SYNTH-{SEED}"),
    )
    return SyntheticDicom(folder / "slide.tiff", files)


def test_dicomizer_keeps_geometry_pixels_and_pixel_spacing(synthetic: SyntheticDicom) -> None:
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in synthetic.files]
    assert len({h.SeriesInstanceUID for h in headers}) == 1
    assert len({h.FrameOfReferenceUID for h in headers}) == 1  # one for the whole pyramid
    assert all("VOLUME" in h.ImageType and h.Modality == "SM" for h in headers)
    with open_slide(synthetic.tiff) as tiff, open_slide(synthetic.files[0].parent) as dcm:
        assert dcm.properties["openslide.vendor"] == "dicom"
        assert dcm.level_dimensions == tiff.level_dimensions
        # Pixel Spacing comes from the imaged size passed in mm, stored as a 32-bit float
        assert dcm.mpp == pytest.approx(tiff.mpp, rel=1e-6)
        for level, (w, h) in enumerate(tiff.level_dimensions):
            ds = int(tiff.level_downsamples[level])
            for x, y in [(0, 0), (w // 3, h // 2), (w - 300, h - 300)]:
                region = ((x * ds, y * ds), level, (300, 300))
                # the JPEG tiles are copied, not re-encoded: identical pixels
                assert (dcm.read_region(*region) == tiff.read_region(*region)).all(), region


def test_synthetic_dicom_from_orthanc_agrees_with_the_tiff(
    orthanc: Orthanc,
    synthetic: SyntheticDicom,
    make_ctx: Callable[..., ServiceContext],
    tmp_path: Path,
) -> None:
    ctx = make_ctx(orthanc.dicomweb)
    orthanc.upload(synthetic.files)
    sent: list[str] = []
    watcher = PacsWatcher(ctx, ctx.settings.pacs.archives[0], sent.append)
    job, source, found = analyse_stored_series(ctx, watcher, synthetic.files[0])
    out_dir = Path(job.out_dir)
    ann = hd.ann.MicroscopyBulkSimpleAnnotations.from_dataset(
        pydicom.dcmread(retrieve_one(ctx, found["ANN"][0], tmp_path / "ann"))
    )
    counts = check_annotations(ann, source, out_dir)
    dicom_report: dict[str, Any] = json.loads((out_dir / "report.json").read_text())
    assert (
        sum(v for k, v in counts.items() if k.startswith("Mitosis"))
        == (dicom_report["mitosis"]["count_total"])
    )
    sr = sr_numbers(hd.sr.srread(retrieve_one(ctx, found["SR"][0], tmp_path / "sr")))
    assert sr["Mitoses"] == dicom_report["mitosis"]["count_total"]
    for info in found["SEG"]:
        seg = pydicom.dcmread(retrieve_one(ctx, info, tmp_path / info.series_uid))
        assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert watcher.poll_once() == []  # discovered once: the result series are not slides
    assert sent == [job.id]

    tiff_report = run_pipeline(synthetic.tiff, tmp_path / "tiff", ctx.settings)
    assert dicom_report["scope"]["verdict"] == tiff_report["scope"]["verdict"] == "in_scope"
    tissue_dcm, tissue_tiff = (r["tissue"]["area_mm2"] for r in (dicom_report, tiff_report))
    assert tissue_dcm == pytest.approx(tissue_tiff, rel=0.05)
    # The reads are pixel-identical (test above); the only difference in the input is the
    # float32 Pixel Spacing (0.250000012 µm), which moves the 8 µm tissue mask's edge by one
    # column/row (ceil(3072 / 31.999998) = 97, not 96) and so can add or drop a border tile:
    # at most one figure's difference.
    mit_dcm, mit_tiff = (r["mitosis"]["count_total"] for r in (dicom_report, tiff_report))
    assert abs(mit_dcm - mit_tiff) <= 1, (mit_dcm, mit_tiff)
    assert mit_tiff >= 3  # the comparison is not between two zeros
