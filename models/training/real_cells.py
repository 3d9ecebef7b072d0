"""Real labelled cells from ``../shared/data``: H&E nuclei (MoNuSAC, CoNSeP, NuCLS) and Ki67 IHC
(DeepLIIF, the Labelbox glioma photos), as images with point truth.

Every loader returns :class:`CellImage` values: the RGB image, its µm/px (assumed, stated per set
below), point truth as (x, y) pixel coordinates with one label per point, and the *group* a split
must keep together (the patient or source image; never split by crop).

Assumed µm/px (none of the sources states it per image):

* MoNuSAC: 0.25 (40× TCGA scans; median lymphocyte nucleus 273 px = 17 µm² at 0.25).
* CoNSeP: 0.25 (40×); patches of 256 px cut from 28 source images (group = source image).
* NuCLS (CellViT++ example): 0.25 (40×); 15 tiles, each its own group (the slide is not given).
* DeepLIIF Ki67: 0.25 (40×): median nucleus 430–680 px in the masks = 27–43 µm² at 0.25; the
  0.5 assumed before this module made every object four times too large in µm².
* Ki67 glioma photos: 0.10, from the median negative nucleus (3 910 px ≈ 40 µm² at 0.10).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from scipy import ndimage as ndi

from models.errors import ModelError

#: Default root of the real cell sets.
REAL_CELLS: Final[Path] = Path(__file__).resolve().parents[3] / "shared" / "data"

#: MoNuSAC organ from the TCGA tissue-source-site code (second field of the patient id).
MONUSAC_ORGANS: Final[dict[str, str]] = {
    "2Z": "kidney",
    "IZ": "kidney",
    "DW": "kidney",
    "MH": "kidney",
    "F9": "kidney",
    "A2": "breast",
    "G9": "prostate",
    "49": "lung",
    "50": "lung",
    "55": "lung",
    "73": "lung",
    "78": "lung",
    "MP": "lung",
}

#: Two folds of the MoNuSAC patients, macrophages balanced (66 / 73); kidney, lung and prostate
#: macrophages on both sides, breast (two patients, 6 macrophages) only in fold 0. A model
#: trained on one fold is scored on the other.
MONUSAC_FOLD: Final[dict[str, int]] = {
    "TCGA-2Z-A9JN": 0,
    "TCGA-G9-6356": 0,
    "TCGA-49-6743": 0,
    "TCGA-DW-7963": 0,
    "TCGA-A2-A04X": 0,
    "TCGA-55-7570": 0,
    "TCGA-78-7152": 0,
    "TCGA-50-6591": 0,
    "TCGA-A2-A0ES": 0,
    "TCGA-IZ-A6M9": 1,
    "TCGA-MP-A4T7": 1,
    "TCGA-55-7573": 1,
    "TCGA-F9-A8NY": 1,
    "TCGA-G9-6367": 1,
    "TCGA-2Z-A9JG": 1,
    "TCGA-DW-7838": 1,
    "TCGA-73-4662": 1,
    "TCGA-MH-A55W": 1,
}

_CONSEP_TYPES: Final[dict[int, str]] = {
    1: "other",
    2: "inflammatory",
    3: "epithelial",
    4: "spindle",
}
_NUCLS_TYPES: Final[dict[int, str]] = {
    0: "tumour",
    1: "stromal_or_macrophage",
    2: "lymphocyte",
    3: "other",
}


class RealDataError(ModelError):
    """A real labelled set is missing or does not parse."""


@dataclass(frozen=True)
class CellImage:
    """One real image with point truth.

    Attributes:
        source: set name (``monusac``, ``consep``, ``nucls``, ``deepliif``, ``ki67_glioma``).
        name: image name within the set.
        group: split unit (patient or source image).
        split: the source's own split or fold (``train``/``test``, ``fold0``/``fold1``).
        organ: tissue of origin.
        rgb: (H, W, 3) uint8.
        mpp: assumed µm per pixel.
        xy: (n, 2) float64 point centres, pixel (x, y).
        labels: (n,) class name per point.
    """

    source: str
    name: str
    group: str
    split: str
    organ: str
    rgb: NDArray[np.uint8]
    mpp: float
    xy: NDArray[np.float64]
    labels: NDArray[np.str_]

    def of(self, *classes: str) -> NDArray[np.float64]:
        """Return the (k, 2) points whose label is one of ``classes``."""
        return self.xy[np.isin(self.labels, classes)]


def _rgb(path: Path) -> NDArray[np.uint8]:
    if not path.is_file():
        raise RealDataError(f"{path}: image missing (is ../shared/data mounted?)")
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def _points(
    rows: Iterable[tuple[float, float, str]],
) -> tuple[NDArray[np.float64], NDArray[np.str_]]:
    r = list(rows)
    xy = np.array([[x, y] for x, y, _ in r], dtype=np.float64).reshape(-1, 2)
    return xy, np.array([c for _, _, c in r], dtype=np.str_)


def _points_table(table: Path, what: str) -> dict[str, list[tuple[float, float, str]]]:
    """Rows ``image,x,y,class,…`` of a derived points CSV, grouped by image file name (labels
    lower-cased)."""
    if not table.is_file():
        raise RealDataError(f"{table}: {what} points missing")
    by_image: dict[str, list[tuple[float, float, str]]] = {}
    with table.open(encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            by_image.setdefault(r["image"], []).append(
                (float(r["x"]), float(r["y"]), r["class"].lower())
            )
    return by_image


def monusac_patient(name: str) -> str:
    """Return the TCGA patient id (``TCGA-2Z-A9JG``) of a MoNuSAC image name."""
    return "-".join(name.split("-")[:3])


def load_monusac(root: Path | None = None) -> list[CellImage]:
    """MoNuSAC test images with their derived points (Macrophage, Lymphocyte, Neutrophil,
    Epithelial; lower-case labels). Group = patient; split = ``fold0``/``fold1``."""
    base = (root or REAL_CELLS) / "real" / "cells" / "monusac_test_colormask"
    by_image = _points_table(base / "points_derived_from_colormask.csv", "MoNuSAC")
    out = []
    for f in sorted((base / "MoNuSAC-mini-test" / "images").glob("*.jpg")):
        patient = monusac_patient(f.name)
        if patient not in MONUSAC_FOLD:
            raise RealDataError(f"{f}: patient {patient} has no fold in MONUSAC_FOLD")
        xy, labels = _points(by_image.get(f.name, []))
        out.append(
            CellImage(
                "monusac",
                f.stem,
                patient,
                f"fold{MONUSAC_FOLD[patient]}",
                MONUSAC_ORGANS[patient.split("-")[1]],
                _rgb(f),
                0.25,
                xy,
                labels,
            )
        )
    return out


def load_consep(root: Path | None = None, split: str = "test") -> list[CellImage]:
    """CoNSeP patches of one split (``train``/``test``) with typed centroids (other,
    inflammatory, epithelial, spindle). Group = source image (``test_7`` of ``test_7_013``)."""
    from scipy.io import loadmat

    base = (root or REAL_CELLS) / "real" / "cells" / "consep_patches"
    out = []
    mats = sorted((base / "type_mat" / split).glob("*.mat"))
    if not mats:
        raise RealDataError(f"{base / 'type_mat' / split}: no CoNSeP .mat files")
    for m in mats:
        d = loadmat(m)
        types = np.asarray(d["inst_type"]).ravel().astype(int)
        cen = np.asarray(d["inst_centroid"], dtype=np.float64).reshape(-1, 2)
        labels = np.array([_CONSEP_TYPES.get(t, "other") for t in types], dtype=np.str_)
        out.append(
            CellImage(
                "consep",
                m.stem,
                m.stem.rsplit("_", 1)[0],
                split,
                "colon",
                _rgb(base / "images" / split / f"{m.stem}.jpg"),
                0.25,
                cen,
                labels,
            )
        )
    return out


def load_nucls(root: Path | None = None, split: str = "test") -> list[CellImage]:
    """NuCLS tiles of one split with typed points (tumour, stromal_or_macrophage, lymphocyte,
    other). Group = tile."""
    base = (root or REAL_CELLS) / "real" / "cells" / "nucls_cellvitpp_example" / split
    files = sorted((base / "labels").glob("*.csv"))
    if not files:
        raise RealDataError(f"{base / 'labels'}: no NuCLS label files")
    out = []
    for f in files:
        a = np.loadtxt(f, delimiter=",", ndmin=2)
        labels = np.array([_NUCLS_TYPES[int(c)] for c in a[:, 2]], dtype=np.str_)
        out.append(
            CellImage(
                "nucls",
                f.stem,
                f"nucls/{f.stem}",
                split,
                "breast",
                _rgb(base / "images" / f"{f.stem}.png"),
                0.25,
                a[:, :2].astype(np.float64),
                labels,
            )
        )
    return out


def load_deepliif(root: Path | None = None) -> list[CellImage]:
    """DeepLIIF Ki67 tiles: one point per red (positive) and blue (negative) nucleus of the
    ground-truth mask, at the component's centroid. Group = tile."""
    base = (root or REAL_CELLS) / "ihc" / "deepliif"
    files = sorted((base / "ihc").glob("*.png"))
    if not files:
        raise RealDataError(f"{base / 'ihc'}: no DeepLIIF tiles")
    out = []
    for f in files:
        gt = _rgb(base / "groundtruth" / f.name).astype(np.int16)
        red = (gt[..., 0] > 150) & (gt[..., 1] < 100) & (gt[..., 2] < 100)
        blue = (gt[..., 2] > 150) & (gt[..., 0] < 100) & (gt[..., 1] < 100)
        rows: list[tuple[float, float, str]] = []
        for mask, name in ((red, "positive"), (blue, "negative")):
            lab, n = ndi.label(mask)
            for r, c in ndi.center_of_mass(mask, lab, range(1, n + 1)):
                rows.append((float(c), float(r), name))
        xy, labels = _points(rows)
        out.append(
            CellImage(
                "deepliif", f.stem, f"deepliif/{f.stem}", "all", "mixed", _rgb(f), 0.25, xy, labels
            )
        )
    return out


