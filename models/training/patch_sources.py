"""Labelled patch and crop sets as training data for ``atc-wsi train`` (docs/training.md).

Two kinds of source, read by the code ``atc-wsi evaluate`` reads them with:

* a lab's own set (``--patches`` / ``--crops`` FOLDER_OR_CSV with its µm/px): class folders or a
  ``file,label[,slide]`` CSV (:func:`models.training.labelled.read_labelled`), labels mapped by
  the evaluation task's synonyms and the user's ``--label-map``
  (:func:`models.training.labelled.map_labels`; an unknown label is an error listing the known);
* the project's real sets by name (``--real``, :data:`REAL_SETS`): ``tissue`` is
  ``../shared/data/real/tissue`` as :mod:`models.training.real_tissue` loads it, ``mitosis`` the
  AMi-Br crops and ``nuclei`` the labelled nuclei of CoNSeP, NuCLS and MoNuSAC
  (:mod:`models.training.mitosis_data`).

Every image has a group (slide, patient or source image; a class-folder set knows none and uses
the file name) and a fold of two: the real sets keep the folds their loaders define
(:func:`models.training.real_tissue.fold_of`; AMi-Br's validation slides of
:func:`models.training.mitosis_data.in_split` and the cell sets' own test splits are fold 1), a
lab's set hashes its group (:func:`group_fold`). Held-out data are whole folds or named groups,
never single patches.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from models.errors import LabelError
from models.training.labelled import LabelledImages, load_rgb, map_labels, read_labelled
from models.training.real_tissue import RealImage, RealTiles, group_fold

#: Named real sets per task: name → what it holds (for the card and the error message).
REAL_SETS: dict[str, dict[str, str]] = {
    "pattern": {"tissue": "../shared/data/real/tissue (4 sources, proxies in real_tissue.py)"},
    "mitosis": {
        "mitosis": "../shared/data AMi-Br crops (typical / atypical / multipolar mitoses)",
        "nuclei": "../shared/data/real/cells labelled nuclei (CoNSeP, NuCLS, MoNuSAC): negatives",
    },
    "tam": {"cells": "../shared/data/real/cells: MoNuSAC macrophages, CoNSeP and NuCLS nuclei"},
}
#: ``../shared/data`` beside the project root.
SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
#: Plausible µm/px of a patch or crop set.
MPP_RANGE = (0.05, 20.0)
#: µm/px of the real crop sets (all 40× scans).
MPP_AMI = 0.25


@dataclass(frozen=True)
class LabelledSource:
    """A lab's labelled set and the µm/px of its images."""

    path: Path
    mpp: float


def check_real(task: str, names: Sequence[str]) -> list[str]:
    """The ``--real`` names, checked against the task's sets.

    Raises:
        LabelError: a name the task has no set for (the known ones are listed).
    """
    known = REAL_SETS.get(task, {})
    unknown = sorted(set(names) - set(known))
    if unknown:
        listing = ", ".join(f"{k} ({v})" for k, v in known.items()) or "none"
        raise LabelError(f"--real {', '.join(unknown)}: unknown for task {task}; known: {listing}")
    return list(dict.fromkeys(names))


def labelled_sources(
    paths: Sequence[Path], mpps: Sequence[float], option: str, mpp_option: str
) -> list[LabelledSource]:
    """Pair labelled sets with their µm/px: one value for all, or one per set in order.

    Raises:
        LabelError: no µm/px given, a count that pairs with neither, or an implausible value.
    """
    if not paths:
        if mpps:
            raise LabelError(f"{mpp_option} without {option}")
        return []
    if not mpps:
        raise LabelError(
            f"{option} needs {mpp_option} (µm/px of the images, e.g. 0.25 at 40×, 1.0 at 10×)"
        )
    if len(mpps) not in (1, len(paths)):
        raise LabelError(
            f"{len(mpps)} {mpp_option} values for {len(paths)} {option} sets: give one for all "
            "or one per set"
        )
    lo, hi = MPP_RANGE
    for m in mpps:
        if not lo <= m <= hi:
            raise LabelError(f"{mpp_option} {m} is not a plausible pixel size ({lo}–{hi} µm/px)")
    values = list(mpps) * len(paths) if len(mpps) == 1 else list(mpps)
    return [LabelledSource(Path(p), float(m)) for p, m in zip(paths, values, strict=True)]


