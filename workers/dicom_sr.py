"""The report's numbers as a DICOM Comprehensive SR (TID 1500 Measurement Report).

Why an SR and not an encapsulated PDF of report.html: an SR holds each number as a coded,
unit-bearing measurement a PACS, a viewer or a research query can read without OCR; it needs no
browser to render a PDF; and it references the slide it measured. The human-readable page stays
``report.html`` in the job folder.

Counts use the UCUM unit ``{count}``, densities ``/mm2``, areas ``mm2``, shares ``%``. Names not
in SNOMED CT / DCM are local ``99ATC`` codes (``workers.dicom_results.local_code``).

A figure the scope verdict withholds (null in ``report.json``, e.g. the mitosis count on a slide
judged "no tumour found") has no measurement: the SR says instead, per section, that it was not
assessed and why (a coded evaluation beside the scope verdict), so that a missing number is not
read as "not run".
"""

from __future__ import annotations

from typing import Any

import highdicom as hd
import pydicom
from pydicom.sr.codedict import codes

_COUNT = hd.sr.CodedConcept("{count}", "UCUM", "count")
_PER_MM2 = hd.sr.CodedConcept("/mm2", "UCUM", "per square millimeter")
_MM2 = hd.sr.CodedConcept("mm2", "UCUM", "square millimeter")
_PERCENT = hd.sr.CodedConcept("%", "UCUM", "percent")

#: (report section, key, code value, meaning, unit) of each measurement, in report order.
MEASUREMENTS: tuple[tuple[str, str, str, str, hd.sr.CodedConcept], ...] = (
    ("tissue", "area_mm2", "TISSUE-AREA", "Tissue area", _MM2),
    ("necrosis", "viable_tumour_mm2", "VIABLE-TUMOUR-AREA", "Viable tumour area", _MM2),
    ("necrosis", "area_mm2", "NECROSIS-AREA", "Necrosis area", _MM2),
    ("necrosis", "percent_of_tumour_bed", "NECROSIS-PCT", "Necrosis share of tumour bed", _PERCENT),
    ("mitosis", "count_total", "MITOSES", "Mitoses", _COUNT),
    ("mitosis", "count_typical", "MITOSES-TYPICAL", "Typical mitoses", _COUNT),
    ("mitosis", "count_atypical", "MITOSES-ATYPICAL", "Atypical mitoses (incl. tripolar)", _COUNT),
    ("mitosis", "count_tripolar", "MITOSES-TRIPOLAR", "Tripolar mitoses", _COUNT),
    ("mitosis", "per_mm2_viable_tumour", "MITOSES-DENSITY", "Mitoses per mm2 of tumour", _PER_MM2),
    ("mitosis", "mitoses_per_2mm2_hotspot", "MITOSES-HOTSPOT", "Mitoses in 2 mm2 hotspot", _COUNT),
    ("mitosis", "mitoses_per_10hpf", "MITOSES-10HPF", "Mitoses per 10 HPF", _COUNT),
    ("tam", "macrophages", "TAM-COUNT", "Tumour-associated macrophages", _COUNT),
    ("tam", "density_per_mm2", "TAM-DENSITY", "Macrophages per mm2 of tumour", _PER_MM2),
)


#: (report section, code value, meaning) of each section whose figures the scope may withhold.
WITHHOLDABLE: tuple[tuple[str, str, str], ...] = (
    ("pattern", "PATTERN-MIX", "Pattern mix"),
    ("necrosis", "NECROSIS-PCT", "Necrosis share of tumour bed"),
    ("mitosis", "MITOSES", "Mitoses"),
    ("tam", "TAM", "Tumour-associated macrophages"),
)
_NOT_ASSESSED = "NOT-ASSESSED"


def _code(value: str, meaning: str) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(value=value, scheme_designator="99ATC", meaning=meaning)


def report_measurements(report: dict[str, Any]) -> list[hd.sr.Measurement]:
    """Return one SR measurement per number the report holds (missing analyses are skipped)."""
    out = []
    for section, key, value, meaning, unit in MEASUREMENTS:
        number = (report.get(section) or {}).get(key)
        if isinstance(number, int | float) and not isinstance(number, bool):
            out.append(hd.sr.Measurement(name=_code(value, meaning), value=number, unit=unit))
    pattern = report.get("pattern") or {}
    if pattern.get("withheld"):  # no tumour to take shares of (outside in_scope)
        return out
    for name, entry in (pattern.get("per_class") or {}).items():
        pct = entry.get("percent_of_tumour")
        if isinstance(pct, int | float):
            meaning = f"{entry.get('display', name)} share of tumour"
            out.append(
                hd.sr.Measurement(
                    name=_code(f"PATTERN-{name.upper()}-PCT", meaning[:64]),
                    value=pct,
                    unit=_PERCENT,
                )
            )
    return out


def report_evaluations(report: dict[str, Any]) -> list[hd.sr.QualitativeEvaluation]:
    """Return the coded verdicts: scope, the sections it withholds, the predominant pattern."""
    out = []
    verdict = (report.get("scope") or {}).get("verdict")
    if verdict:
        out.append(
            hd.sr.QualitativeEvaluation(
                name=_code("SCOPE", "Analysis scope verdict"),
                value=_code(f"SCOPE-{str(verdict).upper()}", str(verdict).replace("_", " ")),
            )
        )
    for section, value, meaning in WITHHOLDABLE:
        note = (report.get(section) or {}).get("withheld")
        if note:
            out.append(
                hd.sr.QualitativeEvaluation(
                    name=_code(f"{value}-STATUS", f"{meaning}: assessment"),
                    value=_code(_NOT_ASSESSED, f"Not assessed ({str(note).partition(':')[0]})"),
                )
            )
    predominant = (report.get("pattern") or {}).get("predominant")
    if predominant:
        out.append(
            hd.sr.QualitativeEvaluation(
                name=_code("PATTERN-PREDOMINANT", "Predominant ATC pattern"),
                value=_code(f"PATTERN-{str(predominant).upper()}", str(predominant)),
            )
        )
    return out


def build_sr(
    report: dict[str, Any], source: pydicom.Dataset, series_number: int
) -> hd.sr.ComprehensiveSR:
    """Return the Comprehensive SR of the report, referencing the slide's level-0 instance."""
    version = str((report.get("provenance") or {}).get("package_version", "0"))
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name="atc-wsi", manufacturer_name="atc-wsi", model_name=version
        ),
    )
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=hd.UID(), identifier="ATC whole-slide analysis"
        ),
        measurements=report_measurements(report),
        qualitative_evaluations=report_evaluations(report),
    )
    content = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=_code("ATC-WSI", "ATC whole-slide image analysis"),
        imaging_measurements=[group],
        title=codes.DCM.ImagingMeasurementReport,
        referenced_images=[source],
    )
    return hd.sr.ComprehensiveSR(
        evidence=[source],
        content=content[0],
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="atc-wsi",
        is_complete=True,
        is_final=False,
        is_verified=False,
        series_description="atc-wsi report (decision support, not a diagnosis)",
    )
