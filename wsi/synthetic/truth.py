"""Ground truth of a synthetic slide: writing ``truth.json``/``truth.geojson``/``truth.npz`` and
reading it back with ``load_truth``.

Areas come from the rasterised label map; object counts, densities and the 2 mm² mitosis hotspot
from the objects the renderer drew. All coordinates are level-0 pixels.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from numpy.typing import NDArray
from scipy.spatial import cKDTree

from wsi.io import atomic_write_bytes, atomic_write_json
from wsi.synthetic import _prims as P
from wsi.synthetic._geojson import point_features, region_features
from wsi.synthetic.classes import FIGURE_CLASSES, PATTERN_CLASSES, TUMOUR_PATTERNS

F64 = NDArray[np.float64]
HOTSPOT_MM2 = 2.0


@dataclass(frozen=True)
class SlideTruth:
    """What a synthetic slide really contains (level-0 pixel coordinates).

    Attributes:
        label_map: (rows, cols) uint8 PATTERN_CLASSES value per pixel.
        label_l0_per_px: level-0 pixels per label-map pixel.
        mpp: level-0 µm per pixel.
        mitoses: (N, 2) x, y of every mitotic figure.
        mitosis_classes: per mitosis ``"mitosis_typical"`` or ``"mitosis_tripolar"``.
        mitosis_kinds: per mitosis its form (``typical_metaphase``, ``tripolar_spokes`` …).
        lookalikes: (L, 2) x, y of every planted look-alike.
        lookalike_kinds: per look-alike its LOOKALIKE_KINDS name.
        macrophages: (M, 2) x, y of every macrophage.
        macrophage_kinds: per macrophage ``"macrophage_foamy"`` or ``"macrophage_ramified"``.
        nucleated: (K, 2) x, y of every nucleated cell (macrophages, mitoses included).
        nucleated_is_macrophage: (K,) bool.
        info: the parsed ``truth.json``.
    """

    label_map: NDArray[np.uint8]
    label_l0_per_px: float
    mpp: float
    mitoses: F64
    mitosis_classes: tuple[str, ...]
    mitosis_kinds: tuple[str, ...]
    lookalikes: F64
    lookalike_kinds: tuple[str, ...]
    macrophages: F64
    macrophage_kinds: tuple[str, ...]
    nucleated: F64
    nucleated_is_macrophage: NDArray[np.bool_]
    info: dict[str, Any]

    def label_at(self, l0_xy: NDArray[np.float64]) -> NDArray[np.uint8]:
        """PATTERN_CLASSES value of the label-map pixel under each level-0 (x, y)."""
        pts = np.asarray(l0_xy, dtype=np.float64).reshape(-1, 2)
        lab, f = self.label_map, self.label_l0_per_px
        r = np.clip((pts[:, 1] // f).astype(int), 0, lab.shape[0] - 1)
        c = np.clip((pts[:, 0] // f).astype(int), 0, lab.shape[1] - 1)
        return np.asarray(lab[r, c], dtype=np.uint8)

    def in_viable_tumour(self, l0_xy: NDArray[np.float64]) -> NDArray[np.bool_]:
        """Whether each level-0 (x, y) lies on a viable-tumour pixel of the label map."""
        tumour = [PATTERN_CLASSES.index(k) for k in TUMOUR_PATTERNS]
        return np.asarray(np.isin(self.label_at(l0_xy), tumour), dtype=bool)

    def on_artefact(self, l0_xy: NDArray[np.float64]) -> NDArray[np.bool_]:
        """Whether each level-0 (x, y) lies where the label map says background.

        Pen, folds, bubbles and out-of-focus patches are labelled background ("they must be
        excluded from analysis") while the figures drawn under them stay in the point lists; the
        cell evaluation treats those places as don't-care regions, for truth and predictions alike.
        """
        return np.asarray(self.label_at(l0_xy) == PATTERN_CLASSES.index("background"))

    def viable_tumour_mm2(self) -> float:
        """Viable-tumour area of the label map in mm²."""
        tumour = [PATTERN_CLASSES.index(k) for k in TUMOUR_PATTERNS]
        px_mm2 = (self.label_l0_per_px * self.mpp / 1000.0) ** 2
        return float(np.isin(self.label_map, tumour).sum()) * px_mm2

    def tumour_macrophage_density(self) -> float:
        """Macrophages on viable tumour per mm² of viable tumour (``truth.json``'s density counts
        every macrophage of the slide, non-tumour tissue included, over the same area)."""
        area = self.viable_tumour_mm2()
        return float(self.in_viable_tumour(self.macrophages).sum()) / area if area else 0.0


def _hotspot(mit: F64, width: int, height: int, mpp: float) -> dict[str, Any]:
    """Return the 2 mm² circle (level-0 px) holding the most mitoses, searched on a 20 µm grid."""
    radius = float(np.sqrt(HOTSPOT_MM2 / np.pi) * 1000.0 / mpp)
    if len(mit) == 0:
        return {
            "l0_center": [width / 2, height / 2],
            "l0_radius": radius,
            "area_mm2": HOTSPOT_MM2,
            "mitoses": 0,
        }
    step = 20.0 / mpp
    gx, gy = np.meshgrid(np.arange(0, width, step), np.arange(0, height, step))
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1)
    counts = np.asarray(cKDTree(mit).query_ball_point(grid, radius, return_length=True))
    ties = np.flatnonzero(counts == counts.max())
    # Among equally dense circles take the one nearest the centroid of the figures they share.
    inside = cKDTree(mit).query_ball_point(grid[ties[0]], radius)
    centroid = mit[inside].mean(axis=0)
    best = int(ties[np.argmin(np.hypot(*(grid[ties] - centroid).T))])
    return {
        "l0_center": [float(grid[best, 0]), float(grid[best, 1])],
        "l0_radius": radius,
        "area_mm2": HOTSPOT_MM2,
        "mitoses": int(counts[best]),
        "search_step_um": 20.0,
    }


def _counts(codes: NDArray[np.int64]) -> dict[str, int]:
    out = {name: int((codes == code).sum()) for code, name in P.KIND_NAMES.items()}
    out["mitosis_typical"] = int(np.isin(codes, P.TYPICAL_CODES).sum())
    out["mitosis_tripolar"] = int(np.isin(codes, P.TRIPOLAR_CODES).sum())
    out["mitosis"] = out["mitosis_typical"] + out["mitosis_tripolar"]
    out["macrophage"] = int(np.isin(codes, P.MACROPHAGE_CODES).sum())
    out["lookalike"] = int(np.isin(codes, list(P.LOOKALIKE_CODES)).sum())
    out["nucleated_cells"] = int((~np.isin(codes, P.NON_NUCLEATED)).sum())
    return out


def truth_summary(
    spec_dict: dict[str, Any],
    labels: NDArray[np.uint8],
    l0_per_px: int,
    points: F64,
    dims: list[tuple[int, int]],
) -> dict[str, Any]:
    """Return the ``truth.json`` content."""
    mpp = float(spec_dict["mpp"])
    px_mm2 = (l0_per_px * mpp / 1000.0) ** 2
    hist = np.bincount(labels.ravel(), minlength=len(PATTERN_CLASSES))
    areas = {c: float(hist[i] * px_mm2) for i, c in enumerate(PATTERN_CLASSES)}
    tissue = float(sum(v for k, v in areas.items() if k != "background"))
    viable = float(sum(areas[c] for c in TUMOUR_PATTERNS))
    codes = points[:, 2].astype(np.int64)
    counts = _counts(codes)
    dens_keys = (
        "mitosis",
        "mitosis_typical",
        "mitosis_tripolar",
        "macrophage",
        "nucleated_cells",
        *P.LOOKALIKE_CODES.values(),
    )
    dens = {k: (counts[k] / viable if viable > 0 else 0.0) for k in dens_keys}
    mit = points[np.isin(codes, (*P.TYPICAL_CODES, *P.TRIPOLAR_CODES)), :2]
    w, h = dims[0]
    return {
        "seed": spec_dict["seed"],
        "mpp": mpp,
        "spec": spec_dict,
        "level_dimensions": [list(d) for d in dims],
        "label_map": {
            "file": "labels.tiff",
            "l0_per_px": l0_per_px,
            "um_per_px": l0_per_px * mpp,
            "classes": list(PATTERN_CLASSES),
        },
        "areas_mm2": areas,
        "tissue_area_mm2": tissue,
        "viable_tumour_area_mm2": viable,
        "counts": counts,
        "densities_per_mm2_viable_tumour": dens,
        "mitoses_per_2mm2_viable_tumour": 2.0 * dens["mitosis"],
        "macrophage_fraction_of_nucleated": (
            counts["macrophage"] / counts["nucleated_cells"] if counts["nucleated_cells"] else 0.0
        ),
        "hotspot": _hotspot(mit, w, h, mpp),
        "point_kinds": {str(k): v for k, v in P.KIND_NAMES.items()},
    }


def write_truth(
    out: Path, spec: Any, labels: NDArray[np.uint8], points: F64, dims: list[tuple[int, int]]
) -> None:
    """Write ``truth.json``, ``truth.geojson`` and ``truth.npz`` into ``out``."""
    f = int(spec.label_factor)
    summary = truth_summary(spec.to_dict(), labels, f, points, dims)
    feats = region_features(labels, f) + point_features(points)
    atomic_write_json(
        out / "truth.geojson", {"type": "FeatureCollection", "features": feats}, indent=0
    )
    buf = io.BytesIO()
    np.savez_compressed(buf, points=points.astype(np.float32))
    atomic_write_bytes(out / "truth.npz", buf.getvalue())
    atomic_write_json(out / "truth.json", summary)


def load_truth(out_dir: str | Path) -> SlideTruth:
    """Read the ground truth written by ``generate_slide``.

    Raises:
        FileNotFoundError: if ``out_dir`` lacks truth.json, truth.npz or labels.tiff.
    """
    d = Path(out_dir)
    for name in ("truth.json", "truth.npz", "labels.tiff"):
        if not (d / name).is_file():
            raise FileNotFoundError(
                f"{d / name} not found; generate the slide with `atc-wsi synth --out {d}`"
            )
    info = json.loads((d / "truth.json").read_text(encoding="utf-8"))
    with np.load(d / "truth.npz") as z:
        pts = z["points"].astype(np.float64)
    codes = pts[:, 2].astype(np.int64)
    label_map = tifffile.imread(d / "labels.tiff", key=0)
    mit = np.isin(codes, (*P.TYPICAL_CODES, *P.TRIPOLAR_CODES))
    la = np.isin(codes, list(P.LOOKALIKE_CODES))
    mac = np.isin(codes, P.MACROPHAGE_CODES)
    nuc = ~np.isin(codes, P.NON_NUCLEATED)
    return SlideTruth(
        label_map=np.asarray(label_map, np.uint8),
        label_l0_per_px=float(info["label_map"]["l0_per_px"]),
        mpp=float(info["mpp"]),
        mitoses=pts[mit, :2],
        mitosis_classes=tuple(FIGURE_CLASSES[c] for c in P.mitosis_class(codes[mit])),
        mitosis_kinds=tuple(P.KIND_NAMES[int(c)] for c in codes[mit]),
        lookalikes=pts[la, :2],
        lookalike_kinds=tuple(P.LOOKALIKE_CODES[int(c)] for c in codes[la]),
        macrophages=pts[mac, :2],
        macrophage_kinds=tuple(P.KIND_NAMES[int(c)] for c in codes[mac]),
        nucleated=pts[nuc, :2],
        nucleated_is_macrophage=mac[nuc],
        info=info,
    )
