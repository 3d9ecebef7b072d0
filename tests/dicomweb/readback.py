"""Read result series back from the archive and check them against the job's report.json
(shared by the end-to-end tests of the real CMU-1 series and of the synthetic slide)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import highdicom as hd
import pydicom

from workers.dicomweb import DicomWebClient, SeriesInfo
from workers.jobs import ServiceContext
from workers.pacs import PacsWatcher
from workers.store import SUCCEEDED, Job
from workers.tasks import run_job


def client(ctx: ServiceContext) -> DicomWebClient:
    """A DICOMweb client on the context's first archive."""
    return DicomWebClient(ctx.settings.pacs.archives[0], ctx.settings.pacs)


def series_by_modality(ctx: ServiceContext, study_uid: str) -> dict[str, list[SeriesInfo]]:
    """The study's series in the archive (QIDO-RS), grouped by modality."""
    with client(ctx) as c:
        found = c.search_series({"StudyInstanceUID": study_uid})
    out: dict[str, list[SeriesInfo]] = {}
    for s in found:
        out.setdefault(s.modality, []).append(s)
    return out


def analyse_stored_series(
    ctx: ServiceContext, watcher: PacsWatcher, first_file: Path
) -> tuple[Job, pydicom.Dataset, dict[str, list[SeriesInfo]]]:
    """Discover the uploaded series (two polls: first sight, then stable), run its job in process
    (what a worker runs) and check that one ANN, two SEG and one SR series came back beside it.

    Returns the finished job, the source slide's header and the study's series by modality.
    """
    assert watcher.poll_once() == []  # first sight
    (job_id,) = watcher.poll_once()  # stable: submitted once
    run_job(ctx, job_id)
    job = ctx.store.get_job(job_id)
    assert job.state == SUCCEEDED, f"{job.reason_code}: {job.reason}"
    source = pydicom.dcmread(first_file, stop_before_pixels=True)
    found = series_by_modality(ctx, source.StudyInstanceUID)
    assert sorted((m, len(v)) for m, v in found.items()) == [
        ("ANN", 1),
        ("SEG", 2),
        ("SM", 1),
        ("SR", 1),
    ]
    return job, source, found


def retrieve_one(ctx: ServiceContext, info: SeriesInfo, dest: Path) -> Path:
    """Retrieve a one-instance series (WADO-RS) into ``dest`` and return the file."""
    with client(ctx) as c:
        (path,) = c.retrieve_series(info, dest)
    return path


def sr_numbers(sr: pydicom.Dataset) -> dict[str, float]:
    """Every NUM content item of an SR by its concept name."""
    out: dict[str, float] = {}

    def walk(items: Any) -> None:
        for item in items:
            if item.ValueType == "NUM":
                name = item.ConceptNameCodeSequence[0].CodeMeaning
                out[name] = float(item.MeasuredValueSequence[0].NumericValue)
            if "ContentSequence" in item:
                walk(item.ContentSequence)

    walk(sr.ContentSequence)
    return out


def annotation_counts(ann: hd.ann.MicroscopyBulkSimpleAnnotations) -> dict[str, int]:
    """Number of annotations per group label."""
    return {g.label: g.number_of_annotations for g in ann.get_annotation_groups()}


def _counted(section: dict[str, Any]) -> dict[str, Any]:
    """The section's counts, as annotations carry them: a withheld count (null) has no points."""
    if not section.get("withheld"):
        return section
    return {k: 0 if v is None else v for k, v in section.items()}


def check_annotations(
    ann: hd.ann.MicroscopyBulkSimpleAnnotations, source: pydicom.Dataset, out_dir: Path
) -> dict[str, int]:
    """Assert the bulk annotations' group counts equal the job's report.json and GeoJSON, and
    that they reference the slide's study and series; return the counts."""
    report: dict[str, Any] = json.loads((out_dir / "report.json").read_text())
    counts = annotation_counts(ann)
    mit, tam = (_counted(report[k]) for k in ("mitosis", "tam"))
    assert counts.get("Mitosis: Typical", 0) == mit["count_typical"], counts
    assert counts.get("Mitosis: Atypical", 0) == mit["count_atypical"] - mit["count_tripolar"]
    assert counts.get("Mitosis: Tripolar", 0) == mit["count_tripolar"], counts
    assert counts.get("Macrophage", 0) == tam["macrophages"], counts
    # the necrosis polygons are the GeoJSON's Necrosis *annotations*; its pattern tiles
    # classified necrosis are *detections* named Necrosis too, and are not in the ANN
    geo = json.loads((out_dir / "annotations.geojson").read_text())
    polygons = [
        f
        for f in geo["features"]
        if f["properties"]["classification"]["name"] == "Necrosis"
        and f["properties"]["objectType"] == "annotation"
    ]
    assert counts.get("Necrosis", 0) == len(polygons), counts
    assert ann.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    assert ann.StudyInstanceUID == source.StudyInstanceUID
    return counts