def _mapped(
    src: LabelledSource,
    classes: Sequence[str],
    synonyms: Mapping[str, str],
    label_map: Mapping[str, str] | None,
) -> tuple[LabelledImages, NDArray[np.int64]]:
    data = read_labelled(src.path)
    try:
        return data, map_labels(data.labels, classes, synonyms, label_map)
    except LabelError as exc:
        raise LabelError(f"{data.source}: {exc}") from None


def set_name(src: LabelledSource) -> str:
    """Name of a lab's set in figures and cards: ``lab:<folder or CSV stem>``."""
    return f"lab:{src.path.stem or src.path.name}"


def lab_card_row(
    src: LabelledSource, data: LabelledImages, classes: Sequence[str], y: NDArray[np.int64]
) -> dict[str, Any]:
    """How a model card lists a lab's set: path, licence, µm/px, labels with their classes."""
    per: dict[str, Counter[str]] = {}
    for raw, k in zip(data.labels, y.tolist(), strict=True):
        per.setdefault(raw, Counter())[classes[k]] += 1
    return {
        "set": str(data.source),
        "name": set_name(src),
        "licence": "the lab's own (not stated)",
        "mpp": src.mpp,
        "mpp_basis": "given on the command line",
        "images": len(data),
        "groups": len(set(data.groups)),
        "labels": {
            raw: {"class": c.most_common(1)[0][0], "images": sum(c.values()), "proxy": "none"}
            for raw, c in sorted(per.items())
        },
    }


def tissue_images(
    src: LabelledSource, label_map: Mapping[str, str] | None
) -> tuple[list[RealImage], dict[str, Any]]:
    """A lab's tissue patches as :class:`RealImage` (labels through the tissue task's synonyms).

    ``tumour`` (tumour of none of the three patterns) trains with the set-valued target.
    """
    from models.training.eval_tasks import TISSUE_SYNONYMS, TISSUE_TRUTH

    data, y = _mapped(src, TISSUE_TRUTH, TISSUE_SYNONYMS, label_map)
    name = set_name(src)
    images = [
        RealImage(f, name, raw, TISSUE_TRUTH[k], g, src.mpp)
        for f, raw, k, g in zip(data.files, data.labels, y.tolist(), data.groups, strict=True)
    ]
    return images, lab_card_row(src, data, TISSUE_TRUTH, y)


def mitosis_crops(
    src: LabelledSource, label_map: Mapping[str, str] | None
) -> tuple[Any, NDArray[np.int64], dict[str, Any]]:
    """A lab's mitosis crops at 0.25 µm/px, centred, as ``mitosis_data.Crops`` with their folds.

    Labels: ``negative`` 0, ``typical`` 1, ``atypical`` 2 (``MITOSIS_CLASSES`` indices; a
    tri/multipolar figure is atypical, as ``atc-wsi evaluate mitosis`` scores it).
    """
    from models.training.eval_tasks import MITOSIS_SYNONYMS, MITOSIS_TRUTH
    from models.training.mitosis_data import MPP, Crops, crops_at

    data, y = _mapped(src, MITOSIS_TRUTH, MITOSIS_SYNONYMS, label_map)
    crops = []
    for f in data.files:
        img = load_rgb(f, scale=src.mpp / MPP)
        crops.append(crops_at(img, np.array([[img.shape[0] / 2, img.shape[1] / 2]]))[0])
    out = Crops.make(np.stack(crops), y, set_name(src), list(data.groups))
    folds = np.array([group_fold(g) for g in data.groups], dtype=np.int64)
    return out, folds, lab_card_row(src, data, MITOSIS_TRUTH, y)


