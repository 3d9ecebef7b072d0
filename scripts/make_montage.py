"""Build docs/img/synthetic_montage.png: full-resolution synthetic crops next to real ones.

Rows: tissue classes at 0.5 µm/px (with real Kather H&E patches, also 0.5 µm/px), mitotic forms
at 0.25 µm/px (with real AMi-Br mitoses, 0.25 µm/px), look-alikes and ordinary nuclei, and the
same macrophage-rich tissue in H&E, CD68 and CD163. Nothing is rescaled.

Usage: python scripts/make_montage.py [--out docs/img/synthetic_montage.png] [--seed 1]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw

from wsi.synthetic import sample_patches
from wsi.synthetic.classes import PATTERN_CLASSES
from wsi.synthetic.patches import sample_objects

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CAPTION = 14
GAP = 6
U8 = NDArray[np.uint8]


def _tile(img: U8, text: str) -> Image.Image:
    h, w = img.shape[:2]
    out = Image.new("RGB", (w, h + CAPTION), (255, 255, 255))
    out.paste(Image.fromarray(img), (0, CAPTION))
    ImageDraw.Draw(out).text((2, 1), text[: max(4, w // 6)], fill=(0, 0, 0))
    return out


def _row(title: str, tiles: list[Image.Image]) -> Image.Image:
    h = max(t.height for t in tiles) + CAPTION
    w = sum(t.width for t in tiles) + GAP * (len(tiles) + 1)
    row = Image.new("RGB", (max(w, 400), h + GAP), (255, 255, 255))
    ImageDraw.Draw(row).text((GAP, 1), title, fill=(120, 0, 0))
    x = GAP
    for t in tiles:
        row.paste(t, (x, CAPTION))
        x += t.width + GAP
    return row


def _classes(seed: int) -> list[Image.Image]:
    b = sample_patches("pattern", 96, 224, 0.5, seed=seed)
    assert b.masks is not None
    tiles = []
    for idx, name in enumerate(PATTERN_CLASSES):
        purity = (b.masks == idx).mean(axis=(1, 2))
        if name == "background":
            glass = (b.images.max(axis=3) - b.images.min(axis=3) < 20).mean(axis=(1, 2))
            score = np.where(purity > 0.6, 1.0 - glass, -1.0)  # artefact-rich background
        else:
            score = purity
        tiles.append(_tile(b.images[int(np.argmax(score))], f"synth {name}"))
    return tiles


def _real(folder: Path, pattern: str, n: int, label: str) -> list[Image.Image]:
    files = sorted(folder.glob(pattern))[:n]
    return [_tile(np.asarray(Image.open(f).convert("RGB")), f"real {label}") for f in files]


def _objects(kinds: list[str], seed: int, stain: str = "he") -> list[Image.Image]:
    b = sample_objects(kinds, 128, 0.25, seed=seed, stain=stain)
    return [
        _tile(im, k.replace("typical_", "").replace("_", " "))
        for im, k in zip(b.images, kinds, strict=True)
    ]


def build(seed: int) -> Image.Image:
    """Return the montage image."""
    mitoses = [
        "typical_prophase",
        "typical_metaphase",
        "typical_anaphase",
        "tripolar_spokes",
        "tripolar_groups",
    ]
    looks = ["apoptotic", "pyknotic", "lymphocyte", "karyorrhectic", "tangential", "nucleus"]
    tam = [
        sample_patches("macrophage", 1, 256, 0.5, seed=seed + 3, stain=s)
        for s in ("he", "cd68", "cd163")
    ]
    rows = [
        _row("Tissue classes, synthetic (0.5 um/px, 224 px)", _classes(seed)),
        _row(
            "Real H&E, Kather colorectal (0.5 um/px, 224 px): TUM and NORM",
            _real(SHARED / "patches" / "kather", "*/*.png", 5, "kather"),
        ),
        _row(
            "Mitotic figures, synthetic (0.25 um/px, 128 px): typical forms, then tripolar",
            _objects(mitoses, seed) + _objects(mitoses, seed + 1),
        ),
        _row(
            "Real mitoses, AMi-Br (0.25 um/px, 128 px): atypical, then normal",
            _real(SHARED / "mitosis" / "ami-br" / "patches" / "atypical", "*", 5, "atypical")
            + _real(SHARED / "mitosis" / "ami-br" / "patches" / "normal", "*", 5, "normal"),
        ),
        _row(
            "Look-alike negatives and an ordinary tumour nucleus (0.25 um/px)",
            _objects(looks, seed) + _objects(looks[:4], seed + 2),
        ),
        _row(
            "Macrophages (0.25 um/px): foamy and ramified in H&E, CD68, CD163",
            [
                t
                for s in ("he", "cd68", "cd163")
                for t in _objects(["macrophage_foamy", "macrophage_ramified"], seed, s)
            ],
        ),
        _row(
            "The same macrophage-rich tumour in H&E, CD68 and CD163 (0.5 um/px, 256 px)",
            [_tile(b.images[0], s) for b, s in zip(tam, ("he", "cd68", "cd163"), strict=True)],
        ),
    ]
    width = max(r.width for r in rows)
    out = Image.new("RGB", (width, sum(r.height for r in rows)), (255, 255, 255))
    y = 0
    for r in rows:
        out.paste(r, (0, y))
        y += r.height
    return out


def main() -> None:
    """Parse arguments and write the montage."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("docs/img/synthetic_montage.png"))
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    build(args.seed).save(args.out, optimize=True)
    print(args.out)


if __name__ == "__main__":
    main()
