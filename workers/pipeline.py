"""The one analysis call the service makes: slide in, report and output files out.

``run_pipeline`` is a plain function (tested in-process) that Celery tasks, the watch folder and
batch reanalysis all call; ``atc-wsi analyze`` and ``make demo`` run the same two steps
(``models.analysis.analyze_slide`` then ``workers.report.write.write_outputs``). A DICOM slide also
gets its results as DICOM objects in ``out_dir/dicom/`` (``workers.dicom_results``). With a
``work_dir`` the engine checkpoints per chunk of tiles and resumes after a crash: chunks already on
disk are loaded, not recomputed, and each computed chunk is logged in ``work_dir/chunks.log``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from models.analysis import analyze_slide
from models.errors import AnalysisCancelled
from workers.errors import DicomResultError
from workers.report.write import write_outputs
from workers.settings import Settings
from wsi.results import SlideOutputs
from wsi.slide import resolve_slide_file

ProgressFn = Callable[[str, int, int], None]
CancelFn = Callable[[], bool]

#: Part of every idempotency key: bump it when results would change for the same slide.
PIPELINE_VERSION = "2.3.0"  # 2.3.0: counts withheld (null) on no-tumour slides, not 0


def run_pipeline(
    slide_path: Path,
    out_dir: Path,
    settings: Settings,
    *,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    work_dir: Path | None = None,
) -> dict[str, Any]:
    """Analyse one slide, write its outputs atomically into ``out_dir`` and return the report.

    Raises:
        WsiError: the slide cannot be opened, lacks a pixel size, or is implausible.
        ModelError: a model is unknown or its weights fail their checksum.
        AnalysisCancelled: ``cancel()`` returned True between tissue chunks, between batches or
            before writing.
    """
    result = analyze_slide(
        slide_path, settings.pipeline(), progress=progress, cancel=cancel, work_dir=work_dir
    )
    if cancel is not None and cancel():  # the last point before writing: nothing half-written
        raise AnalysisCancelled("analysis cancelled before its outputs were written")
    if settings.pacs.write_dicom and resolve_slide_file(slide_path).suffix.lower() == ".dcm":
        necrosis = result.analyses.get("necrosis")
        mask = (necrosis.data["mask"], float(necrosis.data["l0_per_px"])) if necrosis else None
        write_dicom_outputs(result.outputs, result.report, slide_path, out_dir / "dicom", mask)
    write_outputs(result.outputs, out_dir, slide_path, settings=settings.outputs)
    return result.report


def write_dicom_outputs(
    outputs: SlideOutputs,
    report: dict[str, Any],
    slide_path: Path,
    dicom_dir: Path,
    necrosis: tuple[Any, float] | None = None,
) -> list[Path]:
    """Write the DICOM result objects of a DICOM slide (``workers.dicom_results``).

    Raises:
        DicomResultError: highdicom refused to build an object from this slide's header.
    """
    from workers.dicom_results import write_dicom_results

    try:
        return write_dicom_results(outputs, report, slide_path, dicom_dir, necrosis)
    except (ValueError, AttributeError, TypeError) as exc:
        raise DicomResultError(
            f"cannot write DICOM results for {slide_path}: {type(exc).__name__}: {exc}; set "
            "pacs.write_dicom: false to analyse it without them"
        ) from exc