def real_mitosis_crops(name: str, shared: Path) -> tuple[Any, NDArray[np.int64], dict[str, Any]]:
    """A named real crop set (``mitosis`` or ``nuclei``) with its folds and its card row."""
    from models.training.mitosis_data import ami_br, in_split, real_negatives

    if name == "mitosis":
        crops = ami_br(shared)
        folds = np.array([int(in_split(g, 0.3)) for g in crops.groups], dtype=np.int64)
        row = {
            "set": "../shared/data/mitosis/ami-br + ../shared/data/real/mitosis/ami-br-more",
            "origin": "DeepMicroscopy/AMi-Br@20a217b",
            "licence": "none stated (same crops MIT in AMi-Br_Benchmark)",
            "mpp": MPP_AMI,
            "labels": {"normal": "typical", "atypical": "atypical", "multipolar": "tripolar"},
            "proxy": "human breast mitoses (MIDOG21, TUPAC16) for ATC mitoses",
            "folds": "fold 1 = the validation slides of mitosis_data.in_split(slide, 0.3)",
        }
        return crops, folds, row
    from models.training.mitosis_data import Crops

    train = real_negatives(shared, None, "train", candidates=False)
    val = real_negatives(shared, None, "val", candidates=False)

    folds = np.concatenate([np.zeros(len(train), np.int64), np.ones(len(val), np.int64)])
    row = {
        "set": "../shared/data/real/cells (consep_patches, nucls_cellvitpp_example, "
        "monusac_test_colormask)",
        "licence": "CoNSeP repo GPL-3.0; NuCLS CC0; MoNuSAC CC BY-NC-SA 4.0 (non-commercial)",
        "mpp": MPP_AMI,
        "labels": {"every labelled nucleus": "negative"},
        "proxy": "real non-mitotic nuclei (the sets do not mark mitoses: a few are label noise)",
        "folds": "fold 1 = CoNSeP/NuCLS test folders and MoNuSAC's held-out patients",
    }
    return Crops.concat(train, val), folds, row


def held_mask(
    folds: NDArray[np.int64],
    groups: NDArray[np.str_],
    holdout_fold: int | None,
    holdout_groups: Sequence[str],
) -> NDArray[np.bool_]:
    """True where an item is held out: its fold is ``holdout_fold`` or its group is named."""
    held = np.zeros(len(folds), dtype=bool)
    if holdout_fold is not None:
        held |= folds == holdout_fold
    if holdout_groups:
        held |= np.isin(groups, list(holdout_groups))
    return held


def crop_sets(
    sources: Sequence[LabelledSource],
    real: Sequence[str],
    label_map: Mapping[str, str] | None,
    holdout_fold: int | None,
    holdout_groups: Sequence[str],
    shared: Path,
) -> tuple[Any, Any, dict[str, Any]]:
    """Mitosis crops of the labelled and real sets: (training, held out or None, card ``data``).

    Raises:
        LabelError: unknown labels, or every crop held out.
    """
    from models.training.mitosis_data import Crops

    parts, folds, rows = [], [], []
    for name in real:
        c, f, row = real_mitosis_crops(name, shared)
        parts.append(c)
        folds.append(f)
        rows.append(row)
    for src in sources:
        c, f, row = mitosis_crops(src, label_map)
        parts.append(c)
        folds.append(f)
        rows.append(row)
    if not parts:
        return None, None, {}
    crops = Crops.concat(*parts)
    held = held_mask(np.concatenate(folds), crops.groups, holdout_fold, holdout_groups)
    if held.all():
        raise LabelError("every crop is held out: nothing left to train on")
    held_crops = crops.take(held) if held.any() else None
    data = {
        "training_sets": rows,
        "crops_trained": int((~held).sum()),
        "heldout_sets": sorted(set(crops.sources[held].tolist())),
        "heldout_crops": int(held.sum()),
        "heldout_groups": sorted(set(crops.groups[held].tolist())),
    }
    return crops.take(~held), held_crops, data


def crop_figures(folder: str, held: Any, min_score: float) -> dict[str, Any]:
    """``atc-wsi evaluate mitosis`` figures of the model ``folder`` on held-out crops by source."""
    from models.training.crop_eval import score_set
    from models.training.eval_tasks import mitosis_predictor, mitosis_task

    predictor = mitosis_predictor(folder)
    task = mitosis_task(min_score)
    y = np.minimum(held.labels, 2)  # tripolar (3) is atypical in the crop truth
    scores = predictor(list(held.images))
    out: dict[str, Any] = {"all": score_set(scores, y, held.groups.tolist(), task)}
    for src in sorted(set(held.sources.tolist())):
        sel = held.sources == src
        out[src] = score_set(scores[sel], y[sel], held.groups[sel].tolist(), task)
    return out


