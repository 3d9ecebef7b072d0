"""End to end against a real Orthanc: the real DICOM WSI CMU-1-Small-Region is stored, discovered
once, analysed in-process, and its results are stored back, retrievable and valid (read back with
highdicom: annotation counts equal report.json). Failures end the job with a typed reason."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest

from tests.dicomweb.readback import (
    analyse_stored_series,
    check_annotations,
    retrieve_one,
    sr_numbers,
)
from tests.orthanc_server import Orthanc
from workers.jobs import ServiceContext
from workers.pacs import PacsWatcher, submit_series
from workers.store import FAILED
from workers.tasks import run_job

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_series_in_orthanc_to_results_in_orthanc(
    orthanc: Orthanc,
    cmu1_files: list[Path],
    make_ctx: Callable[..., ServiceContext],
    tmp_path: Path,
) -> None:
    ctx = make_ctx(orthanc.dicomweb)
    orthanc.upload(cmu1_files)
    results: list[str] = []
    watcher = PacsWatcher(ctx, ctx.settings.pacs.archives[0], lambda j: results.append(j))
    job, source, found = analyse_stored_series(ctx, watcher, cmu1_files[0])
    report: dict[str, Any] = json.loads((Path(job.out_dir) / "report.json").read_text())
    assert report["slide"]["width"] == source.TotalPixelMatrixColumns

    ann = hd.ann.MicroscopyBulkSimpleAnnotations.from_dataset(
        pydicom.dcmread(retrieve_one(ctx, found["ANN"][0], tmp_path / "ann"))
    )
    check_annotations(ann, source, Path(job.out_dir))
    mit, tam = report["mitosis"], report["tam"]

    maps = np.load(Path(job.out_dir) / "tiles.npz")
    necrosis = report["necrosis"]
    for info in found["SEG"]:
        seg_path = retrieve_one(ctx, info, tmp_path / info.series_uid)
        seg = hd.seg.Segmentation.from_dataset(pydicom.dcmread(seg_path))
        assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID
        matrix = seg.get_total_pixel_matrix(combine_segments=True)
        if seg.number_of_segments == 1:  # necrosis: the mask the reported area is counted on
            measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
            spacing_um = [1000 * float(v) for v in measures.PixelSpacing]
            area_mm2 = float((matrix > 0).sum()) * spacing_um[0] * spacing_um[1] / 1e6
            assert area_mm2 == pytest.approx(necrosis["area_mm2"], abs=1e-4)
            assert spacing_um[0] == pytest.approx(necrosis["map_mpp"], rel=1e-3)
        else:  # patterns: one pixel per pattern tile
            assert seg.number_of_segments == 5
            assert matrix.shape == maps["map__pattern_spindle"].shape
            tiles = report["pattern"]["tissue_classes"]
            for number in range(1, 6):
                label = seg.get_segment_description(number).SegmentLabel
                name = next(c for c, v in tiles.items() if v["display"] == label)
                assert int((matrix == number).sum()) == tiles[name]["tiles"], label
    sr = hd.sr.srread(retrieve_one(ctx, found["SR"][0], tmp_path / "sr"))
    values = sr_numbers(sr)
    for section, name, key in ((mit, "Mitoses", "count_total"),
                               (tam, "Tumour-associated macrophages", "macrophages")):  # fmt: skip
        if section.get("withheld"):  # benign skin, "no tumour found": not assessed, not 0
            assert section[key] is None and name not in values, values
        else:
            assert values[name] == section[key]

    assert watcher.poll_once() == []  # discovered once: the result series are not slides
    assert not submit_series(ctx, source.SeriesInstanceUID, results.append).created


def test_job_fails_with_a_typed_reason_when_results_are_refused(
    orthanc_factory: Callable[..., Orthanc],
    cmu1_files: list[Path],
    make_ctx: Callable[..., ServiceContext],
) -> None:
    """An archive that drops Segmentations: the job fails with pacs_store_rejected, the .dcm
    files stay in the job folder; an archive gone before retrieval: pacs_unreachable."""
    lua = (
        "function ReceivedInstanceFilter(dicom, origin, info)\n"
        "  return dicom.Modality ~= 'SEG'\n"
        "end\n"
    )
    server = orthanc_factory(lua=lua)
    server.upload(cmu1_files)
    ctx = make_ctx(server.dicomweb, settings={"analyses": ["pattern"]})  # fast: pattern only
    uid = str(pydicom.dcmread(cmu1_files[0], stop_before_pixels=True).SeriesInstanceUID)
    sent: list[str] = []
    sub = submit_series(ctx, uid, sent.append)
    server.stop()  # the archive goes away before the worker retrieves the series
    run_job(ctx, sub.job.id)
    job = ctx.store.get_job(sub.job.id)
    assert job.state == FAILED and job.reason_code == "pacs_unreachable", job.reason
    assert "after 3 attempts" in str(job.reason)

    server = orthanc_factory(lua=lua)
    server.upload(cmu1_files)
    ctx2 = make_ctx(server.dicomweb, settings={"analyses": ["pattern"]})
    sub = submit_series(ctx2, uid, sent.append)
    run_job(ctx2, sub.job.id)
    job = ctx2.store.get_job(sub.job.id)
    assert job.state == FAILED and job.reason_code == "pacs_store_rejected", job.reason
    assert "segmentation" in str(job.reason)
    kept = sorted(p.name for p in (Path(job.out_dir) / "dicom").glob("*.dcm"))
    assert kept == ["report-sr.dcm", "segmentation-pattern.dcm"]
