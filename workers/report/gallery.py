"""Detection galleries for report.html: the highest- and lowest-scoring cells of each point set.

A pathologist checks a cell detector by looking at what it was surest and least sure of. Each
crop is read from the slide around one detection (``crop_um`` µm wide, at the pyramid level
nearest ``crop_mpp``), marked with a centre ring, and embedded as a PNG. Memory stays small:
only ``2 × per_side`` crops per point set are read.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw

from wsi import WsiError, open_slide
from wsi.results import PointSet, SlideOutputs


@dataclass(frozen=True)
class GalleryCrop:
    """One detection crop.

    Attributes:
        l0_xy: level-0 (x, y) of the detection.
        score: its score (0–1).
        png: the crop as PNG bytes.
    """

    l0_xy: tuple[float, float]
    score: float
    png: bytes


@dataclass(frozen=True)
class Gallery:
    """The highest- and lowest-scoring detections of one point set."""

    name: str
    total: int
    highest: list[GalleryCrop]
    lowest: list[GalleryCrop]


def pick_extremes(scores: NDArray[np.float32], per_side: int) -> tuple[list[int], list[int]]:
    """Indices of the ``per_side`` highest scores (descending) and the ``per_side`` lowest
    (ascending); when there are fewer than ``2 × per_side`` points they are split, never shared."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    n_high = min(per_side, len(order))
    n_low = min(per_side, len(order) - n_high)
    high = [int(i) for i in order[:n_high]]
    low = [int(i) for i in order[len(order) - n_low :][::-1]]
    return high, low


def _crop_png(slide: object, l0_xy: tuple[float, float], crop_um: float, crop_mpp: float) -> bytes:
    from wsi.slide import Slide

    assert isinstance(slide, Slide)
    level, _ = slide.best_level_for_mpp(crop_mpp)
    down = slide.level_downsamples[level]
    size_l0 = crop_um / slide.mpp
    side = max(8, round(size_l0 / down))
    x0 = round(l0_xy[0] - size_l0 / 2)
    y0 = round(l0_xy[1] - size_l0 / 2)
    rgb = slide.read_region((x0, y0), level, (side, side))
    out = round(crop_um / crop_mpp)
    im = Image.fromarray(rgb).resize((out, out), Image.Resampling.BILINEAR)
    r = out * 0.22
    c = out / 2
    ImageDraw.Draw(im).ellipse((c - r, c - r, c + r, c + r), outline=(0, 200, 255), width=1)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def build_galleries(
    outputs: SlideOutputs,
    slide_path: str | Path,
    *,
    names: tuple[str, ...],
    per_side: int = 6,
    crop_um: float = 24.0,
    crop_mpp: float = 0.5,
) -> tuple[list[Gallery], str]:
    """Crops of the extreme detections of the point sets named in ``names``.

    Returns:
        the galleries (empty point sets give none) and a note when the slide cannot be read
        (then no galleries; the report is still written).
    """
    sets: list[PointSet] = [p for p in outputs.points if p.name in names and len(p.scores)]
    if not sets or per_side <= 0:
        return [], ""
    out = []
    try:
        with open_slide(slide_path, mpp_override=outputs.mpp) as slide:
            for ps in sets:
                high, low = pick_extremes(ps.scores, per_side)
                crops = {}
                for i in high + low:
                    xy = (float(ps.l0_xy[i, 0]), float(ps.l0_xy[i, 1]))
                    crops[i] = GalleryCrop(
                        xy, float(ps.scores[i]), _crop_png(slide, xy, crop_um, crop_mpp)
                    )
                out.append(
                    Gallery(
                        ps.name, len(ps.scores), [crops[i] for i in high], [crops[i] for i in low]
                    )
                )
    except WsiError as exc:
        return [], f"Detection gallery unavailable: {exc}"
    return out, ""


def gallery_html(galleries: list[Gallery], note: str = "") -> str:
    """Return the report section (empty string when there is nothing to show)."""
    if not galleries and not note:
        return ""
    parts = ["<h2>Detections to check</h2>"]
    if note:
        parts.append(f"<p class='sub'>{html.escape(note)}</p>")
    for g in galleries:
        parts.append(
            f"<h3>{html.escape(g.name)}: {g.total} detections</h3>"
            "<p class='sub'>Highest scores first row, lowest scores second row; each crop is "
            "centred on the detection (ring); level-0 x, y and score under it.</p>"
        )
        for label, crops in (("highest", g.highest), ("lowest", g.lowest)):
            if not crops:
                continue
            cells = "".join(
                "<figure class='cell'>"
                f"<img alt='{html.escape(g.name)} {label} score {c.score:.2f}' "
                f"src='data:image/png;base64,{base64.b64encode(c.png).decode('ascii')}'>"
                f"<figcaption>{c.score:.2f}<br>{c.l0_xy[0]:.0f}, {c.l0_xy[1]:.0f}</figcaption>"
                "</figure>"
                for c in crops
            )
            parts.append(f"<div class='gallery' data-row='{label}'>{cells}</div>")
    return "".join(parts)
