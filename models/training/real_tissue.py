"""Real labelled H&E tissue patches (``../shared/data/real/tissue``) for training and validation.

No labelled anaplastic thyroid carcinoma is public, so each pattern class has a real proxy:

| class | proxy (source folder) |
|---|---|
| spindle | leiomyosarcoma and synovial sarcoma tiles (``sarcoma_sts_foersch``) |
| pleomorphic | undifferentiated pleomorphic sarcoma tiles (``sarcoma_sts_foersch``) |
| squamoid | oral squamous cell carcinoma, 400× photographs (``oral_oscc_vs_normal_224``) |
| necrosis | non-viable (necrotic) osteosarcoma (``osteosarcoma_ut_atlan``) |
| non_tumour | normal oral mucosa; non-tumour osteosarcoma tiles (bone, marrow, cartilage); |
| | benign thyroid and the non-tumour patches of carcinoma slides (``thyhister_thyroid``) |
| ``tumour`` (any pattern) | viable osteosarcoma and papillary thyroid carcinoma |

Viable osteosarcoma and papillary thyroid carcinoma are tumour but none of the three ATC patterns:
they carry the label :data:`TUMOUR_ANY`, trained with a set-valued target ("one of the tumour
patterns", :func:`models.training.real_mix.set_loss`) and scored only in the tumour-vs-non-tumour
figures, never in the pattern macro-F1.

None of the sets states a pixel size except the osteosarcoma one (10×, about 1 µm/px). The others
were estimated from red blood cells (7–8 µm across) and nuclei in the images, and are written
into :data:`SOURCES` (and from there into the model cards). Tiles are resampled to the model's
µm/px with bilinear interpolation, as ``wsi.tiling.TileReader`` does for slides.

Splits are by patient or slide (:func:`fold_of`): two folds, each holding one patient of every
sarcoma subtype, two of the four osteosarcoma patients and three of the six thyroid slides. The
oral set names no patient; its photographs are split by file name (a stable hash), which keeps a
photograph and its tiles together but cannot keep one patient's photographs together.
"""

from __future__ import annotations

import csv
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from models.training.data import PatchSet
from wsi.synthetic.classes import PATTERN_CLASSES

#: Where the shared real tissue sets live, beside the project root.
DEFAULT_ROOT = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real" / "tissue"

#: Label of "tumour, but none of the three patterns" (trained with a set-valued target).
TUMOUR_ANY = -1
#: Name of :data:`TUMOUR_ANY` in tables.
TUMOUR_ANY_NAME = "tumour"


class RealDataError(ValueError):
    """A real tissue set is missing or malformed (the message names the file)."""


@dataclass(frozen=True)
class RealSource:
    """One real tissue set.

    Attributes:
        name: folder name under the tissue root.
        mpp: µm/px of the images (stated or estimated).
        mpp_basis: how ``mpp`` was obtained.
        licence: as the source states it.
        origin: upstream repository @ commit.
        proxies: source label → (project class or ``"tumour"``, what it stands for).
    """

    name: str
    mpp: float
    mpp_basis: str
    licence: str
    origin: str
    proxies: dict[str, tuple[str, str]] = field(default_factory=dict)


