"""Validation on a lab's annotated slides: analyse each slide, score it against its annotations.

The figures are the project's own (``models.training.metrics``, ``models.cells.matching``):
pattern tile macro-F1, necrosis Dice and area error, mitosis F1 (one-to-one within 7.5 µm) and
tripolar recall, TAM density error. Sparse annotation is honoured: pattern tiles count only where
one annotated class covers at least half the tile; necrosis pixels only where annotated (or
"Fully annotated"); mitosis false positives and TAM densities only inside "Fully annotated"
regions (without one, mitosis precision and F1 are not reported).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import shapely
from numpy.typing import NDArray
from shapely.geometry import MultiPolygon, Polygon

from models.errors import InvalidSettingsError
from models.settings import PipelineSettings
from models.training.annotated import AnnotatedSlide, box_coverage
from models.training.metrics import confusion, dice, macro_f1
from wsi.annotations import MACROPHAGE, UNANNOTATED, SlideAnnotations, rasterise
from wsi.results import SlideOutputs
from wsi.taxonomy import MITOSIS_DISPLAY, PATTERN_CLASSES, TUMOUR_PATTERNS

#: Analyses scored, in order; each needs the named analysis to run.
EVAL_TASKS: tuple[str, ...] = ("pattern", "necrosis", "mitosis", "tam")
MATCH_RADIUS_UM = 7.5
NECROSIS_RASTER_UM = 4.0
MIN_TILE_SHARE = 0.5


def tasks_of(items: Sequence[AnnotatedSlide]) -> list[str]:
    """Tasks the annotations can score: regions → pattern and necrosis; mitosis points →
    mitosis; macrophage points inside "Fully annotated" regions → tam."""
    out = []
    if any(i.ann.regions for i in items):
        out += ["pattern", "necrosis"]
    if any(c.startswith("mitosis") for i in items for c in i.ann.point_classes):
        out.append("mitosis")
    if any(i.ann.complete is not None and MACROPHAGE in i.ann.point_classes for i in items):
        out.append("tam")
    return out


def with_models(settings: PipelineSettings, models: dict[str, str]) -> PipelineSettings:
    """Settings with the model reference of some analyses replaced (``{"pattern": ref}``)."""
    update = {}
    for analysis, ref in models.items():
        section = getattr(settings, analysis, None)
        if section is None or not hasattr(section, "model"):
            raise InvalidSettingsError(f"analysis {analysis!r} has no model to choose")
        update[analysis] = section.model_copy(update={"model": ref})
    return settings.model_copy(update=update)


def check_not_trained_on(settings: PipelineSettings, items: Sequence[AnnotatedSlide]) -> None:
    """Refuse to score slides that a selected model version was trained on (its card says).

    Raises:
        InvalidSettingsError: a slide name among a model card's training slides.
    """
    from models.registry import get_spec

    names = {i.name for i in items}
    for analysis in ("pattern", "necrosis", "mitosis", "tam"):
        spec = get_spec(getattr(settings, analysis).model)
        trained = {s.get("name") for s in spec.card().get("data", {}).get("train_slides", [])}
        both = sorted(names & trained)
        if both:
            raise InvalidSettingsError(
                f"{spec.ref} was trained on {both}; held-out figures need other slides "
                "(see the card's data.train_slides)"
            )


def _pattern(ann: SlideAnnotations, out: SlideOutputs) -> tuple[dict[str, Any], Any]:
    tiles = out.tiles
    n = len(PATTERN_CLASSES)
    if tiles is None:
        return {"tiles": 0}, np.zeros((n, n), np.int64)
    truth, share = box_coverage(ann, tiles.l0_xy, tiles.l0_size)
    keep = (truth >= 0) & (share >= MIN_TILE_SHARE)
    to_tax = np.array([PATTERN_CLASSES.index(c) for c in tiles.class_names])
    pred = to_tax[np.argmax(tiles.probs, axis=1)]
    cm = confusion(truth[keep], pred[keep], n)
    f1 = macro_f1(cm) if keep.any() else float("nan")
    acc = float(np.trace(cm) / cm.sum()) if cm.sum() else float("nan")
    return {"tiles": int(keep.sum()), "macro_f1": round(f1, 4), "accuracy": round(acc, 4)}, cm


def _polygons(out: SlideOutputs, name: str) -> Polygon | MultiPolygon | None:
    polys = []
    for pset in out.polygons:
        if pset.name != name:
            continue
        for rings in pset.polygons:
            g = shapely.make_valid(Polygon(rings[0][:, :2], [r[:, :2] for r in rings[1:]]))
            polys.append(g)
    if not polys:
        return None
    u = shapely.union_all(polys)
    parts = [g for g in getattr(u, "geoms", [u]) if isinstance(g, Polygon)]
    return MultiPolygon(parts) if len(parts) > 1 else (parts[0] if parts else None)


def _complete_mask(ann: SlideAnnotations, shape: tuple[int, int], l0_per_px: float) -> Any:
    if ann.complete is None:
        return np.zeros(shape, dtype=bool)
    box = shapely.box(0, 0, shape[1] * l0_per_px, shape[0] * l0_per_px)
    clipped = ann.complete.intersection(box)
    if clipped.is_empty:
        return np.zeros(shape, dtype=bool)
    only = SlideAnnotations("complete", {"background": clipped}, None, np.zeros((0, 2)), ())
    return rasterise(only, shape, l0_per_px) != UNANNOTATED


def _necrosis(ann: SlideAnnotations, out: SlideOutputs, dims: tuple[int, int]) -> dict[str, Any]:
    l0_per_px = NECROSIS_RASTER_UM / out.mpp
    shape = (int(np.ceil(dims[1] / l0_per_px)), int(np.ceil(dims[0] / l0_per_px)))
    truth_raster = rasterise(ann, shape, l0_per_px)
    evaluated = (truth_raster != UNANNOTATED) | _complete_mask(ann, shape, l0_per_px)
    truth = truth_raster == PATTERN_CLASSES.index("necrosis")
    geom = _polygons(out, "Necrosis")
    pred = np.zeros(shape, dtype=bool)
    if geom is not None:
        only = SlideAnnotations("pred", {"necrosis": geom}, None, np.zeros((0, 2)), ())
        pred = rasterise(only, shape, l0_per_px) != UNANNOTATED
    px_mm2 = (NECROSIS_RASTER_UM / 1000.0) ** 2
    t_mm2 = float((truth & evaluated).sum()) * px_mm2
    p_mm2 = float((pred & evaluated).sum()) * px_mm2
    err = (p_mm2 - t_mm2) / t_mm2 if t_mm2 > 0 else float("nan")
    return {
        "evaluated_mm2": round(float(evaluated.sum()) * px_mm2, 4),
        "dice": round(dice(pred & evaluated, truth & evaluated), 4),
        "truth_mm2": round(t_mm2, 4),
        "pred_mm2": round(p_mm2, 4),
        "area_error": round(err, 4),
    }


def _points(out: SlideOutputs, *names: str) -> NDArray[np.float64]:
    parts = [np.asarray(p.l0_xy, np.float64).reshape(-1, 2) for p in out.points if p.name in names]
    return np.concatenate(parts) if parts else np.zeros((0, 2))


def _mitosis(ann: SlideAnnotations, out: SlideOutputs) -> dict[str, Any]:
    from models.cells.matching import match_points

    r = MATCH_RADIUS_UM / out.mpp
    truth = ann.points_of("mitosis_typical", "mitosis_atypical", "mitosis_tripolar")
    pred = _points(out, *MITOSIS_DISPLAY.values())
    complete = ann.complete is not None
    m = match_points(pred, truth, r)
    matched = np.zeros(len(pred), dtype=bool)
    matched[m.pairs[:, 0]] = True
    fp = int((~matched & ann.in_complete(pred)).sum())  # unmatched outside: unknown, not FP
    row: dict[str, Any] = {"n_true": len(truth), "tp": m.tp, "fn": m.fn}
    row["recall"] = round(m.tp / len(truth), 4) if len(truth) else None
    if complete:
        prec = m.tp / (m.tp + fp) if m.tp + fp else float("nan")
        rec = row["recall"] or 0.0
        row.update(fp=fp, precision=round(prec, 4))
        row["f1"] = round(2 * prec * rec / (prec + rec), 4) if prec + rec > 0 else 0.0
    tri = ann.points_of("mitosis_tripolar")
    mt = match_points(_points(out, MITOSIS_DISPLAY["mitosis_tripolar"]), tri, r)
    row["tripolar_true"] = len(tri)
    row["tripolar_recall"] = round(mt.tp / len(tri), 4) if len(tri) else None
    return row


def _tam(ann: SlideAnnotations, out: SlideOutputs) -> dict[str, Any]:
    if ann.complete is None:
        return {"note": "needs a 'Fully annotated' region"}
    truth = ann.points_of(MACROPHAGE)
    pred = _points(out, "Macrophage")
    tissue = ann.complete
    tumour = [g for c, g in ann.regions.items() if c in TUMOUR_PATTERNS]
    if tumour:  # the project's basis: density per mm² of viable tumour (annotated here)
        tissue = tissue.intersection(shapely.union_all(tumour))
    area_mm2 = float(tissue.area) * (out.mpp / 1000.0) ** 2
    n_t = int(np.asarray(shapely.contains_xy(tissue, truth[:, 0], truth[:, 1])).sum())
    n_p = int(np.asarray(shapely.contains_xy(tissue, pred[:, 0], pred[:, 1])).sum())
    if area_mm2 <= 0:
        return {"note": "no annotated tissue inside the 'Fully annotated' region"}
    basis = "viable tumour" if tumour else "fully annotated area"
    d_t, d_p = n_t / area_mm2, n_p / area_mm2
    err = (d_p - d_t) / d_t if d_t > 0 else float("nan")
    return {
        "area_mm2": round(area_mm2, 4),
        "basis": basis,
        "truth_per_mm2": round(d_t, 2),
        "pred_per_mm2": round(d_p, 2),
        "density_error": round(err, 4),
    }


def evaluate_slides(
    items: Sequence[AnnotatedSlide],
    settings: PipelineSettings,
    tasks: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Analyse each slide with ``settings`` and score the ``tasks`` against its annotations.

    Returns:
        ``{"tasks", "models", "slides": [per-slide rows], "pooled": {...}}``; pooled pattern
        macro-F1 is over the summed confusion matrix, the other pooled figures are means of the
        per-slide values (mitosis: from summed counts).
    """
    from models.analysis import analyze_slide

    tasks = list(tasks or tasks_of(items))
    unknown = sorted(set(tasks) - set(EVAL_TASKS))
    if unknown:
        raise InvalidSettingsError(f"unknown tasks {unknown}; known: {', '.join(EVAL_TASKS)}")
    analyses = tuple(dict.fromkeys(["pattern", *tasks]))
    run = settings.model_copy(update={"analyses": analyses})
    n = len(PATTERN_CLASSES)
    cm_all = np.zeros((n, n), np.int64)
    rows, models = [], {}
    for item in items:
        res = analyze_slide(item.path, run, mpp_override=item.mpp)
        out = res.outputs
        rep = out.report
        for m in rep.get("provenance", {}).get("models", []):
            models[m["name"]] = f"{m['name']}@{m['version']}"
        dims = (int(rep["slide"]["width"]), int(rep["slide"]["height"]))
        row: dict[str, Any] = {"slide": item.name}
        if "pattern" in tasks:
            row["pattern"], cm = _pattern(item.ann, out)
            cm_all += cm
        if "necrosis" in tasks:
            row["necrosis"] = _necrosis(item.ann, out, dims)
        if "mitosis" in tasks:
            row["mitosis"] = _mitosis(item.ann, out)
        if "tam" in tasks:
            row["tam"] = _tam(item.ann, out)
        rows.append(row)
    return {"tasks": tasks, "models": models, "slides": rows, "pooled": _pooled(rows, cm_all)}