def load_ki67_glioma(root: Path | None = None) -> list[CellImage]:
    """Ki67 glioma photos with the polygon-derived points (positive / negative). Group = the
    patient number before the block id (``1309620`` of ``1309620 -A2-27``)."""
    base = (root or REAL_CELLS) / "real" / "cells" / "ki67_glioma_labelbox"
    by_image = _points_table(base / "points_derived_from_polygons.csv", "Ki67 glioma")
    out = []
    for d in sorted(p for p in (base / "References").iterdir() if p.is_dir()):
        xy, labels = _points(by_image.get(f"{d.name}.jpg", []))
        out.append(
            CellImage(
                "ki67_glioma",
                d.name,
                d.name.split()[0],
                "all",
                "brain",
                _rgb(d / "original.jpg"),
                0.10,
                xy,
                labels,
            )
        )
    return out


def resample(img: CellImage, mpp: float) -> CellImage:
    """Return ``img`` resampled to ``mpp`` µm/px (area-averaged when shrinking), points scaled."""
    f = img.mpp / mpp
    if abs(f - 1) < 1e-6:
        return img
    h, w = img.rgb.shape[:2]
    size = (max(1, round(w * f)), max(1, round(h * f)))
    with Image.fromarray(img.rgb) as im:
        method = Image.Resampling.BOX if f < 1 else Image.Resampling.BILINEAR
        rgb = np.asarray(im.resize(size, method), dtype=np.uint8)
    # pixel centres: x_new + 0.5 = (x_old + 0.5) · f
    return replace(img, rgb=rgb, mpp=mpp, xy=(img.xy + 0.5) * f - 0.5)