SOURCES: dict[str, RealSource] = {
    s.name: s
    for s in (
        RealSource(
            "sarcoma_sts_foersch",
            0.5,
            "estimated: red blood cells 14–16 px across (7.5 µm), lymphocytes about 14 px; 20×",
            "none stated",
            "AGFoersch/DeepLearningSarcoma@5df1e10",
            {
                "LMS": ("spindle", "leiomyosarcoma (spindle-cell sarcoma): spindle pattern"),
                "SS": ("spindle", "synovial sarcoma (spindle-cell sarcoma): spindle pattern"),
                "UPS": (
                    "pleomorphic",
                    "undifferentiated pleomorphic sarcoma for pleomorphic giant cells",
                ),
            },
        ),
        RealSource(
            "oral_oscc_vs_normal_224",
            1.0,
            "estimated for the 400× photographs: red blood cells about 7 px, tumour nuclei "
            "10–12 px across after the uploader's resize to 224 px; the 100× photographs "
            "(about 4 µm/px) are too coarse for a 1 µm/px model and are not used",
            "repo Apache-2.0, data CC0",
            "atlan-antillia/EfficientNet-Histopathologic-Oral-Cancer@91e63ad",
            {
                "OSCC": ("squamoid", "oral squamous cell carcinoma for the squamoid pattern"),
                "Normal": ("non_tumour", "normal oral mucosa (benign squamous epithelium)"),
            },
        ),
        RealSource(
            "osteosarcoma_ut_atlan",
            1.0,
            "stated: 10× (TCIA Osteosarcoma-Tumor-Assessment), about 1 µm/px",
            "CC BY 3.0 (TCIA)",
            "atlan-antillia/EfficientNet-Osteosarcoma@8a52df8",
            {
                "Non-Viable-Tumor": ("necrosis", "necrotic (non-viable) osteosarcoma for necrosis"),
                "Viable": ("tumour", "viable osteosarcoma: tumour, none of the three patterns"),
                "Non-Tumor": ("non_tumour", "bone, marrow, cartilage and soft tissue"),
            },
        ),
        RealSource(
            "thyhister_thyroid",
            0.5,
            "estimated: red blood cells 13–16 px across (7.5 µm), follicular nuclei 14–16 px",
            "none stated",
            "beatttt/ThyHisTer@d0a8743",
            {
                "tumor": ("tumour", "papillary thyroid carcinoma: tumour, none of the patterns"),
                "normal": ("non_tumour", "benign thyroid (follicles, colloid, capsule, blood)"),
            },
        ),
    )
}

#: Patients / slides of fold 1 (everything else with a named group is fold 0).
_FOLD1_GROUPS = frozenset({"LMS_2", "SS_2", "UPS_2", "Case-4", "Case-48", "BN_1", "BN_31", "FTC_1"})


@dataclass(frozen=True)
class RealImage:
    """One labelled real image.

    Attributes:
        path: the image file.
        source: its :data:`SOURCES` key.
        source_label: the label as the source gives it.
        label: project class name, or ``"tumour"`` (:data:`TUMOUR_ANY`).
        group: patient or slide (the unit of splitting); the file name where none is known.
        mpp: µm/px of the image.
    """

    path: Path
    source: str
    source_label: str
    label: str
    group: str
    mpp: float

    @property
    def label_index(self) -> int:
        """Class index in ``PATTERN_CLASSES``, or :data:`TUMOUR_ANY`."""
        return TUMOUR_ANY if self.label == TUMOUR_ANY_NAME else PATTERN_CLASSES.index(self.label)


def group_fold(group: str) -> int:
    """Fold (0 or 1) of a group without a fixed assignment: a stable hash of its name."""
    return zlib.crc32(group.encode()) % 2


def fold_of(image: RealImage) -> int:
    """Fold (0 or 1) of an image's patient or slide; oral photographs by a hash of the name.

    Images of other sets (a lab's patches, ``models.training.patch_sources``) take
    :func:`group_fold` of their group.
    """
    if image.source == "oral_oscc_vs_normal_224":
        return group_fold(image.path.name)
    if image.source not in SOURCES:
        return group_fold(image.group)
    return 1 if image.group in _FOLD1_GROUPS else 0


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise RealDataError(f"{path}: label file missing; is ../shared/data/real/tissue complete?")
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _image(root: Path, source: str, rel: str, source_label: str, group: str) -> RealImage:
    src = SOURCES[source]
    if source_label not in src.proxies:
        raise RealDataError(f"{root / rel}: unknown label {source_label!r} in {source}")
    path = root / rel
    if not path.is_file():
        raise RealDataError(f"{path}: listed in {source}'s labels but missing")
    return RealImage(path, source, source_label, src.proxies[source_label][0], group, src.mpp)


