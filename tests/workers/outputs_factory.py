"""Build SlideOutputs with known values over a real slide, for the report and viewer tests.

Not a conftest: imported by name (``from outputs_factory import make_outputs``) from the tests in
this folder. Every value is a simple known function so tests can check what the writers wrote.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from wsi import open_slide
from wsi.results import Circle, PointSet, PolygonSet, RasterMap, SlideOutputs, TileTable
from wsi.synthetic.classes import PATTERN_CLASSES

#: The real Aperio slide in ../shared/data beside the project root.
SLIDE = (
    Path(__file__).resolve().parents[3] / "shared" / "data" / "slides" / "CMU-1-Small-Region.svs"
)
TILE_L0 = 224.0


def tissue_grid(slide_path: Path, rows: int, cols: int) -> np.ndarray:
    """Return a (rows, cols) bool grid: True where the thumbnail shows tissue."""
    with open_slide(slide_path) as slide:
        thumb = slide.get_thumbnail(512).astype(np.float32).mean(axis=2)
        w, h = slide.dimensions
    th, tw = thumb.shape
    out = np.zeros((rows, cols), dtype=bool)
    for i in range(rows):
        for j in range(cols):
            y0, y1 = int(i * TILE_L0 / h * th), int(min(h, (i + 1) * TILE_L0) / h * th)
            x0, x1 = int(j * TILE_L0 / w * tw), int(min(w, (j + 1) * TILE_L0) / w * tw)
            cell = thumb[y0 : max(y1, y0 + 1), x0 : max(x1, x0 + 1)]
            out[i, j] = float((cell < 215).mean()) > 0.3
    return out


def pattern_probs(rows: int, cols: int, tissue: np.ndarray) -> np.ndarray:
    """Return (rows, cols, 6) probabilities: spindle rises left→right, necrosis top→bottom."""
    jj = np.tile(np.arange(cols) / max(cols - 1, 1), (rows, 1))
    ii = np.tile((np.arange(rows) / max(rows - 1, 1))[:, None], (1, cols))
    necrosis = 0.3 * ii
    probs = np.stack(
        [
            0.5 * (0.3 - necrosis) + 0.0,
            0.6 * jj,
            0.6 * (1 - jj),
            np.full_like(jj, 0.1),
            necrosis,
            0.5 * (0.3 - necrosis),
        ],
        axis=-1,
    )
    probs = np.clip(probs, 0, 1)
    probs /= probs.sum(axis=-1, keepdims=True)
    probs[~tissue] = np.eye(len(PATTERN_CLASSES))[0]
    return probs.astype(np.float32)


def _points(
    rng: np.random.Generator,
    n: int,
    center: tuple[float, float],
    spread: float,
    dims: tuple[int, int],
) -> np.ndarray:
    xy = rng.normal(center, spread, size=(n, 2))
    return np.clip(xy, 50, np.asarray(dims) - 50).astype(np.float64)


def make_outputs(slide_path: Path = SLIDE) -> SlideOutputs:
    """Return SlideOutputs for ``slide_path`` with known maps, points, polygons and a report."""
    with open_slide(slide_path) as slide:
        dims, mpp = slide.dimensions, slide.mpp
        facts = {
            "path": str(slide_path),
            "width": dims[0],
            "height": dims[1],
            "mpp": mpp,
            "vendor": slide.vendor,
            "objective_power": slide.objective_power,
            "fingerprint": slide.fingerprint,
        }
    rows, cols = math.ceil(dims[1] / TILE_L0), math.ceil(dims[0] / TILE_L0)
    tissue = tissue_grid(slide_path, rows, cols)
    probs = pattern_probs(rows, cols, tissue)
    maps = [
        RasterMap(f"pattern_{c}", probs[..., k], TILE_L0, "probability")
        for k, c in enumerate(PATTERN_CLASSES)
        if c != "background"
    ]
    maps.append(RasterMap("necrosis", (probs[..., 4] > 0.2).astype(np.float32), TILE_L0, "mask"))
    density = np.where(tissue, 40.0 + 12.0 * np.arange(cols)[None, :], 0.0).astype(np.float32)
    maps.append(RasterMap("tam_density", density, TILE_L0, "density", unit="cells/mm²", vmax=200.0))
    ij = np.argwhere(tissue)
    tiles = TileTable(
        l0_xy=(ij[:, ::-1] * TILE_L0).astype(np.int64),
        l0_size=TILE_L0,
        class_names=PATTERN_CLASSES,
        probs=probs[ij[:, 0], ij[:, 1]],
    )
    rng = np.random.default_rng(7)
    center = (dims[0] * 0.5, dims[1] * 0.45)
    points = [
        PointSet(
            "Mitosis: Typical",
            _points(rng, 12, center, 250, dims),
            rng.uniform(0.6, 1, 12).astype(np.float32),
        ),
        PointSet(
            "Mitosis: Tripolar", _points(rng, 3, center, 250, dims), np.full(3, 0.9, np.float32)
        ),
        PointSet("Macrophage", _points(rng, 40, center, 500, dims), np.full(40, 0.8, np.float32)),
    ]
    cx, cy = dims[0] * 0.3, dims[1] * 0.75
    necrosis_ring = np.array(
        [[cx - 200, cy - 150], [cx + 250, cy - 180], [cx + 300, cy + 200], [cx - 150, cy + 250]],
        dtype=np.float64,
    )
    polygons = [PolygonSet("Necrosis", [[necrosis_ring]])]
    radius = math.sqrt(2.0 / math.pi) * 1000.0 / mpp
    circles = [Circle("Mitosis hotspot 2 mm²", center, radius, {"count": 15.0, "area_mm2": 2.0})]
    report = make_report(facts, dims, mpp, probs, tissue, center, radius)
    return SlideOutputs(str(slide_path), dims, mpp, report, maps, points, polygons, circles, tiles)


def _flag(
    name: str, criterion: str, measured: float | None, threshold: float, unit: str
) -> dict[str, Any]:
    met = None if measured is None else measured >= threshold
    return {
        "name": name,
        "criterion": criterion,
        "measured": measured,
        "threshold": threshold,
        "unit": unit,
        "met": met,
    }


def make_report(
    facts: dict[str, Any],
    dims: tuple[int, int],
    mpp: float,
    probs: np.ndarray,
    tissue: np.ndarray,
    center: tuple[float, float],
    radius: float,
) -> dict[str, Any]:
    """Return a complete report dict consistent with the outputs above."""
    tile_mm2 = (TILE_L0 * mpp / 1000.0) ** 2
    areas = {
        c: float(probs[..., k][tissue].sum() * tile_mm2) for k, c in enumerate(PATTERN_CLASSES)
    }
    tumour = sum(areas[c] for c in ("spindle", "pleomorphic", "squamoid"))
    per_class = {
        c: {"area_mm2": round(areas[c], 4), "percent_of_tumour": round(100 * areas[c] / tumour, 2)}
        for c in ("spindle", "pleomorphic", "squamoid")
    }
    return {
        "schema_version": "1.2",
        "slide": facts,
        "tissue": {"area_mm2": round(float(tissue.sum()) * tile_mm2, 4)},
        "pattern": {
            "per_class": per_class,
            "mixed": True,
            "predominant": max(per_class, key=lambda c: per_class[c]["area_mm2"]),
        },
        "scope": {
            "verdict": "in_scope",
            "reason": "Tumour found on 1.20 mm² (60% of the tissue).",
            "rule": "tumour",
            "stain": "eosin",
            "mpp": mpp,
            "uncertain_tile_fraction": 0.05,
            "viable_tumour_mm2": round(tumour, 4),
        },
        "necrosis": {
            "area_mm2": round(areas["necrosis"], 4),
            "percent_of_tumour_bed": round(
                100 * areas["necrosis"] / (tumour + areas["necrosis"]), 2
            ),
        },
        "mitosis": {
            "count_total": 15,
            "count_typical": 12,
            "count_atypical": 3,
            "count_tripolar": 3,
            "percent_atypical": 20.0,
            "percent_tripolar": 20.0,
            "per_mm2_viable_tumour": round(15 / tumour, 3),
            "hotspot_2mm2": {
                "l0_center": list(center),
                "l0_radius": radius,
                "area_mm2": 2.0,
                "count": 15,
            },
            "mitoses_per_2mm2_hotspot": 15,
            "hpf_area_mm2": 0.237,
            "n_hpf": 10,
            "mitoses_per_10hpf": 15,
        },
        "tam": {"route": "he", "density_per_mm2": 95.0, "tam_fraction": 0.31},
        "grading": {
            "flags": [
                _flag("who2022_mitoses", "WHO 2022: ≥ 5 mitoses per 2 mm²", 15, 5, "mitoses"),
                _flag("who2022_necrosis", "WHO 2022: tumour necrosis", 0.13, 0.01, "mm²"),
                _flag("turin_mitoses", "Turin: ≥ 3 mitoses per 10 HPF", 15, 3, "mitoses"),
                _flag("tam_high", "TAM density ≥ 36 per mm²", None, 36, "cells/mm²"),
            ],
            "disclaimer": "Decision support only; not a diagnosis.",
        },
        "qc": {"unreadable_tiles": 0, "pen_fraction": 0.0, "blur_fraction": 0.02},
        "provenance": {
            "package_version": "0.1.0",
            "git_commit": None,
            "models": [{"name": "atc-pattern-v1", "version": "1", "sha256": "ab" * 32}],
            "config_hash": "c0ffee",
            "device": "cpu",
            "dtype": "float32",
            "durations_s": {"tissue": 0.4, "pattern": 12.5},
            "started_at": "2026-11-25T19:00:00Z",
            "finished_at": "2026-11-25T19:00:13Z",
        },
    }


#: The scope verdict of the benign skin slide (CMU-1-Small-Region, pattern 1.2.0).
NO_TUMOUR_REASON = (
    "No tumour was found: tumour-pattern tiles cover 0.029 mm² (4.8% of the pattern-classified "
    "tissue), below 0.15 mm² or 5%."
)


def make_withheld_outputs(slide_path: Path = SLIDE) -> SlideOutputs:
    """:func:`make_outputs` as on a slide judged "no tumour found" (report schema 1.2).

    The figures the scope verdict withholds are null with ``withheld``; there are no mitosis or
    macrophage points, no hotspot circle and no TAM density map (``models.analyses.scope``).
    """
    from workers.report.schema_cells import MITOSIS_COUNTS, TAM_COUNTS

    outputs = make_outputs(slide_path)
    note = f"no_tumour: {NO_TUMOUR_REASON}"
    rep = outputs.report
    rep["scope"] |= {"verdict": "no_tumour", "reason": NO_TUMOUR_REASON}
    rep["pattern"] |= {"predominant": None, "mixed": False, "withheld": note}
    rep["necrosis"] |= {"percent_of_tumour_bed": None, "withheld": note}
    rep["mitosis"] |= dict.fromkeys(MITOSIS_COUNTS) | {
        "withheld": note,
        "warnings": [
            "no tumour found on this slide (scope): mitoses were not counted (the 15 figure(s) "
            "detected in the tiles scanned were dropped)"
        ],
    }
    rep["tam"] |= dict.fromkeys(TAM_COUNTS) | {"withheld": note, "warnings": []}
    for flag in rep["grading"]["flags"]:
        flag |= {"met": None, "note": f"not assessed (no_tumour): {NO_TUMOUR_REASON}"}
        if "mitoses" in flag["name"] or flag["name"] == "tam_high":
            flag["measured"] = None
    outputs.points, outputs.circles = [], []
    outputs.maps = [m for m in outputs.maps if m.name != "tam_density"]
    return outputs
