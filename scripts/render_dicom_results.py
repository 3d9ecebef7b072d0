"""Draw a job's DICOM results on its slide, placed only from what the DICOM objects say.

Reads the slide's level-0 instance header and the result files (``<job>/dicom/*.dcm``), converts
the Segmentations' plane position and pixel spacing back to slide pixels and draws, on a
thumbnail: necrosis SEG (red, filled), pattern SEG (tile outlines), necrosis polygons from the
bulk annotations (black outline) and the mitoses / macrophages (points). If the placement were
wrong, the SEG necrosis would not sit under the annotation polygons. Usage::

    .venv/bin/python scripts/render_dicom_results.py SLIDE_FOLDER JOB_DIR --out docs/img/x.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import highdicom as hd
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from workers.dicom_results import load_source_image
from wsi import open_slide

COLOURS = {
    "Mitosis: Typical": "#1f77b4",
    "Mitosis: Atypical": "#ff7f0e",
    "Mitosis: Tripolar": "#d62728",
    "Macrophage": "#2ca02c",
}


def seg_extent_l0(seg: hd.seg.Segmentation, source: object) -> tuple[float, float, float, float]:
    """Return the SEG's total pixel matrix as level-0 (x0, x1, y1, y0) edges, from its header."""
    sfg = seg.SharedFunctionalGroupsSequence[0]
    spacing = [float(v) for v in sfg.PixelMeasuresSequence[0].PixelSpacing]
    orient = np.asarray([float(v) for v in seg.ImageOrientationSlide])
    pos = seg.TotalPixelMatrixOriginSequence[0]  # the centre of the SEG's first pixel
    first = np.asarray(
        [
            float(pos.XOffsetInSlideCoordinateSystem),
            float(pos.YOffsetInSlideCoordinateSystem),
            float(pos.get("ZOffsetInSlideCoordinateSystem", 0.0)),
        ]
    )
    # back to level-0 pixel indices of the slide (centres at integers):
    src_origin = source.TotalPixelMatrixOriginSequence[0]  # type: ignore[attr-defined]
    origin = np.asarray(
        [
            float(src_origin.XOffsetInSlideCoordinateSystem),
            float(src_origin.YOffsetInSlideCoordinateSystem),
            0.0,
        ]
    )
    src_spacing = [
        float(v)
        for v in source.SharedFunctionalGroupsSequence[0]  # type: ignore[attr-defined]
        .PixelMeasuresSequence[0]
        .PixelSpacing
    ]
    delta = first - origin
    col = float(delta @ orient[:3]) / src_spacing[1]  # level-0 column of the first pixel centre
    row = float(delta @ orient[3:]) / src_spacing[0]
    scale_x, scale_y = spacing[1] / src_spacing[1], spacing[0] / src_spacing[0]
    x0, y0 = col + 0.5 - scale_x / 2, row + 0.5 - scale_y / 2
    cols, rows = int(seg.TotalPixelMatrixColumns), int(seg.TotalPixelMatrixRows)
    return x0, x0 + cols * scale_x, y0 + rows * scale_y, y0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("slide", type=Path)
    ap.add_argument("job", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    source = load_source_image(args.slide)
    with open_slide(args.slide) as slide:  # read_level applies the slide's colour correction
        level = max(
            (i for i, (lw, _) in enumerate(slide.level_dimensions) if lw >= 1000), default=0
        )
        thumb = slide.read_level(level)
        w, h = slide.dimensions
    fig, ax = plt.subplots(figsize=(8, 8 * h / w), dpi=110)
    ax.imshow(thumb, extent=(0, w, h, 0))
    dicom = args.job / "dicom"
    necrosis = hd.seg.segread(dicom / "segmentation-necrosis.dcm")
    mask = necrosis.get_total_pixel_matrix(combine_segments=True) > 0
    ax.imshow(
        np.ma.masked_where(~mask, mask.astype(float)),
        extent=seg_extent_l0(necrosis, source),
        cmap="autumn",
        alpha=0.45,
        interpolation="nearest",
    )
    pattern = hd.seg.segread(dicom / "segmentation-pattern.dcm")
    labels = pattern.get_total_pixel_matrix(combine_segments=True)
    ax.imshow(
        np.ma.masked_where(labels == 0, labels.astype(float)),
        extent=seg_extent_l0(pattern, source),
        cmap="tab10",
        vmin=0,
        vmax=10,
        alpha=0.25,
        interpolation="nearest",
    )
    ann = hd.ann.annread(dicom / "annotations.dcm")
    for group in ann.get_annotation_groups():
        data = group.get_graphic_data(ann.annotation_coordinate_type)
        if group.label == "Necrosis":
            for ring in data:
                closed = np.vstack([ring, ring[:1]])
                ax.plot(closed[:, 0], closed[:, 1], color="black", linewidth=1.2)
            continue
        xy = np.vstack(data) if data else np.zeros((0, 2))
        colour = COLOURS.get(group.label, "white")
        ax.scatter(xy[:, 0], xy[:, 1], s=9, c=colour, label=f"{group.label} ({len(xy)})")
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.legend(loc="lower right", fontsize=7, framealpha=0.85)
    ax.set_title(
        "DICOM objects read back: ANN points and necrosis polygons (black),\n"
        "necrosis SEG (red, 4 µm), pattern SEG (tinted tiles, 224 µm)",
        fontsize=9,
    )
    ax.set_axis_off()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, bbox_inches="tight")
    print(args.out)


if __name__ == "__main__":
    main()