def list_real_tissue(root: Path = DEFAULT_ROOT) -> list[RealImage]:
    """Every usable labelled image of the four real tissue sets, in a stable order.

    Raises:
        RealDataError: a label file or a listed image is missing, or a label is unknown.
    """
    out: list[RealImage] = []
    d = root / "sarcoma_sts_foersch"
    for r in _rows(d / "key.csv"):
        rel = f"sarcoma_sts_foersch/Example_Tiles/{r['Path']}"
        out.append(_image(root, d.name, rel, r["Label"], r["patient_ID"]))
    d = root / "oral_oscc_vs_normal_224"
    for r in _rows(d / "labels.csv"):
        if r["microscope_magnification"] != "400x":
            continue  # 100×: about 4 µm/px, too coarse for the 1 µm/px pattern model
        rel = f"{d.name}/{r['path']}"
        out.append(_image(root, d.name, rel, r["label"], Path(r["path"]).stem))
    d = root / "osteosarcoma_ut_atlan"
    for r in _rows(d / "labels.csv"):
        patient = (
            "P9"
            if r["path"].split("/")[1].startswith("P9")
            else "-".join(r["source_case_region"].split("-")[:2])
        )
        out.append(_image(root, d.name, f"{d.name}/{r['path']}", r["label"], patient))
    d = root / "thyhister_thyroid"
    for r in _rows(d / "labels.csv"):
        out.append(_image(root, d.name, f"{d.name}/{r['path']}", r["patch_label"], r["slide"]))
    return out


def tissue_fraction(rgb: NDArray[np.uint8], min_od: float = 0.2) -> float:
    """Share of pixels whose summed optical density exceeds ``min_od`` (not glass)."""
    od = -np.log10(np.maximum(rgb.astype(np.float32), 1.0) / 255.0).sum(axis=-1)
    return float((od > min_od).mean())


def resampled(image: RealImage, mpp: float) -> NDArray[np.uint8]:
    """The image as RGB at ``mpp`` µm/px (bilinear, as the slide tile reader resamples).

    Raises:
        RealDataError: the file cannot be decoded.
    """
    try:
        with Image.open(image.path) as im:
            rgb = im.convert("RGB")
    except OSError as exc:
        raise RealDataError(f"{image.path}: cannot decode ({exc})") from exc
    scale = image.mpp / mpp
    size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
    if size != rgb.size:
        rgb = rgb.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def _starts(length: int, size: int) -> list[int]:
    if length <= size:
        return [0]
    n = -(-(length - size) // size) + 1
    return [round(k * (length - size) / (n - 1)) for k in range(n)]


@dataclass
class RealTiles:
    """Tiles cut from real images at one µm/px.

    Attributes:
        images: tiles, ``size`` × ``size`` RGB, or smaller squares for images smaller than that.
        labels: (n,) class index, :data:`TUMOUR_ANY`, or 0 (background) for glass tiles.
        sources: (n,) source name of each tile.
        groups: (n,) patient / slide of each tile.
        folds: (n,) fold of each tile.
        image_ids: (n,) index of the image in the list the tiles were cut from.
        mpp: µm/px of the tiles.
    """

    images: list[NDArray[np.uint8]]
    labels: NDArray[np.int64]
    sources: NDArray[np.str_]
    groups: NDArray[np.str_]
    folds: NDArray[np.int64]
    image_ids: NDArray[np.int64]
    mpp: float

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, keep: NDArray[np.bool_]) -> RealTiles:
        """The tiles where ``keep`` is True."""
        idx = np.flatnonzero(keep)
        return RealTiles(
            [self.images[i] for i in idx.tolist()],
            self.labels[idx],
            self.sources[idx],
            self.groups[idx],
            self.folds[idx],
            self.image_ids[idx],
            self.mpp,
        )


