"""The viewer in a real headless Chromium (Debian's, driven by Playwright; no browser download).

Set ``ATC_UPDATE_DOCS_SCREENSHOTS=1`` to refresh ``docs/img/viewer*.png`` from this test.
"""

from __future__ import annotations

import io
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import Depends, Header, HTTPException
from outputs_factory import SLIDE, make_outputs, make_withheld_outputs
from PIL import Image

from workers.report import write_outputs
from workers.viewer import make_local_app, make_viewer_router
from workers.viewer.router import STATIC_DIR

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
SECURE_PREFIX = "/v1/jobs/{job_id}/viewer-secure"
TOKEN = "s3cret-token"


def require_token(authorization: str | None = Header(default=None)) -> None:
    if authorization != f"Bearer {TOKEN}":
        raise HTTPException(status_code=401, detail="token required")


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not CHROMIUM.exists():
        pytest.skip("needs /usr/bin/chromium (make system-deps)")
    if not (STATIC_DIR / "openseadragon" / "openseadragon.min.js").exists():
        pytest.skip("needs OpenSeadragon in workers/viewer/static (make viewer-assets)")
    outputs = make_outputs()
    outputs.maps = [
        m for m in outputs.maps if m.name in {"pattern_spindle", "necrosis", "tam_density"}
    ]
    out_dir = tmp_path_factory.mktemp("browser-out")
    write_outputs(outputs, out_dir, SLIDE)
    app = make_local_app(out_dir)
    # The same router as the API mounts it: data routes behind a bearer-token check.
    app.include_router(
        make_viewer_router(
            lambda _id: out_dir, prefix=SECURE_PREFIX, dependencies=[Depends(require_token)]
        )
    )
    with serve(app) as url:
        yield url


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run ``app`` with uvicorn on a free local port; yield its URL."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def shot(page: Any) -> np.ndarray:
    return np.asarray(
        Image.open(io.BytesIO(page.locator("#viewer").screenshot())).convert("RGB"), dtype=np.int16
    )


def settle(page: Any) -> None:
    page.wait_for_load_state("networkidle")
    page.wait_for_function("window.atcViewer.viewer.world.needsDraw() === false", timeout=15000)
    page.wait_for_timeout(300)


def test_viewer_draws_slide_overlays_and_markers(server_url: str) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            responses: list[tuple[str, int]] = []
            page.on("response", lambda r: responses.append((r.url, r.status)))
            page.goto(server_url + "/")
            page.wait_for_function("window.atcViewer && window.atcViewer.ready", timeout=20000)
            page.wait_for_function(
                "window.atcViewer.tilesLoaded['pattern_spindle'] > 0", timeout=20000
            )
            settle(page)
            assert page.locator("#status").text_content() == "Ready."
            with_overlay = shot(page)
            if os.environ.get("ATC_UPDATE_DOCS_SCREENSHOTS") == "1":
                DOCS_IMG.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(DOCS_IMG / "viewer.png"))

            # the slide is drawn: tissue (non-white, textured) covers a good part of the canvas
            non_white = (with_overlay.min(axis=2) < 200).mean()
            assert non_white > 0.15 and with_overlay.std() > 25, (non_white, with_overlay.std())
            slide_tiles = [u for u, s in responses if "/slide_files/" in u and s == 200]
            spindle_tiles = [u for u, s in responses if "/pattern_spindle_files/" in u and s == 200]
            assert slide_tiles and spindle_tiles
            assert not [u for u, s in responses if s >= 400]

            # markers: mitoses shown, macrophages hidden by default; necrosis and hotspot outlines
            # every mitosis carries the family class, each its subtype class too
            assert page.locator(".marker-mitosis").count() == 15
            assert page.locator(".marker-mitosis-typical").count() == 12
            assert page.locator(".marker-mitosis-tripolar").count() == 3
            assert page.locator(".marker-mitosis").first.is_visible()
            assert not page.locator(".marker-macrophage").first.is_visible()
            assert page.locator("#annotation-svg path").count() == 2

            # toggling the overlay off changes the picture where there is tissue
            page.locator("input[data-layer='pattern_spindle']").uncheck()
            settle(page)
            without = shot(page)
            diff = np.abs(with_overlay - without).sum(axis=2) > 30
            assert diff.mean() > 0.05, diff.mean()
            assert "Spindle" not in (page.locator("#legend").text_content() or "")

            # a second layer is fetched only when switched on, and drawn
            before = len([u for u, _ in responses if "/tam_density_files/" in u])
            page.locator("input[data-layer='tam_density']").check()
            settle(page)
            assert before == 0 and len([u for u, _ in responses if "/tam_density_files/" in u]) > 0
            tam = shot(page)
            assert (np.abs(tam - without).sum(axis=2) > 30).mean() > 0.05
            assert "cells/mm²" in (page.locator("#legend").text_content() or "")
            if os.environ.get("ATC_UPDATE_DOCS_SCREENSHOTS") == "1":
                page.screenshot(path=str(DOCS_IMG / "viewer-tam.png"))

            # opacity slider and marker toggles act
            page.locator("#opacity").fill("20")
            settle(page)
            assert (np.abs(shot(page) - tam).sum(axis=2) > 30).mean() > 0.02
            page.locator("input[data-marker='Mitosis: Typical']").uncheck()
            assert not page.locator(".marker-mitosis-typical").first.is_visible()
            assert page.locator(".marker-mitosis-tripolar").first.is_visible()
        finally:
            browser.close()


def test_viewer_sends_the_api_token(server_url: str) -> None:
    from playwright.sync_api import sync_playwright

    base = server_url + SECURE_PREFIX.format(job_id="j1") + "/"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 600})
            statuses: list[tuple[str, int]] = []
            page.on("response", lambda r: statuses.append((r.url, r.status)))
            page.goto(base + "#token=" + TOKEN)
            page.wait_for_function("window.atcViewer && window.atcViewer.ready", timeout=20000)
            page.wait_for_function(
                "window.atcViewer.tilesLoaded['pattern_spindle'] > 0", timeout=20000
            )
            assert "token" not in page.url  # dropped from the address bar
            assert not [u for u, s in statuses if s >= 400]
            assert any("/slide_files/" in u and s == 200 for u, s in statuses)
            # without the token the data routes refuse and the page says so
            other = browser.new_page()
            other.goto(base)
            other.wait_for_function("window.atcViewer && window.atcViewer.error", timeout=20000)
            assert "401" in (other.locator("#status").text_content() or "")
        finally:
            browser.close()


def test_viewer_names_withheld_counts(server_url: str, tmp_path: Path) -> None:
    """A slide judged "no tumour found": the panel says mitoses and TAMs were not assessed, and no
    mitosis or macrophage marker or hotspot circle is drawn (the necrosis outline is)."""
    from playwright.sync_api import sync_playwright

    write_outputs(make_withheld_outputs(), tmp_path, SLIDE)
    with serve(make_local_app(tmp_path)) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(url + "/")
            page.wait_for_function("window.atcViewer && window.atcViewer.ready", timeout=20000)
            notes = page.locator("#marker-toggles .not-assessed")
            assert notes.all_text_contents() == [
                "Mitoses: not assessed — no tumour was found on this slide",
                "Macrophages (TAM): not assessed — no tumour was found on this slide",
            ]
            assert notes.first.is_visible()
            assert page.locator(".marker").count() == 0
            assert page.locator("#annotation-svg path").count() == 1  # necrosis, no hotspot
            assert page.locator("input[data-layer='tam_density']").count() == 0
        finally:
            browser.close()
