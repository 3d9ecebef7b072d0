"""report.html detection gallery: the extreme detections of each point set, read from the slide."""

from __future__ import annotations

import base64
import io
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from outputs_factory import SLIDE, make_outputs
from PIL import Image

from workers.report import OutputSettings, write_outputs
from workers.report.gallery import build_galleries, gallery_html, pick_extremes
from wsi import open_slide
from wsi.results import PointSet, SlideOutputs


def _with_scores(outputs: SlideOutputs, scores: np.ndarray) -> SlideOutputs:
    points = [
        replace(p, scores=scores.astype(np.float32)) if p.name == "Macrophage" else p
        for p in outputs.points
    ]
    return replace(outputs, points=points)


def test_pick_extremes_orders_and_never_shares_a_point() -> None:
    s = np.array([0.5, 0.9, 0.1, 0.7, 0.3], np.float32)
    assert pick_extremes(s, 2) == ([1, 3], [2, 4])
    high, low = pick_extremes(s, 4)
    assert high == [1, 3, 0, 4] and low == [2]
    assert pick_extremes(np.zeros(0, np.float32), 3) == ([], [])


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> tuple[SlideOutputs, str]:
    outputs = make_outputs()
    n = len(next(p for p in outputs.points if p.name == "Macrophage").scores)
    outputs = _with_scores(outputs, np.linspace(0.05, 0.95, n)[::-1].copy())
    out = tmp_path_factory.mktemp("gallery")
    paths = write_outputs(outputs, out, SLIDE, settings=OutputSettings(gallery_per_side=3))
    return outputs, paths["report_html"].read_text(encoding="utf-8")


def _rows(html: str, name: str) -> dict[str, list[tuple[float, Image.Image]]]:
    sec = html.split(f"<h3>{name}:")[1].split("<h3>")[0].split("<h2>")[0]
    rows = {}
    for label, body in re.findall(r"data-row='(\w+)'>(.*?)</div>", sec):
        cells = re.findall(r"src='data:image/png;base64,([^']+)'><figcaption>([\d.]+)<br>", body)
        rows[label] = [(float(s), Image.open(io.BytesIO(base64.b64decode(b)))) for b, s in cells]
    return rows


def test_gallery_shows_highest_then_lowest_scores(page: tuple[SlideOutputs, str]) -> None:
    outputs, html = page
    assert "Detections to check" in html
    mac = next(p for p in outputs.points if p.name == "Macrophage")
    rows = _rows(html, "Macrophage")
    want = np.sort(mac.scores)
    assert [s for s, _ in rows["highest"]] == pytest.approx(want[::-1][:3], abs=0.006)
    assert [s for s, _ in rows["lowest"]] == pytest.approx(want[:3], abs=0.006)
    for _, im in rows["highest"] + rows["lowest"]:
        assert im.size == (48, 48)  # 24 µm at 0.5 µm/px
    # mitoses get their own gallery (12 + 3 points: fewer than 2 × 3 tripolar, split)
    assert len(_rows(html, "Mitosis: Tripolar")["highest"]) == 3


def test_gallery_crop_is_the_slide_around_the_detection() -> None:
    outputs = make_outputs()
    mac = next(p for p in outputs.points if p.name == "Macrophage")
    one = replace(outputs, points=[PointSet("Macrophage", mac.l0_xy[:1], np.ones(1, np.float32))])
    galleries, note = build_galleries(one, SLIDE, names=("Macrophage",), per_side=2)
    assert note == "" and len(galleries) == 1 and len(galleries[0].highest) == 1
    assert galleries[0].lowest == []
    crop = np.asarray(Image.open(io.BytesIO(galleries[0].highest[0].png)).convert("RGB"))
    x, y = mac.l0_xy[0]
    with open_slide(SLIDE) as slide:
        half = round(12.0 / slide.mpp)
        ref = slide.read_region((round(x) - half, round(y) - half), 0, (2 * half, 2 * half))
    ref_small = np.asarray(Image.fromarray(ref).resize((48, 48), Image.Resampling.BILINEAR))
    corner = (slice(0, 8), slice(0, 8))  # away from the drawn ring
    assert np.abs(crop[corner].astype(int) - ref_small[corner].astype(int)).mean() < 12


def test_gallery_of_an_unreadable_slide_is_a_note(tmp_path: Path) -> None:
    bad = tmp_path / "broken.svs"
    bad.write_bytes(b"not a slide")
    galleries, note = build_galleries(make_outputs(), bad, names=("Macrophage",))
    assert galleries == [] and "unavailable" in note
    assert "unavailable" in gallery_html(galleries, note)
    assert gallery_html([], "") == ""