def cut_tiles(
    images: list[RealImage],
    *,
    mpp: float,
    size: int,
    glass_below: float = 0.1,
    keep_from: float = 0.25,
) -> RealTiles:
    """Resample every image to ``mpp`` and cut it into ``size`` tiles spread evenly over it.

    A tile with less than ``glass_below`` tissue is background (label 0); one between that and
    ``keep_from`` is dropped (neither glass nor its image's class); the rest carry the image's
    label. An image smaller than ``size`` gives one centred square as large as it allows.

    Args:
        images: from :func:`list_real_tissue`.
        mpp: target µm/px (the model's).
        size: tile edge in target pixels.
        glass_below: tissue fraction under which a tile is glass.
        keep_from: tissue fraction from which a tile keeps its image's label.
    """
    tiles: list[NDArray[np.uint8]] = []
    labels, sources, groups, folds, ids = [], [], [], [], []
    for k, img in enumerate(images):
        rgb = resampled(img, mpp)
        h, w = rgb.shape[:2]
        edge = min(size, h, w)
        for y in _starts(h, edge):
            for x in _starts(w, edge):
                tile = np.ascontiguousarray(rgb[y : y + edge, x : x + edge])
                frac = tissue_fraction(tile)
                if glass_below <= frac < keep_from:
                    continue
                tiles.append(tile)
                labels.append(0 if frac < glass_below else img.label_index)
                sources.append(img.source)
                groups.append(img.group)
                folds.append(fold_of(img))
                ids.append(k)
    return RealTiles(
        tiles,
        np.asarray(labels, dtype=np.int64),
        np.asarray(sources, dtype=np.str_),
        np.asarray(groups, dtype=np.str_),
        np.asarray(folds, dtype=np.int64),
        np.asarray(ids, dtype=np.int64),
        mpp,
    )


def real_split(
    mpp: float, size: int, holdout_fold: int | None, root: Path = DEFAULT_ROOT
) -> tuple[RealTiles, RealTiles | None]:
    """Training tiles (every fold but ``holdout_fold``) and the held-out fold's tiles (or None).

    Thyroid squares (152 px at 1 µm/px) are smaller than a tile; training takes windows of one
    edge from every tile (``models.training.pattern_real.cache_views``).
    """
    tiles = cut_tiles(list_real_tissue(root), mpp=mpp, size=size)
    if holdout_fold is None:
        return tiles, None
    return tiles.subset(tiles.folds != holdout_fold), tiles.subset(tiles.folds == holdout_fold)


def training_sets_card() -> list[dict[str, object]]:
    """The real sets as a model card lists them: origin, licence, µm/px and what stands for what."""
    return [
        {
            "set": f"../shared/data/real/tissue/{s.name}",
            "origin": s.origin,
            "licence": s.licence,
            "mpp": s.mpp,
            "mpp_basis": s.mpp_basis,
            "labels": {k: {"class": c, "proxy": why} for k, (c, why) in s.proxies.items()},
        }
        for s in SOURCES.values()
    ]


def necrosis_patch_set(
    mpp: float, size: int, holdout_fold: int | None, root: Path = DEFAULT_ROOT
) -> tuple[PatchSet, RealTiles]:
    """Real tiles for the necrosis segmenter with weak masks, and the held-out fold's tiles.

    The sets label whole images, not pixels: in a necrotic-osteosarcoma tile every tissue pixel
    (optical density above glass) is taken as necrosis, in every other tile none is. Only tiles of
    the full ``size`` are kept (the oral and thyroid squares are smaller at 2 µm/px).

    Returns:
        (training patches with (n, size, size) masks of pattern-class values, held-out tiles at
        ``mpp``; all tiles when ``holdout_fold`` is None).
    """
    tiles = cut_tiles(list_real_tissue(root), mpp=mpp, size=size)
    full = np.array([t.shape[:2] == (size, size) for t in tiles.images])
    train = tiles.subset(full & (tiles.folds != holdout_fold))
    held = tiles.subset(tiles.folds == holdout_fold) if holdout_fold is not None else tiles
    nec = PATTERN_CLASSES.index("necrosis")
    masks = np.zeros((len(train), size, size), dtype=np.uint8)
    for k, (img, lab) in enumerate(zip(train.images, train.labels.tolist(), strict=True)):
        if lab == nec:
            od = -np.log10(np.maximum(img.astype(np.float32), 1.0) / 255.0).sum(axis=-1)
            masks[k] = np.where(od > 0.2, nec, 0)
    labels = np.where(train.labels == nec, nec, 0).astype(np.int64)
    return PatchSet(np.stack(train.images), labels, masks), held
