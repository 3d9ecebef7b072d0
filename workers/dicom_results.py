"""DICOM results of one analysed DICOM slide, written with highdicom beside the other outputs.

Three kinds of object, each in its own new series of the source slide's study, on the slide's
Frame of Reference, so a DICOMweb viewer overlays them on the slide:

* ``annotations.dcm``: Microscopy Bulk Simple Annotations: one group per mitosis class
  (typical / atypical / tripolar), macrophages (points, with the detector's score), necrosis
  (polygons, with their area in µm²);
* ``segmentation-pattern.dcm`` and ``segmentation-necrosis.dcm``: binary Segmentations of the
  pattern label map (one map pixel per pattern tile, 224 µm) and of the necrosis mask the report's
  area is counted on (4 µm), at the maps' own resolution (see
  ``docs/dicom.md``: at level 0 each value would repeat 256–800,000 times);
* ``report-sr.dcm``: the report's numbers as a Comprehensive SR (``workers.dicom_sr``).

Everything is in level-0 pixels of the slide's Total Pixel Matrix; codes not in SNOMED CT or DCM
use the local scheme ``99ATC``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pydicom.errors
from numpy.typing import NDArray
from pydicom.sr.codedict import codes

from workers.dicom_sr import build_sr
from wsi.io import atomic_write
from wsi.results import PointSet, RasterMap, SlideOutputs
from wsi.slide import resolve_slide_file
from wsi.taxonomy import MITOSIS_DISPLAY, PATTERN_CLASSES, PATTERN_DISPLAY

MANUFACTURER = "atc-wsi"
WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"
#: Local coding scheme of classes that SNOMED CT / DCM do not name.
LOCAL_SCHEME = "99ATC"
#: Series numbers of the result series (the slide's own are usually 1…).
SERIES_NUMBERS = {"annotations": 901, "segmentation-pattern": 902, "segmentation-necrosis": 903}
SR_SERIES_NUMBER = 904
#: Type 2 patient/study attributes the result objects copy from the slide.
_TYPE2_COPIED = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "AccessionNumber",
)


def local_code(value: str, meaning: str) -> hd.sr.CodedConcept:
    """Return a code of the local ``99ATC`` scheme."""
    return hd.sr.CodedConcept(value=value, scheme_designator=LOCAL_SCHEME, meaning=meaning)


MITOSIS_CODES = {
    display: local_code(name.upper().replace("_", "-"), display)
    for name, display in MITOSIS_DISPLAY.items()
}
MACROPHAGE_CODE = local_code("MACROPHAGE", "Macrophage")


def load_source_image(slide: Path) -> pydicom.Dataset:
    """Return the level-0 (largest) VL Whole Slide Microscopy instance's header of a series.

    Args:
        slide: the series folder or any instance of it (then only instances of its series in
            the same folder count, as OpenSlide does).
    """
    folder = slide if slide.is_dir() else slide.parent
    series = None
    if not slide.is_dir():
        series = pydicom.dcmread(slide, stop_before_pixels=True).get("SeriesInstanceUID")
    best: pydicom.Dataset | None = None
    for f in sorted(folder.glob("*.dcm")):
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except pydicom.errors.InvalidDicomError:
            continue
        if ds.get("SOPClassUID") != WSI_SOP_CLASS or "VOLUME" not in ds.get("ImageType", []):
            continue
        if series is not None and ds.get("SeriesInstanceUID") != series:
            continue
        if best is None or int(ds.TotalPixelMatrixColumns) > int(best.TotalPixelMatrixColumns):
            best = ds
    if best is None:
        raise ValueError(f"{folder}: no VL Whole Slide Microscopy VOLUME instance")
    for keyword in _TYPE2_COPIED:  # scanners omit some; the results carry them empty (type 2)
        if keyword not in best:
            setattr(best, keyword, "")
    if "TotalPixelMatrixOriginSequence" not in best:  # some exports omit it: the slide's corner
        origin = pydicom.Dataset()
        origin.XOffsetInSlideCoordinateSystem = 0.0
        origin.YOffsetInSlideCoordinateSystem = 0.0
        best.TotalPixelMatrixOriginSequence = [origin]
    if "ImageOrientationSlide" not in best:
        best.ImageOrientationSlide = [0, -1, 0, -1, 0, 0]
    return best


def algorithm(report: dict[str, Any], model_key: str) -> hd.AlgorithmIdentificationSequence:
    """Identify the model that produced a result (name and version from the report)."""
    models = {m["name"]: m for m in report.get("provenance", {}).get("models", [])}
    name = str(report.get(model_key, {}).get("model", model_key))
    version = str(models.get(name, {}).get("version", "unknown"))
    return hd.AlgorithmIdentificationSequence(
        name=name, version=version, family=codes.DCM.ArtificialIntelligence
    )


def _point_group(
    n: int, points: PointSet, code: hd.sr.CodedConcept, alg: hd.AlgorithmIdentificationSequence
) -> hd.ann.AnnotationGroup:
    score = hd.ann.Measurements(
        name=codes.DCM.Probability,
        values=np.asarray(points.scores, dtype=np.float32),
        unit=codes.UCUM.NoUnits,
    )
    return hd.ann.AnnotationGroup(
        number=n,
        uid=hd.UID(),
        label=points.name,
        annotated_property_category=codes.SCT.Cell,
        annotated_property_type=code,
        graphic_type=hd.ann.GraphicTypeValues.POINT,
        graphic_data=[np.asarray(xy, dtype=np.float64).reshape(1, 2) for xy in points.l0_xy],
        algorithm_type=hd.ann.AnnotationGroupGenerationTypeValues.AUTOMATIC,
        algorithm_identification=alg,
        measurements=[score],
    )


def _ring_area_px(ring: NDArray[np.float64]) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def _necrosis_group(
    n: int, outputs: SlideOutputs, alg: hd.AlgorithmIdentificationSequence
) -> hd.ann.AnnotationGroup | None:
    rings, areas_um2 = [], []
    for pset in outputs.polygons:
        if pset.name.lower() != "necrosis":
            continue
        for poly in pset.polygons:
            ring = np.asarray(poly[0], dtype=np.float64)
            if len(ring) > 1 and np.array_equal(ring[0], ring[-1]):
                ring = ring[:-1]  # DICOM polygons are implicitly closed
            if len(ring) < 3:
                continue
            rings.append(ring)
            holes = sum(_ring_area_px(np.asarray(h)) for h in poly[1:])
            areas_um2.append((_ring_area_px(ring) - holes) * outputs.mpp**2)
    if not rings:
        return None
    area = hd.ann.Measurements(
        name=codes.SCT.Area,
        values=np.asarray(areas_um2, dtype=np.float32),
        unit=codes.UCUM.SquareMicrometer,
    )
    return hd.ann.AnnotationGroup(
        number=n,
        uid=hd.UID(),
        label="Necrosis",
        annotated_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        annotated_property_type=codes.SCT.Necrosis,
        graphic_type=hd.ann.GraphicTypeValues.POLYGON,
        graphic_data=rings,
        algorithm_type=hd.ann.AnnotationGroupGenerationTypeValues.AUTOMATIC,
        algorithm_identification=alg,
        measurements=[area],
        description="exterior rings; the area measurement subtracts holes",
    )


def build_annotations(
    outputs: SlideOutputs, report: dict[str, Any], source: pydicom.Dataset
) -> hd.ann.MicroscopyBulkSimpleAnnotations | None:
    """Return the bulk annotations (mitoses by class, macrophages, necrosis), or None if empty."""
    groups: list[hd.ann.AnnotationGroup] = []
    for points in outputs.points:
        if len(points.l0_xy) == 0:
            continue
        if points.name in MITOSIS_CODES:
            code, alg = MITOSIS_CODES[points.name], algorithm(report, "mitosis")
        elif points.name == "Macrophage":
            code, alg = MACROPHAGE_CODE, algorithm(report, "tam")
        else:
            continue
        groups.append(_point_group(len(groups) + 1, points, code, alg))
    necrosis = _necrosis_group(len(groups) + 1, outputs, algorithm(report, "necrosis"))
    if necrosis is not None:
        groups.append(necrosis)
    if not groups:
        return None
    return hd.ann.MicroscopyBulkSimpleAnnotations(
        source_images=[source],
        annotation_coordinate_type=hd.ann.AnnotationCoordinateTypeValues.SCOORD,
        annotation_groups=groups,
        series_instance_uid=hd.UID(),
        series_number=SERIES_NUMBERS["annotations"],
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name="atc-wsi analysis",
        software_versions=str(report.get("provenance", {}).get("package_version", "0")),
        device_serial_number="0",
        content_description="ATC mitoses, macrophages, necrosis",
        content_label="ATC_CELLS",
    )


def _slide_geometry(source: pydicom.Dataset) -> tuple[tuple[float, float, float], list[float]]:
    """Return the Total Pixel Matrix origin (mm, slide coordinates) and the image orientation."""
    origin = source.TotalPixelMatrixOriginSequence[0]
    xyz = (
        float(origin.get("XOffsetInSlideCoordinateSystem", 0.0)),
        float(origin.get("YOffsetInSlideCoordinateSystem", 0.0)),
        float(origin.get("ZOffsetInSlideCoordinateSystem", 0.0)),
    )
    orient = [float(v) for v in source.ImageOrientationSlide]
    return xyz, orient


def _l0_spacing_mm(source: pydicom.Dataset) -> tuple[float, float]:
    pm = source.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    return float(pm.PixelSpacing[0]), float(pm.PixelSpacing[1])


def _tile_size(shape: tuple[int, ...]) -> tuple[int, int]:
    """Frames no larger than the map (rounded up to 16 px, at most 512): a 7 × 5 pattern map is
    one small frame per segment, not one 500 × 500 frame of the slide's own tiling."""
    return (min(512, -(-shape[0] // 16) * 16), min(512, -(-shape[1] // 16) * 16))


def build_segmentation(
    labels: NDArray[np.uint8],
    l0_per_px: float,
    l0_origin: tuple[float, float],
    segments: list[tuple[str, hd.sr.CodedConcept, hd.sr.CodedConcept]],
    source: pydicom.Dataset,
    alg: hd.AlgorithmIdentificationSequence,
    name: str,
) -> hd.seg.Segmentation:
    """Return a binary Segmentation of a coarse label map placed on the slide.

    Args:
        labels: (rows, cols) label map, 0 = none, k = ``segments[k-1]``.
        l0_per_px: level-0 pixels per map pixel.
        l0_origin: level-0 (x, y) of the map's top-left corner.
        segments: (label, category, type) per segment number.
        source: the slide's level-0 instance.
        alg: the model that made the map.
        name: ``segmentation-pattern`` or ``segmentation-necrosis``.
    """
    origin_mm, orient = _slide_geometry(source)
    row_mm, col_mm = _l0_spacing_mm(source)
    spacing = (row_mm * l0_per_px, col_mm * l0_per_px)
    # Slide position (mm) of the map's top-left pixel centre: level-0 pixel indices have their
    # centres at integers, so that centre lies at l0_origin + l0_per_px / 2 - 0.5.
    col = l0_origin[0] + l0_per_px / 2 - 0.5
    row = l0_origin[1] + l0_per_px / 2 - 0.5
    row_dir, col_dir = np.asarray(orient[:3]), np.asarray(orient[3:])
    position = np.asarray(origin_mm) + col * col_mm * row_dir + row * row_mm * col_dir
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=i + 1,
            segment_label=label,
            segmented_property_category=category,
            segmented_property_type=kind,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=alg,
        )
        for i, (label, category, kind) in enumerate(segments)
    ]
    return hd.seg.Segmentation(
        source_images=[source],
        pixel_array=labels[np.newaxis],
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=SERIES_NUMBERS[name],
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name="atc-wsi analysis",
        software_versions="1",
        device_serial_number="0",
        pixel_measures=hd.PixelMeasuresSequence(
            pixel_spacing=spacing,
            slice_thickness=float(
                source.SharedFunctionalGroupsSequence[0]
                .PixelMeasuresSequence[0]
                .get("SliceThickness", 0.001)
                or 0.001
            ),
        ),
        plane_orientation=hd.PlaneOrientationSequence(
            coordinate_system="SLIDE", image_orientation=orient
        ),
        plane_positions=[
            hd.PlanePositionSequence(
                coordinate_system="SLIDE",
                image_position=tuple(float(v) for v in position),
                pixel_matrix_position=(1, 1),
            )
        ],
        tile_pixel_array=True,
        tile_size=_tile_size(labels.shape),
        omit_empty_frames=False,
        content_label=name.upper().replace("-", "_")[:16],
    )


def pattern_labels(maps: list[RasterMap]) -> tuple[NDArray[np.uint8], RasterMap] | None:
    """Return the pattern label map and a map to place it: each tile's arg-max class, the rule
    ``report.json`` counts tiles by (1 + class index without background; 0 = glass or no tile).

    The background probability is not a map of its own: it is what the softmax leaves
    (1 − the sum of the other classes).
    """
    classes = [c for c in PATTERN_CLASSES if c != "background"]
    by_name = {m.name: m for m in maps}
    stack = [by_name.get(f"pattern_{c}") for c in classes]
    present = [m for m in stack if m is not None]
    if len(present) != len(classes):
        return None
    raw = np.stack([m.values for m in present])
    valid = np.isfinite(raw).all(axis=0)  # NaN: no tile there
    probs = np.nan_to_num(raw, nan=0.0)
    background = 1.0 - probs.sum(axis=0, keepdims=True)
    labels = np.argmax(np.concatenate([background, probs]), axis=0).astype(np.uint8)
    labels[~valid] = 0
    return labels, present[0]


#: The reported necrosis mask (True = necrosis) and the level-0 pixels per mask pixel.
NecrosisMask = tuple[NDArray[np.bool_], float]


def build_objects(
    outputs: SlideOutputs,
    report: dict[str, Any],
    slide: Path,
    necrosis: NecrosisMask | None = None,
) -> dict[str, pydicom.Dataset]:
    """Return the result objects by file stem (annotations, segmentation-*, report-sr).

    ``necrosis`` is the mask the report's necrosis area is counted on (gated by the pattern
    map, specks included); without it no necrosis Segmentation is written.
    """
    source = load_source_image(slide)
    objects: dict[str, pydicom.Dataset] = {}
    ann = build_annotations(outputs, report, source)
    if ann is not None:
        objects["annotations"] = ann
    pattern = pattern_labels(outputs.maps)
    if pattern is not None:
        labels, ref = pattern
        segs = [
            (PATTERN_DISPLAY[c], codes.SCT.Tissue, local_code(c.upper(), PATTERN_DISPLAY[c]))
            for c in PATTERN_CLASSES
            if c != "background"
        ]
        objects["segmentation-pattern"] = build_segmentation(
            labels,
            ref.l0_per_px,
            ref.l0_origin,
            segs,
            source,
            algorithm(report, "pattern"),
            "segmentation-pattern",
        )
    if necrosis is not None:
        mask, l0_per_px = necrosis
        objects["segmentation-necrosis"] = build_segmentation(
            mask.astype(np.uint8),
            l0_per_px,
            (0.0, 0.0),
            [("Necrosis", codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Necrosis)],
            source,
            algorithm(report, "necrosis"),
            "segmentation-necrosis",
        )
    objects["report-sr"] = build_sr(report, source, SR_SERIES_NUMBER)
    return objects


def write_dicom_results(
    outputs: SlideOutputs,
    report: dict[str, Any],
    slide: Path,
    out_dir: Path,
    necrosis: NecrosisMask | None = None,
) -> list[Path]:
    """Write the DICOM result objects of a DICOM slide into ``out_dir`` (each file atomically).

    Args:
        outputs: the analysis outputs.
        report: the report (as written to report.json).
        slide: the slide's series folder or any of its instances.
        out_dir: destination folder, e.g. ``<job>/dicom``.
        necrosis: the reported necrosis mask and its level-0 pixels per mask pixel.

    Returns:
        The written ``.dcm`` files.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, ds in build_objects(outputs, report, resolve_slide_file(slide), necrosis).items():
        path = out_dir / f"{stem}.dcm"
        with atomic_write(path, "wb") as fh:
            ds.save_as(fh, enforce_file_format=True)
        written.append(path)
    return written