@dataclass(frozen=True)
class LabelledSets:
    """The labelled and real sets of one ``atc-wsi train`` call (options as given)."""

    patches: Sequence[Path] = ()
    patch_mpp: Sequence[float] = ()
    crops: Sequence[Path] = ()
    crop_mpp: Sequence[float] = ()
    real: Sequence[str] = ()
    label_map: Path | None = None
    holdout_fold: int | None = None

    @property
    def given(self) -> bool:
        """True when any patch, crop or real set is given."""
        return bool(self.patches or self.crops or self.real)

    def check(self, task: str) -> None:
        """Refuse sets the task cannot train on, unknown real sets, missing µm/px.

        Raises:
            LabelError: as described, naming the option.
        """
        check_real(task, self.real)
        if self.patches and task != "pattern":
            raise LabelError(f"--patches trains the pattern task, not {task} (mitosis: --crops)")
        if self.crops and task != "mitosis":
            raise LabelError(f"--crops trains the mitosis task, not {task} (pattern: --patches)")
        labelled_sources(self.patches, self.patch_mpp, "--patches", "--patch-mpp")
        labelled_sources(self.crops, self.crop_mpp, "--crops", "--crop-mpp")
        if self.holdout_fold is not None and not self.given:
            raise LabelError("--holdout-fold splits patch/crop sets; for slides use --holdout")

    def _label_map(self) -> dict[str, str]:
        from models.training.labelled import load_label_map

        return load_label_map(self.label_map)

    def tissue(
        self, base: str, groups: Sequence[str], root: Path | None = None
    ) -> tuple[RealTiles, NDArray[np.bool_], list[dict[str, Any]]]:
        """Tiles of every tissue set at the model's µm/px, the held-out mask and the card rows.

        Raises:
            LabelError: unknown labels or held-out group names.
        """
        from models.registry import get_spec
        from models.training.real_tissue import (
            DEFAULT_ROOT,
            cut_tiles,
            list_real_tissue,
            training_sets_card,
        )

        images: list[RealImage] = []
        rows: list[dict[str, Any]] = []
        if "tissue" in self.real:
            images += list_real_tissue(root or DEFAULT_ROOT)
            rows += training_sets_card()
        lmap = self._label_map()
        for src in labelled_sources(self.patches, self.patch_mpp, "--patches", "--patch-mpp"):
            imgs, row = tissue_images(src, lmap)
            images += imgs
            rows.append(row)
        spec = get_spec(base)
        tiles = cut_tiles(images, mpp=spec.input_mpp, size=spec.tile_px)
        _check_groups(groups, tiles.groups)
        return tiles, held_mask(tiles.folds, tiles.groups, self.holdout_fold, groups), rows

    def cells(self, groups: Sequence[str]) -> tuple[Any, Any, Any]:
        """(training tiles, held-out images or None, card ``data``) of ``--real cells``."""
        from models.training.cell_sources import cell_sets

        if "cells" not in self.real:
            _check_groups(groups, np.array([], dtype=np.str_))
            return None, None, {}
        train, held, data = cell_sets(self.holdout_fold, groups)
        return train, held or None, data

    def mitosis(self, groups: Sequence[str], shared: Path | None = None) -> tuple[Any, Any, Any]:
        """(training crops, held-out crops, card ``data``) of the crop sets (Nones when none)."""
        srcs = labelled_sources(self.crops, self.crop_mpp, "--crops", "--crop-mpp")
        if not (srcs or self.real):
            _check_groups(groups, np.array([], dtype=np.str_))
            return None, None, {}
        train, held, data = crop_sets(
            srcs, self.real, self._label_map(), self.holdout_fold, groups, shared or SHARED
        )
        return train, held, data


def _check_groups(names: Sequence[str], groups: NDArray[np.str_]) -> None:
    unknown = sorted(set(names) - set(groups.tolist()))
    if unknown:
        some = sorted(set(groups.tolist()))[:12]
        raise LabelError(
            f"--holdout names {unknown} are neither slides nor groups of the labelled sets"
            + (f"; groups include {some}" if some else "")
        )
