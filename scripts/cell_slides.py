"""The synthetic slide sets of the cell-analysis evaluation, and how to make one.

Seeds never overlap training seeds (training slides: 801–840 and below; test slide 15).

- ``VALIDATION``: H&E, realistic mitosis densities; thresholds are chosen on these.
- ``VALIDATION_DENSE``: H&E at 25–40 mitoses per 2 mm² (the held-out weakness of 2026-11-26);
  diagnosis and classifier-stage decisions.
- ``VALIDATION_IHC``: CD68 / CD163 at low to high macrophage shares; IHC-route decisions.
- ``HELD_OUT``: the first held-out set (seeds 7 000 001–7 000 009). Viewed several times since
  2026-11-25, so no longer blind; kept for comparison with earlier figures.
- ``HELD_OUT_2``: a second held-out set (seeds 8 000 001–8 000 009), made on 2026-12-04 and run
  once, after every choice of that session had been made on the validation sets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _he(seed: int, mitoses: float, tam: float) -> dict[str, Any]:
    return {"seed": seed, "stain": "he", "mitoses_per_2mm2": mitoses, "tam_fraction": tam}


def _ihc(seed: int, stain: str, mitoses: float, tam: float) -> dict[str, Any]:
    return {"seed": seed, "stain": stain, "mitoses_per_2mm2": mitoses, "tam_fraction": tam}


VALIDATION: tuple[dict[str, Any], ...] = (
    _he(6_000_001, 10.0, 0.3),
    _he(6_000_002, 25.0, 0.5),
    _he(6_000_003, 40.0, 0.2),
    _he(6_000_004, 15.0, 0.4),
    _he(6_000_005, 30.0, 0.3),
    _he(6_000_006, 20.0, 0.6),
)

VALIDATION_IHC: tuple[dict[str, Any], ...] = (
    _ihc(6_000_007, "cd68", 10.0, 0.5),
    _ihc(6_000_008, "cd163", 10.0, 0.3),
    _ihc(6_000_009, "cd68", 10.0, 0.15),
    _ihc(6_000_010, "cd68", 10.0, 0.65),
    _ihc(6_000_011, "cd163", 10.0, 0.45),
)

VALIDATION_DENSE: tuple[dict[str, Any], ...] = (
    _he(6_000_012, 35.0, 0.3),
    _he(6_000_013, 40.0, 0.45),
    _he(6_000_014, 30.0, 0.25),
    _he(6_000_015, 35.0, 0.5),
    _he(6_000_016, 25.0, 0.35),
    _he(6_000_017, 38.0, 0.2),
)

HELD_OUT: tuple[dict[str, Any], ...] = (
    _he(7_000_001, 12.0, 0.3),
    _he(7_000_002, 30.0, 0.6),
    _ihc(7_000_003, "cd68", 8.0, 0.4),
    _he(7_000_004, 4.0, 0.15),
    _ihc(7_000_005, "cd163", 20.0, 0.5),
    _he(7_000_006, 25.0, 0.25),
    _he(7_000_007, 35.0, 0.45),
    _he(7_000_008, 20.0, 0.35),
    _ihc(7_000_009, "cd68", 10.0, 0.2),
)

#: Densities and shares spread like the first set; more CD68 (the issue's IHC target stain).
HELD_OUT_2: tuple[dict[str, Any], ...] = (
    _he(8_000_001, 15.0, 0.35),
    _ihc(8_000_002, "cd68", 12.0, 0.3),
    _he(8_000_003, 6.0, 0.2),
    _he(8_000_004, 28.0, 0.5),
    _ihc(8_000_005, "cd68", 20.0, 0.55),
    _he(8_000_006, 35.0, 0.3),
    _ihc(8_000_007, "cd163", 10.0, 0.25),
    _he(8_000_008, 22.0, 0.4),
    _ihc(8_000_009, "cd68", 15.0, 0.45),
)

SETS: dict[str, tuple[dict[str, Any], ...]] = {
    "validation": VALIDATION,
    "validation-ihc": VALIDATION_IHC,
    "validation-dense": VALIDATION_DENSE,
    "held-out": HELD_OUT,
    "held-out-2": HELD_OUT_2,
}

#: Folder-name prefix per set (the first sets' folders keep their historical names).
PREFIX = {
    "validation": "val-slide",
    "validation-ihc": "val-slide",
    "validation-dense": "val-slide",
    "held-out": "slide",
    "held-out-2": "slide",
}


def slide_folder(out: Path, name: str, cfg: dict[str, Any]) -> Path:
    """Folder of one slide of set ``name`` under ``out``."""
    return out / f"{PREFIX[name]}-{cfg['seed']}"


def ensure_slide(folder: Path, cfg: dict[str, Any], size: int) -> Path:
    """Generate the slide of ``cfg`` (``size`` × ``size`` level-0 px) unless it exists."""
    from wsi.synthetic.slide import generate_slide
    from wsi.synthetic.spec import SynthSpec

    if not (folder / "truth.json").is_file():
        generate_slide(SynthSpec(width=size, height=size, workers=2, **cfg), folder)
    return folder