def _mean(rows: list[dict[str, Any]], task: str, key: str) -> float | None:
    vals = [r[task].get(key) for r in rows if task in r]
    vals = [v for v in vals if isinstance(v, float | int) and np.isfinite(v)]
    return round(float(np.mean(vals)), 4) if vals else None


def _pooled(rows: list[dict[str, Any]], cm: NDArray[np.int64]) -> dict[str, Any]:
    pooled: dict[str, Any] = {}
    if any("pattern" in r for r in rows):
        pooled["pattern_macro_f1"] = round(macro_f1(cm), 4) if cm.sum() else None
        pooled["pattern_confusion"] = {"classes": list(PATTERN_CLASSES), "rows": cm.tolist()}
    if any("necrosis" in r for r in rows):
        pooled["necrosis_dice_mean"] = _mean(rows, "necrosis", "dice")
        errs = [abs(r["necrosis"]["area_error"]) for r in rows if "necrosis" in r]
        errs = [e for e in errs if np.isfinite(e)]
        pooled["necrosis_worst_abs_area_error"] = round(max(errs), 4) if errs else None
    if any("mitosis" in r for r in rows):
        tp = sum(r["mitosis"]["tp"] for r in rows if "mitosis" in r)
        n_true = sum(r["mitosis"]["n_true"] for r in rows if "mitosis" in r)
        pooled["mitosis_recall"] = round(tp / n_true, 4) if n_true else None
        pooled["mitosis_f1_mean"] = _mean(rows, "mitosis", "f1")
        pooled["tripolar_recall_mean"] = _mean(rows, "mitosis", "tripolar_recall")
    if any("tam" in r for r in rows):
        pooled["tam_density_error_mean"] = _mean(rows, "tam", "density_error")
    return pooled
