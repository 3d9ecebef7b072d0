"""The viewer router over a real output folder, through FastAPI's test client (no browser)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from fastapi import Depends, FastAPI, Header, HTTPException
from fastapi.testclient import TestClient
from outputs_factory import SLIDE, make_outputs, make_withheld_outputs
from PIL import Image
from typer.testing import CliRunner

from workers.report import write_outputs
from workers.report.settings import OutputSettings
from workers.viewer import make_local_app, make_viewer_router
from workers.viewer.folder import FolderCache, ViewerDataError
from wsi import open_slide
from wsi.export.colors import colormap_for

BASE = "/v1/jobs/local/viewer"


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    outputs = make_outputs()
    outputs.maps = [
        m for m in outputs.maps if m.name in {"pattern_spindle", "necrosis", "tam_density"}
    ]
    folder = tmp_path_factory.mktemp("viewer-out")
    write_outputs(outputs, folder, SLIDE)
    return folder


@pytest.fixture(scope="module")
def client(out_dir: Path) -> TestClient:
    return TestClient(make_local_app(out_dir))


def test_page_layers_and_static(client: TestClient) -> None:
    page = client.get("/", follow_redirects=True)
    assert page.status_code == 200 and str(page.url).endswith(f"{BASE}/")
    assert (
        "static/viewer.js" in page.text and "static/openseadragon/openseadragon.min.js" in page.text
    )
    assert client.get(BASE, follow_redirects=False).status_code == 307
    layers = client.get(f"{BASE}/layers.json").json()
    assert layers["slide"] == {"dzi": "slide.dzi", "blank": False} and (
        layers["width"],
        layers["height"],
    ) == (
        2220,
        2967,
    )
    assert [o["name"] for o in layers["overlays"]] == ["pattern_spindle", "necrosis", "tam_density"]
    assert [o["label"] for o in layers["overlays"]] == [
        "Spindle probability",
        "Necrosis mask",
        "TAM density",
    ]
    assert client.get(f"{BASE}/static/viewer.js").status_code == 200
    assert client.get(f"{BASE}/report.html").text.startswith("<!DOCTYPE html>")
    assert layers["not_assessed"] == []


def test_static_path_traversal_refused(client: TestClient) -> None:
    for path in ["..%2Frouter.py", "%2E%2E/%2E%2E/report/write.py", "nothere.js"]:
        assert client.get(f"{BASE}/static/{path}").status_code == 404, path


def test_slide_tiles_are_the_slide(client: TestClient) -> None:
    xml = client.get(f"{BASE}/slide.dzi").text
    assert 'Format="jpeg"' in xml and 'Width="2220" Height="2967"' in xml
    r = client.get(f"{BASE}/slide_files/12/1_2.jpeg")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    tile = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"), dtype=np.float32)
    with open_slide(SLIDE) as slide:
        region = slide.read_region((253, 507), 0, (256, 256)).astype(np.float32)
    assert tile.shape == region.shape and np.abs(tile - region).mean() < 4  # JPEG error only
    assert client.get(f"{BASE}/slide_files/12/40_2.jpeg").status_code == 404
    assert client.get(f"{BASE}/slide_files/13/0_0.jpeg").status_code == 404


def test_overlay_tiles_are_the_colour_mapped_map(client: TestClient) -> None:
    outputs = make_outputs()
    spindle = next(m for m in outputs.maps if m.name == "pattern_spindle")
    lut = colormap_for("pattern_spindle", "probability").lut
    xml = client.get(f"{BASE}/overlays/pattern_spindle.dzi").text
    assert 'Format="png"' in xml and 'Width="2220"' in xml
    r = client.get(f"{BASE}/overlays/pattern_spindle_files/12/2_3.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    rgba = np.asarray(Image.open(io.BytesIO(r.content)))
    z_x0, z_y0 = 2 * 254 - 1, 3 * 254 - 1  # tile origin in level-0 px (overlap 1)
    for l0_x, l0_y in [(600, 900), (700, 1000)]:
        i, j = int(l0_y // 224), int(l0_x // 224)
        code = round(float(spindle.values[i, j]) * 255)
        np.testing.assert_array_equal(rgba[l0_y - z_y0, l0_x - z_x0], lut[code])
    assert client.get(f"{BASE}/overlays/nope.dzi").status_code == 404


def test_markers_leave_out_tiles(client: TestClient) -> None:
    markers = client.get(f"{BASE}/markers.geojson").json()
    classes = {k: v["count"] for k, v in markers["classes"].items()}
    assert classes == {
        "Mitosis: Typical": 12,
        "Mitosis: Tripolar": 3,
        "Macrophage": 40,
        "Necrosis": 1,
        "Mitosis hotspot 2 mm²": 1,
    }
    assert len(markers["features"]) == sum(classes.values())


def test_withheld_counts_are_named_not_drawn(tmp_path: Path) -> None:
    """On a slide judged "no tumour found" the page says mitoses and TAMs were not assessed, and
    has no mitosis or macrophage markers, hotspot circle or TAM layer to show."""
    write_outputs(make_withheld_outputs(), tmp_path, SLIDE)
    c = TestClient(make_local_app(tmp_path))
    layers = c.get(f"{BASE}/layers.json").json()
    assert layers["not_assessed"] == [
        {"section": "mitosis", "text": "Mitoses: not assessed — no tumour was found on this slide"},
        {
            "section": "tam",
            "text": "Macrophages (TAM): not assessed — no tumour was found on this slide",
        },
    ]
    assert "tam_density" not in {o["name"] for o in layers["overlays"]}
    markers = c.get(f"{BASE}/markers.geojson").json()
    assert set(markers["classes"]) == {"Necrosis"}


def test_tiles_are_cached(out_dir: Path) -> None:
    cache = FolderCache(OutputSettings())
    app = FastAPI()
    app.include_router(make_viewer_router(lambda _id: out_dir, cache=cache))
    c = TestClient(app)
    first = c.get("/v1/jobs/x/viewer/slide_files/10/0_0.jpeg").content
    assert (cache.tiles.misses, cache.tiles.hits) == (1, 0)
    assert c.get("/v1/jobs/x/viewer/slide_files/10/0_0.jpeg").content == first
    assert (cache.tiles.misses, cache.tiles.hits) == (1, 1)


def test_router_mounts_per_job_under_the_api_prefix(out_dir: Path, tmp_path: Path) -> None:
    folders = {"job-1": out_dir}

    def resolve(job_id: str) -> Path:
        return folders[job_id]  # KeyError → 404

    app = FastAPI()
    app.include_router(make_viewer_router(resolve))
    c = TestClient(app)
    assert c.get("/v1/jobs/job-1/viewer/layers.json").status_code == 200
    missing = c.get("/v1/jobs/job-2/viewer/layers.json")
    assert missing.status_code == 404
    folders["empty"] = tmp_path
    assert "report.json" in c.get("/v1/jobs/empty/viewer/layers.json").json()["detail"]
    with pytest.raises(ValueError, match="job_id"):
        make_viewer_router(resolve, prefix="/viewer")


def test_data_routes_take_the_api_dependencies(out_dir: Path) -> None:
    def require_token(authorization: str | None = Header(default=None)) -> None:
        if authorization != "Bearer s3cret":
            raise HTTPException(status_code=401, detail="token required")

    app = FastAPI()
    app.include_router(
        make_viewer_router(lambda _id: out_dir, dependencies=[Depends(require_token)])
    )
    c = TestClient(app)
    base, auth = "/v1/jobs/j1/viewer", {"Authorization": "Bearer s3cret"}
    assert c.get(f"{base}/").status_code == 200  # the page and its scripts are open
    assert c.get(f"{base}/static/viewer.js").status_code == 200
    for route in [
        "layers.json",
        "markers.geojson",
        "report.html",
        "slide.dzi",
        "slide_files/10/0_0.jpeg",
        "overlays/necrosis.dzi",
    ]:
        assert c.get(f"{base}/{route}").status_code == 401, route
        assert c.get(f"{base}/{route}", headers=auth).status_code == 200, route


def test_missing_slide_gives_white_base_and_overlays(out_dir: Path, tmp_path: Path) -> None:
    c = TestClient(make_local_app(out_dir, slide_path=tmp_path / "gone.svs"))
    layers = c.get(f"{BASE}/layers.json").json()
    assert layers["slide"]["blank"] is True and "gone.svs" in layers["slide_error"]
    assert 'Width="2220" Height="2967"' in c.get(f"{BASE}/slide.dzi").text  # white stand-in
    white = Image.open(io.BytesIO(c.get(f"{BASE}/slide_files/12/0_0.jpeg").content))
    assert np.asarray(white).min() >= 250
    assert c.get(f"{BASE}/overlays/tam_density_files/9/0_0.png").status_code == 200


def test_slide_with_implausible_mpp_still_shown(out_dir: Path) -> None:
    # boxes.tiff states a DPI-derived 352 µm/px: the report's pixel size stands in for viewing
    boxes = SLIDE.parent / "openslide-fixtures" / "boxes.tiff"
    c = TestClient(make_local_app(out_dir, slide_path=boxes))
    assert c.get(f"{BASE}/layers.json").json()["slide"] == {"dzi": "slide.dzi", "blank": False}
    assert 'Width="300" Height="250"' in c.get(f"{BASE}/slide.dzi").text


def test_local_app_and_cli_refuse_non_output_folder(tmp_path: Path) -> None:
    with pytest.raises(ViewerDataError, match=r"report\.json"):
        make_local_app(tmp_path)
    from workers.cli import app

    result = CliRunner().invoke(app, ["view", str(tmp_path), "--port", "0"])
    assert result.exit_code == 2
    result = CliRunner().invoke(app, ["view", str(tmp_path)])
    assert result.exit_code == 2 and "report.json" in result.output


@pytest.mark.integration
def test_view_command_serves_the_folder(out_dir: Path) -> None:
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable,
        "-c",
        "from workers.cli import main; main()",
        "view",
        str(out_dir),
        "--port",
        str(port),
        "--slide",
        str(SLIDE),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/", follow_redirects=True, timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline, "atc-wsi view did not start"
                time.sleep(0.2)
        assert r.status_code == 200 and str(r.url).endswith(f"{BASE}/")
        layers = httpx.get(f"http://127.0.0.1:{port}{BASE}/layers.json", timeout=5).json()
        assert layers["slide"]["blank"] is False and len(layers["overlays"]) == 3
    finally:
        proc.terminate()
        proc.wait(timeout=10)
