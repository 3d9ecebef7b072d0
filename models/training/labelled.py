"""Labelled image sets as labs and public data sets ship them: class folders or a CSV.

One reader serves every crop and patch evaluation (``atc-wsi evaluate``) and the real-data
training loaders: a folder whose images sit in one sub-folder per class (``atypical/``,
``Normal/`` …), or a CSV with ``file`` and ``label`` columns (paths relative to the CSV), optionally
with a group column (slide, patient) so that splits and confidence intervals respect it. Raw
labels are mapped to a task's canonical classes through synonyms plus an optional user map; an
unknown label is an error that lists the known ones.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from models.errors import LabelError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
#: Column names tried, in order, for the group (slide / patient / source image) of a CSV row.
GROUP_COLUMNS = ("slide", "patient", "group", "source", "image")


@dataclass(frozen=True)
class LabelledImages:
    """Image files with their raw labels and groups.

    Attributes:
        files: image paths.
        labels: raw label of each file, as the set writes it.
        groups: slide / patient / source of each file (the file's own name when unknown).
        source: the folder or CSV read.
    """

    files: tuple[Path, ...]
    labels: tuple[str, ...]
    groups: tuple[str, ...]
    source: Path

    def __len__(self) -> int:
        return len(self.files)

    def subset(self, keep: Sequence[int] | NDArray[np.int64]) -> LabelledImages:
        """Return the items at indices ``keep``."""
        idx = [int(i) for i in keep]
        return LabelledImages(
            tuple(self.files[i] for i in idx),
            tuple(self.labels[i] for i in idx),
            tuple(self.groups[i] for i in idx),
            self.source,
        )


def _read_csv(path: Path) -> LabelledImages:
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "file" not in rows[0] or "label" not in rows[0]:
        raise LabelError(f"{path}: a labelled CSV needs 'file' and 'label' columns")
    group_col = next((c for c in GROUP_COLUMNS if c in rows[0]), None)
    files, labels, groups = [], [], []
    for i, row in enumerate(rows, start=2):
        f = (path.parent / row["file"]).resolve()
        if not f.is_file():
            raise LabelError(f"{path}:{i}: image {row['file']!r} not found (paths are relative)")
        files.append(f)
        labels.append(row["label"].strip())
        groups.append(row[group_col].strip() if group_col and row[group_col] else f.name)
    return LabelledImages(tuple(files), tuple(labels), tuple(groups), path)


def _labelled_csvs(folder: Path) -> list[Path]:
    out = []
    for p in sorted(folder.glob("*.csv")):
        with p.open(encoding="utf-8", newline="") as fh:
            header = next(csv.reader(fh), [])
        if "file" in header and "label" in header:
            out.append(p)
    return out


def read_labelled(source: str | Path) -> LabelledImages:
    """Read a labelled set from a CSV file or a folder.

    A folder with exactly one CSV holding ``file`` and ``label`` columns is read through that CSV
    (it can carry the slide of each image); otherwise every image below the folder is labelled by
    the name of the folder that holds it.

    Raises:
        LabelError: nothing to read, several candidate CSVs, missing images or columns.
    """
    src = Path(source)
    if src.is_file():
        return _read_csv(src)
    if not src.is_dir():
        raise LabelError(f"{src}: no such file or folder")
    csvs = _labelled_csvs(src)
    if len(csvs) == 1:
        return _read_csv(csvs[0])
    if len(csvs) > 1:
        names = ", ".join(p.name for p in csvs)
        raise LabelError(f"{src}: several labelled CSVs ({names}); pass one of them")
    files = sorted(
        p for p in src.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.parent != src
    )
    if not files:
        raise LabelError(f"{src}: no images in class folders and no CSV with file,label columns")
    return LabelledImages(
        tuple(files), tuple(p.parent.name for p in files), tuple(p.name for p in files), src
    )


def load_label_map(path: str | Path | None) -> dict[str, str]:
    """Read a user's raw-label → class map (YAML/JSON object or two-column CSV); {} for None."""
    if path is None:
        return {}
    from wsi.annotations import read_name_map
    from wsi.errors import AnnotationError

    try:
        data = read_name_map(path)
    except AnnotationError as exc:
        raise LabelError(f"{path}: label map: {exc.reason}") from None
    return {k.strip().lower(): v for k, v in data.items()}


def map_labels(
    raw: Sequence[str],
    classes: Sequence[str],
    synonyms: Mapping[str, str],
    user_map: Mapping[str, str] | None = None,
) -> NDArray[np.int64]:
    """Map raw labels to indices of ``classes`` (case-insensitive; user map before synonyms).

    Raises:
        LabelError: a label neither a class, a synonym nor in the user map (all listed).
    """
    table = {c.lower(): c for c in classes}
    table.update({k.lower(): v for k, v in synonyms.items()})
    table.update({k.lower(): v for k, v in (user_map or {}).items()})
    out = np.empty(len(raw), dtype=np.int64)
    unknown = set()
    for i, r in enumerate(raw):
        name = table.get(r.strip().lower())
        if name is None or name not in classes:
            unknown.add(r)
            continue
        out[i] = classes.index(name)
    if unknown:
        known = sorted(set(table) - {""})
        raise LabelError(
            f"unknown label(s) {', '.join(repr(u) for u in sorted(unknown))}; known: "
            f"{', '.join(known)}; pass --label-map FILE (JSON/YAML raw label → class) for others"
        )
    return out


def load_rgb(path: Path, *, scale: float = 1.0) -> NDArray[np.uint8]:
    """Read an image as (H, W, 3) uint8 RGB, resized by ``scale`` (bilinear when not 1).

    Raises:
        LabelError: the file is not a readable image.
    """
    try:
        with Image.open(path) as im:
            img = im.convert("RGB")
            if abs(scale - 1.0) > 1e-3:
                w, h = img.size
                size = (max(1, round(w * scale)), max(1, round(h * scale)))
                img = img.resize(size, Image.Resampling.BILINEAR)
            return np.asarray(img, dtype=np.uint8)
    except (OSError, ValueError) as exc:
        raise LabelError(f"{path}: not a readable image ({exc})") from None


def centre_crop(img: NDArray[np.uint8], size: int) -> NDArray[np.uint8]:
    """Centre ``size`` × ``size`` window of ``img``, white where the image is smaller."""
    h, w = img.shape[:2]
    out = np.full((size, size, 3), 255, dtype=np.uint8)
    r0, c0 = (h - size) // 2, (w - size) // 2
    sr, sc = max(r0, 0), max(c0, 0)
    dr, dc = max(-r0, 0), max(-c0, 0)
    hh, ww = min(size - dr, h - sr), min(size - dc, w - sc)
    out[dr : dr + hh, dc : dc + ww] = img[sr : sr + hh, sc : sc + ww]
    return out
