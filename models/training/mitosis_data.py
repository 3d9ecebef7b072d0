"""Training and validation crops of the mitosis classifier: synthetic and real.

Every crop is stored 80 × 80 px at 0.25 µm/px around its centre (the classifier sees a 64 px
window, so a stored crop allows ±2 µm of centring jitter) with a class
(:data:`MITOSIS_CLASSES` index), a source name and a group (slide, patient or source image) so
that splits never cut a slide and figures can be given per source.

Synthetic (``wsi.synthetic.sample_patches``): centred crops of figures, look-alikes and nuclei;
crops at the detector's own haematoxylin candidates on larger patches (labelled by the figure
within 6 µm); candidates on necrosis (karyorrhectic debris). Real, from ``../shared/data``
(read its MANIFEST.md): AMi-Br mitoses (MIDOG21 + TUPAC16, typical / atypical, the few
multipolar ones tripolar), AtNorM-Br (TCGA; deduplicated; an external set: it names no slides, so
no split of it could be slide-disjoint), and non-mitotic nuclei: labelled nucleus centres and the
detector's candidates on CoNSeP, MoNuSAC and NuCLS images.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image

from models.cells.mitosis_net import MEAN, STD, MitosisTileDetector
from models.training.augment import normalise

MPP = 0.25
STORE_PX = 80
MATCH_PX = 24  # 6 µm: a candidate this close to a figure is that figure
#: µm/px assumed for each real set (all scanned at 40×; none states a finer value per image).
REAL_MPP = {"ami-br": 0.25, "atnorm-br": 0.25, "consep": 0.25, "monusac": 0.25, "nucls": 0.25}


@dataclass
class Crops:
    """Crops with labels, sources and groups (all arrays of equal length)."""

    images: NDArray[np.uint8]
    labels: NDArray[np.int64]
    sources: NDArray[np.str_]
    groups: NDArray[np.str_]

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, idx: NDArray[np.int64] | NDArray[np.bool_]) -> Crops:
        """Return the crops at ``idx`` (indices or a mask)."""
        return Crops(self.images[idx], self.labels[idx], self.sources[idx], self.groups[idx])

    @staticmethod
    def concat(*parts: Crops) -> Crops:
        """Concatenate crop sets."""
        return Crops(
            np.concatenate([p.images for p in parts]),
            np.concatenate([p.labels for p in parts]),
            np.concatenate([p.sources for p in parts]),
            np.concatenate([p.groups for p in parts]),
        )

    @staticmethod
    def make(
        images: NDArray[np.uint8], labels: NDArray[np.int64], source: str, groups: list[str]
    ) -> Crops:
        """A crop set from one source."""
        n = len(labels)
        return Crops(
            np.asarray(images, np.uint8).reshape(n, STORE_PX, STORE_PX, 3),
            np.asarray(labels, np.int64),
            np.full(n, source),
            np.asarray(groups, dtype=np.str_),
        )

    def save(self, path: Path) -> None:
        """Write to an ``.npz`` cache."""
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(
            path, images=self.images, labels=self.labels, sources=self.sources, groups=self.groups
        )

    @staticmethod
    def load(path: Path) -> Crops:
        """Read an ``.npz`` cache."""
        with np.load(path) as z:
            return Crops(z["images"], z["labels"], z["sources"], z["groups"])


def in_split(group: str, val_fraction: float, salt: str = "mitosis-split-v1") -> bool:
    """True when ``group`` (a slide or patient) is a validation group; stable across runs."""
    h = int(hashlib.sha256(f"{salt}|{group}".encode()).hexdigest()[:8], 16)
    return h / 0xFFFFFFFF < val_fraction


def crops_at(
    img: NDArray[np.uint8], rc: NDArray[np.float64], size: int = STORE_PX
) -> NDArray[np.uint8]:
    """(k, size, size, 3) crops of ``img`` centred on the (k, 2) (row, col) ``rc``; borders
    reflected."""
    half = size // 2
    pad = np.pad(img, ((half, half), (half, half), (0, 0)), mode="reflect")
    pts = np.clip(
        np.round(np.asarray(rc, np.float64).reshape(-1, 2)), 0, np.array(img.shape[:2]) - 1
    )
    out = np.empty((len(pts), size, size, 3), np.uint8)
    for i, (r0, c0) in enumerate(pts.astype(np.int64)):
        out[i] = pad[r0 : r0 + size, c0 : c0 + size]
    return out


def _centre(img: NDArray[np.uint8]) -> NDArray[np.uint8]:
    out: NDArray[np.uint8] = crops_at(img, np.array([[img.shape[0] / 2, img.shape[1] / 2]]))[0]
    return out


def _rgb(path: Path) -> NDArray[np.uint8]:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


# --- real mitoses -----------------------------------------------------------------------------


def ami_br(shared: Path) -> Crops:
    """Every AMi-Br crop (the 120 of ``mitosis/ami-br`` and the 988 of ``real/mitosis``).

    Groups are ``dataset/slide``; label 1 typical, 2 atypical, 3 when both experts call it
    multipolar. The source is ``ami-br/MIDOG21`` or ``ami-br/TUPAC16``.
    """
    parts = []
    for csv_path in (
        shared / "mitosis" / "ami-br" / "labels_subset.csv",
        shared / "real" / "mitosis" / "ami-br-more" / "labels.csv",
    ):
        rows = list(csv.DictReader(csv_path.open(encoding="utf-8")))
        imgs, labels, groups, sources = [], [], [], []
        for r in rows:
            atyp = "atypical" in r["file"].split("/")[-2].lower()
            multi = r["expert1_label"] == r["expert2_label"] == "AMF multipolar"
            imgs.append(_centre(_rgb(csv_path.parent / r["file"])))
            labels.append(3 if multi else (2 if atyp else 1))
            groups.append(f"{r['dataset']}/{r['slide']}")
            sources.append(f"ami-br/{r['dataset']}")
        c = Crops.make(np.stack(imgs), np.array(labels), "", groups)
        c.sources = np.asarray(sources, dtype=np.str_)
        parts.append(c)
    return Crops.concat(*parts)


def atnorm_br(shared: Path) -> Crops:
    """AtNorM-Br, deduplicated: one crop per pixel-identical group, conflicting groups dropped."""
    root = shared / "real" / "mitosis" / "atnorm-br"
    rows = list(csv.DictReader((root / "labels.csv").open(encoding="utf-8")))
    seen: set[str] = set()
    imgs, labels, groups = [], [], []
    for r in rows:
        if r["duplicate_group_has_conflicting_labels"].strip().lower() in ("true", "1", "yes"):
            continue
        dup = r["exact_duplicate_group"].strip()
        if dup:
            if dup in seen:
                continue
            seen.add(dup)
        imgs.append(_centre(_rgb(root / r["file"])))
        labels.append(2 if r["label"].lower().startswith("atyp") else 1)
        groups.append(f"atnorm/{Path(r['file']).stem}")
    return Crops.make(np.stack(imgs), np.array(labels), "atnorm-br/TCGA", groups)


# --- real non-mitotic nuclei ------------------------------------------------------------------


def nucleus_images(shared: Path) -> list[tuple[str, str, Path, NDArray[np.float64], str]]:
    """(source, group, image path, (k, 2) nucleus centres (row, col), split) of the cell sets.

    Splits: CoNSeP and NuCLS by their own train/test folders (CoNSeP patches of one source image
    share a folder name prefix and a split); MoNuSAC by patient (half held out).
    """
    from scipy.io import loadmat

    cells = shared / "real" / "cells"
    out: list[tuple[str, str, Path, NDArray[np.float64], str]] = []
    for split in ("train", "test"):
        for img in sorted((cells / "consep_patches" / "images" / split).glob("*.jpg")):
            mat = loadmat(cells / "consep_patches" / "type_mat" / split / f"{img.stem}.mat")
            xy = np.asarray(mat["inst_centroid"], np.float64).reshape(-1, 2)
            group = "consep/" + "_".join(img.stem.split("_")[:2])
            out.append(("consep", group, img, xy[:, ::-1], "val" if split == "test" else "train"))
        for img in sorted((cells / "nucls_cellvitpp_example" / split / "images").glob("*.png")):
            lab = cells / "nucls_cellvitpp_example" / split / "labels" / f"{img.stem}.csv"
            pts = (
                np.loadtxt(lab, delimiter=",", ndmin=2)[:, :2]
                if lab.stat().st_size
                else np.zeros((0, 2))
            )
            out.append(
                (
                    "nucls",
                    f"nucls/{img.stem}",
                    img,
                    pts[:, ::-1],
                    "val" if split == "test" else "train",
                )
            )
    mon = cells / "monusac_test_colormask"
    pts_by_img: dict[str, list[tuple[float, float]]] = {}
    for r in csv.DictReader((mon / "points_derived_from_colormask.csv").open(encoding="utf-8")):
        pts_by_img.setdefault(r["image"], []).append((float(r["y"]), float(r["x"])))
    for name, pt_list in sorted(pts_by_img.items()):
        pts = np.array(pt_list, np.float64)
        patient = name[:12]
        split = "val" if in_split(f"monusac/{patient}", 0.5) else "train"
        out.append(
            (
                "monusac",
                f"monusac/{patient}",
                mon / "MoNuSAC-mini-test" / "images" / name,
                np.array(pts),
                split,
            )
        )
    return out


@torch.no_grad()
def real_negatives(
    shared: Path, det: MitosisTileDetector | None, split: str, *, candidates: bool = True
) -> Crops:
    """Crops on labelled nucleus centres (and, with ``candidates``, on the detector's candidates)
    of the real cell images of ``split`` (``train`` / ``val``); all labelled negative.

    The cell sets do not mark mitoses; the few mitotic nuclei among thousands are label noise
    that every figure derived from these crops shares.
    """
    imgs, groups, sources = [], [], []
    for source, group, path, rc, sp in nucleus_images(shared):
        if sp != split:
            continue
        rgb = _rgb(path)
        pts = np.asarray(rc, np.float64).reshape(-1, 2)
        if candidates:
            if det is None:
                raise ValueError("candidate crops need the detector")
            x = normalise(torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0, MEAN, STD)
            cand, val = det.candidates(x)
            keep = (val[0] >= 0).numpy()
            pts = np.concatenate([pts, cand[0].numpy()[keep].astype(np.float64)])
        imgs.append(crops_at(rgb, pts))
        groups += [group] * len(pts)
        sources += [f"{source}/{'nuclei+candidates' if candidates else 'nuclei'}"] * len(pts)
    c = Crops.make(np.concatenate(imgs), np.zeros(len(groups), np.int64), "", groups)
    c.sources = np.asarray(sources, dtype=np.str_)
    return c


#: Real 20× tissue sets whose detector candidates serve as negatives: key → (source folder,
#: project labels taken, name in the figures). Sarcomas hold some mitoses among thousands of
#: candidates (label noise in training; in validation an upper bound of false calls).
TISSUE_20X = {
    "thyroid": ("thyhister_thyroid", ("non_tumour", "tumour"), "thyhister"),
    "sarcoma": ("sarcoma_sts_foersch", ("spindle", "pleomorphic"), "sarcoma"),
}


@torch.no_grad()
def tissue_20x_negatives(
    shared: Path,
    det: MitosisTileDetector,
    split: str,
    sets: tuple[str, ...] = ("thyroid",),
    tile_px: int = 512,
) -> Crops:
    """The detector's candidates on real tissue scanned at about 0.5 µm/px (20×), as negatives.

    Benign and papillary thyroid (ThyHisTer) and spindle-cell / pleomorphic sarcoma tiles
    (Foersch) are brought to the classifier's 0.25 µm/px with bilinear upsampling, as the slide
    reader does, and searched for candidates in ``tile_px`` tiles as the analysis does: real
    tissue seen the way a 20× slide is seen. Split by patient / slide with
    :func:`models.training.real_tissue.fold_of`: fold 0 validates, fold 1 (three times the
    benign thyroid candidates) trains. Sources are ``thyhister/<label>-20x`` and
    ``sarcoma/<label>-20x``.
    """
    from models.training.real_tissue import fold_of, list_real_tissue, resampled

    want = 0 if split == "val" else 1
    parts = []
    for im in list_real_tissue(shared / "real" / "tissue"):
        hit = [TISSUE_20X[k] for k in sets if TISSUE_20X[k][0] == im.source]
        if not hit or im.label not in hit[0][1] or fold_of(im) != want:
            continue
        rgb = resampled(im, MPP).copy()
        pts_all = []
        for r0 in range(0, rgb.shape[0], tile_px):
            for c0 in range(0, rgb.shape[1], tile_px):
                tile = rgb[r0 : r0 + tile_px, c0 : c0 + tile_px]
                x = normalise(
                    torch.from_numpy(tile).permute(2, 0, 1)[None].float() / 255.0, MEAN, STD
                )
                cand, val = det.candidates(x)
                keep = (val[0] >= 0).numpy()
                pts_all.append(cand[0].numpy()[keep].astype(np.float64) + np.array([r0, c0]))
        pts = np.concatenate(pts_all)
        if len(pts):
            parts.append(
                Crops.make(
                    crops_at(rgb, pts),
                    np.zeros(len(pts), np.int64),
                    f"{hit[0][2]}/{im.label}-20x",
                    [f"{hit[0][2]}/{im.group}"] * len(pts),
                )
            )
    if not parts:
        return Crops.make(
            np.zeros((0, STORE_PX, STORE_PX, 3), np.uint8), np.zeros(0, np.int64), "", []
        )
    return Crops.concat(*parts)


# --- synthetic --------------------------------------------------------------------------------


def _synth_label(y: NDArray[np.int64]) -> NDArray[np.int64]:
    """Generator classes (0 negative, 1 typical, 2 tripolar) → :data:`MITOSIS_CLASSES`."""
    return np.where(y == 2, 3, y).astype(np.int64)


def synthetic_centred(n: int, seed: int, chunk: int = 64) -> Crops:
    """Centred synthetic crops of figures, look-alikes and nuclei."""
    from wsi.synthetic.patches import sample_patches

    imgs, labels = [], []
    for k, start in enumerate(range(0, n, chunk)):
        try:
            b = sample_patches("mitosis", min(chunk, n - start), 96, MPP, seed * 1000 + k)
        except ValueError as exc:  # a sampler failure on one scene must not end a run
            print(json.dumps({"event": "sampler error skipped", "seed": seed, "error": str(exc)}))
            continue
        imgs += [_centre(np.asarray(im)) for im in b.images]
        labels.append(np.asarray(b.labels, np.int64).reshape(len(b.images), -1)[:, 0])
    y = _synth_label(np.concatenate(labels))
    return Crops.make(np.stack(imgs), y, "synthetic/centred", [f"synth/{seed}"] * len(y))


@torch.no_grad()
def synthetic_mined(det: MitosisTileDetector, n: int, seed: int, kind: str = "mitosis") -> Crops:
    """Crops at the detector's candidates on ``n`` synthetic 256 px patches of ``kind``.

    ``mitosis`` patches: labelled by the figure within 6 µm, else negative. ``necrosis``
    patches: only candidates on necrosis pixels (karyorrhectic debris), all negative.
    """
    from wsi.synthetic.classes import PATTERN_CLASSES
    from wsi.synthetic.patches import sample_patches

    size, chunk = 256, 32
    imgs: list[NDArray[np.uint8]] = [np.zeros((0, STORE_PX, STORE_PX, 3), np.uint8)]
    labels: list[int] = []
    for k, start in enumerate(range(0, n, chunk)):
        try:
            b = sample_patches(kind, min(chunk, n - start), size, MPP, seed * 1000 + k)  # type: ignore[arg-type]
        except ValueError as exc:
            print(json.dumps({"event": "sampler error skipped", "seed": seed, "error": str(exc)}))
            continue
        x = normalise(
            torch.from_numpy(np.asarray(b.images)).permute(0, 3, 1, 2).float() / 255.0, MEAN, STD
        )
        rc, val = det.candidates(x)
        for i in range(len(x)):
            keep = (val[i] >= 0).numpy()
            cand = rc[i].numpy()[keep]
            lab = np.zeros(len(cand), np.int64)
            if kind == "necrosis":
                assert b.masks is not None
                on = b.masks[i][cand[:, 0], cand[:, 1]] == PATTERN_CLASSES.index("necrosis")
                cand, lab = cand[on], lab[on]
            elif b.points is not None and len(b.points[i]):
                pts = np.asarray(b.points[i]).reshape(-1, 3)
                d = np.hypot(cand[:, None, 1] - pts[None, :, 0], cand[:, None, 0] - pts[None, :, 1])
                near = d.min(axis=1) <= MATCH_PX
                lab[near] = _synth_label(pts[d.argmin(axis=1)[near], 2].astype(np.int64))
            imgs.append(crops_at(np.asarray(b.images[i]), cand.astype(np.float64)))
            labels += lab.tolist()
    return Crops.make(
        np.concatenate(imgs),
        np.array(labels),
        f"synthetic/{kind}-candidates",
        [f"synth/{seed}"] * len(labels),
    )


def window(
    images: NDArray[np.uint8], size: int, offsets: NDArray[np.int64] | None = None
) -> NDArray[np.uint8]:
    """``size`` px windows of stored crops: centred, or at per-crop (dy, dx) offsets from centre."""
    c = (images.shape[1] - size) // 2
    if offsets is None:
        return np.ascontiguousarray(images[:, c : c + size, c : c + size])
    return np.stack(
        [
            im[c + dy : c + dy + size, c + dx : c + dx + size]
            for im, (dy, dx) in zip(images, offsets, strict=True)
        ]
    )


@torch.no_grad()
def candidate_recall(
    det: MitosisTileDetector, crops: Crops, radius_um: float = 7.5
) -> dict[str, float]:
    """Share of figures (crops centred on a mitosis) with a detector candidate within ``radius_um``.

    The classifier only sees candidates, so a figure without one is lost whatever the classifier
    says. Per source, on the stored 80 px crops.
    """
    out: dict[str, float] = {}
    fig = crops.labels > 0
    for src in sorted(set(crops.sources[fig].tolist())):
        sel = fig & (crops.sources == src)
        x = normalise(
            torch.from_numpy(crops.images[sel]).permute(0, 3, 1, 2).float() / 255.0, MEAN, STD
        )
        rc, val = det.candidates(x)
        d = torch.hypot(rc[..., 0].float() - STORE_PX / 2, rc[..., 1].float() - STORE_PX / 2)
        hit = ((d <= radius_um / MPP) & (val >= 0)).any(dim=1)
        out[src] = round(float(hit.float().mean()), 4)
    return out
