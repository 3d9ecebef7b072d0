"""Screenshots of a synthetic slide and its results in two DICOM viewers, in headless chromium.

Everything shown comes out of a real Orthanc (DICOMweb, WSI and ServeFolders plugins) the script
starts on 127.0.0.1:

1. a synthetic slide (3072 × 3072 px, seed 19, the one of ``tests/dicomweb/test_pacs_synthetic``)
   is converted to DICOM with ``OrthancWSIDicomizer`` and stored in Orthanc;
2. the service finds it (two watcher polls), analyses it through the PACS path and stores its
   results back with STOW-RS (``run_job``, in-process);
3. chromium shows the slide in Orthanc's WSI viewer (``/wsi/app/viewer.html``) and the slide with
   the bulk annotations and the necrosis Segmentation in ``dicom-microscopy-viewer`` (the library
   behind Slim, from npm), served from the same Orthanc by ServeFolders;
4. the annotation counts the viewer loaded are checked against the job's report.json.

Usage (after ``make system-deps``; the viewer library is fetched with npm into .npm-cache)::

    .venv/bin/python scripts/dicom_viewer_screenshot.py --out docs/img
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.dicomweb.readback import series_by_modality  # noqa: E402
from tests.orthanc_server import (  # noqa: E402
    PASSWORD,
    SERVE_FOLDERS_PLUGIN,
    USER,
    WSI_PLUGIN,
    Orthanc,
    dicomize,
    start_orthanc,
    wsi_dataset,
)
from tests.slide_helpers import synthetic_cache  # noqa: E402
from workers.jobs import ServiceContext, build_context  # noqa: E402
from workers.pacs import PacsWatcher  # noqa: E402
from workers.settings import load_settings  # noqa: E402
from workers.store import SUCCEEDED  # noqa: E402
from workers.tasks import run_job  # noqa: E402

SEED, SIZE_PX, MPP, MITOSES_PER_2MM2 = 19, 3072, 0.25, 120.0
NPM_PACKAGES = ["dicom-microscopy-viewer@0.48.24", "dicomweb-client@0.11.3"]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD_ENV = "ATC_SCREENSHOT_ORTHANC_PASSWORD"
VIEWPORT_PX = (1200, 900)
SETTLE_MS = 2000


def viewer_assets(npm_cache: Path, www: Path) -> Path:
    """Install the viewer library with npm (once) and lay out the page's folder ``www``."""
    modules = npm_cache / "node_modules"
    if not (modules / "dicom-microscopy-viewer" / "dist").is_dir():
        npm_cache.mkdir(parents=True, exist_ok=True)
        if not (npm_cache / "package.json").exists():
            (npm_cache / "package.json").write_text('{"private": true}\n')
        cmd = ["npm", "install", "--silent", "--no-audit", "--no-fund", *NPM_PACKAGES]
        subprocess.run(cmd, cwd=npm_cache, check=True)
    dist = modules / "dicom-microscopy-viewer" / "dist"
    www.mkdir(parents=True, exist_ok=True)
    shutil.copy(dist / "dicomMicroscopyViewer.bundle.min.js", www)
    shutil.copytree(dist / "dynamic-import", www / "dynamic-import", dirs_exist_ok=True)
    shutil.copy(modules / "dicomweb-client" / "build" / "dicomweb-client.js", www)
    shutil.copy(REPO / "scripts" / "dicom_viewer" / "index.html", www)
    return www


def synthetic_series(work: Path) -> list[Path]:
    """Generate (or reuse) the synthetic slide and convert it to a DICOM series."""
    from wsi.synthetic import SynthSpec, generate_slide

    folder = synthetic_cache() / f"dicomize-{SEED}-{SIZE_PX}"
    if not (folder / "slide.tiff").is_file():
        spec = SynthSpec(
            seed=SEED, width=SIZE_PX, height=SIZE_PX, mpp=MPP, mitoses_per_2mm2=MITOSES_PER_2MM2
        )
        generate_slide(spec, folder)
    return dicomize(
        folder / "slide.tiff",
        work / "series",
        width=SIZE_PX,
        height=SIZE_PX,
        mpp=MPP,
        dataset=wsi_dataset(f"ATC-SYNTH-{SEED}"),
    )


def analyse_through_pacs(server: Orthanc, work: Path) -> tuple[ServiceContext, Path]:
    """Discover, analyse and store back the slide as the service does; return the job folder."""
    os.environ[PASSWORD_ENV] = PASSWORD
    archive = {
        "name": "orthanc",
        "base_url": server.dicomweb,
        "username": USER,
        "password_env": PASSWORD_ENV,
    }
    overrides = {
        "service": {"output_root": str(work / "svc"), "slide_roots": [str(work)]},
        "pacs": {"archives": [archive]},
        "engine": {"num_workers": 0},
    }
    ctx = build_context(load_settings(environ={}, overrides=overrides))
    watcher = PacsWatcher(ctx, ctx.settings.pacs.archives[0], lambda _job: None)
    watcher.poll_once()
    (job_id,) = watcher.poll_once()
    run_job(ctx, job_id)
    job = ctx.store.get_job(job_id)
    if job.state != SUCCEEDED:
        raise SystemExit(f"analysis failed: {job.reason_code}: {job.reason}")
    return ctx, Path(job.out_dir)


def shoot(
    url: str, out: Path, ready: str, log: list[str], done: Callable[[list[str]], bool]
) -> None:
    """Open ``url`` in headless chromium, wait for ``ready`` (a JS expression) and for
    ``done(log)``, then for the network to be quiet, and take a screenshot."""
    from playwright.sync_api import ViewportSize, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        context = browser.new_context(
            http_credentials={"username": USER, "password": PASSWORD},
            viewport=ViewportSize(width=VIEWPORT_PX[0], height=VIEWPORT_PX[1]),
        )
        page = context.new_page()
        page.on("console", lambda m: log.append(m.text))
        page.on("pageerror", lambda e: log.append(f"page error: {e}"))
        page.on("requestfinished", lambda r: log.append(f"fetched {r.url}"))
        page.goto(url)
        page.wait_for_function(ready, timeout=60_000)
        deadline = time.monotonic() + 60
        while not done(log):
            if time.monotonic() > deadline:
                raise SystemExit(f"{url}: not drawn within 60 s; console:\n" + "\n".join(log))
            page.wait_for_timeout(200)
        page.wait_for_load_state("networkidle")
        page.wait_for_timeout(SETTLE_MS)  # tiles and features drawn after the last response
        page.screenshot(path=str(out))
        browser.close()


def all_drawn(seg_series: str) -> Callable[[list[str]], bool]:
    """Done when every annotation group announced its features and a frame of the
    Segmentation series arrived."""

    def done(log: list[str]) -> bool:
        errors = [t for t in log if t.startswith(("page failed", "page error"))]
        if errors:
            raise SystemExit("\n".join(errors))
        groups = {m[1] for m in (re.match(r"group (\S+) ", t) for t in log) if m}
        added = {
            m[1]
            for m in (re.search(r'annotations for annotation group "(.+)"', t) for t in log)
            if m
        }
        seg = any(t.startswith("fetched") and seg_series in t and "/frames/" in t for t in log)
        return bool(groups) and groups <= added and seg

    return done


def check_loaded(log: list[str], job_dir: Path) -> dict[str, int]:
    """Return the annotations the viewer drew per group; fail unless each group's count equals
    its Number of Annotations and the job's report.json (necrosis: its GeoJSON polygons)."""
    report: dict[str, Any] = json.loads((job_dir / "report.json").read_text())
    geo = json.loads((job_dir / "annotations.geojson").read_text())
    groups = {
        m[1]: (int(m[2]), m[3]) for m in (re.match(r"group (\S+) (\d+) (.+)", t) for t in log) if m
    }
    drawn = {}
    for text in log:
        m = re.match(r'add n=(\d+) annotations for annotation group "(.+)"', text)
        if m and m[2] in groups:
            announced, label = groups[m[2]]
            if int(m[1]) != announced:
                raise SystemExit(f"viewer drew {m[1]} of the {announced} {label!r} annotations")
            drawn[label] = int(m[1])
    # a count the scope verdict withholds is null (no tumour found): no annotations drawn then
    mit = {k: v or 0 for k, v in report["mitosis"].items() if k.startswith("count_")}
    expected = {
        "Mitosis: Typical": mit["count_typical"],
        "Mitosis: Atypical": mit["count_atypical"] - mit["count_tripolar"],
        "Mitosis: Tripolar": mit["count_tripolar"],
        "Macrophage": report["tam"]["macrophages"] or 0,
        "Necrosis": sum(
            f["properties"]["classification"]["name"] == "Necrosis"
            and f["properties"]["objectType"] == "annotation"
            for f in geo["features"]
        ),
    }
    expected = {k: v for k, v in expected.items() if v}
    for label, n in expected.items():
        if drawn.get(label) != n:
            raise SystemExit(f"viewer drew {drawn.get(label)} {label!r}, report.json says {n}")
    if len(drawn) != len(groups):
        raise SystemExit(
            f"viewer drew {sorted(drawn)} of groups {sorted(g for _, g in groups.values())}"
        )
    return drawn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    ap.add_argument("--npm-cache", type=Path, default=REPO / ".npm-cache")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp one)")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="atc-dicom-viewer-"))
    www = viewer_assets(args.npm_cache, work / "www")
    files = synthetic_series(work)
    server = start_orthanc(
        work / "orthanc",
        plugins=[WSI_PLUGIN, SERVE_FOLDERS_PLUGIN],
        extra_config={"ServeFolders": {"/dmv": str(www)}},
    )
    try:
        ids = server.upload(files)
        ctx, job_dir = analyse_through_pacs(server, work)
        source = pydicom.dcmread(files[0], stop_before_pixels=True)
        found = series_by_modality(ctx, source.StudyInstanceUID)
        ann_uid = found["ANN"][0].series_uid
        necrosis_file = job_dir / "dicom" / "segmentation-necrosis.dcm"
        necrosis = str(pydicom.dcmread(necrosis_file, stop_before_pixels=True).SeriesInstanceUID)
        if necrosis not in {s.series_uid for s in found["SEG"]}:
            raise SystemExit(f"the necrosis Segmentation {necrosis} is not in Orthanc")
        with server.client() as c:
            orthanc_series = c.get(f"/instances/{ids[0]}").json()["ParentSeries"]
        args.out.mkdir(parents=True, exist_ok=True)
        log: list[str] = []
        shoot(
            f"{server.url}/wsi/app/viewer.html?series={orthanc_series}",
            args.out / "dicom-orthanc-wsi-viewer.png",
            "document.querySelectorAll('canvas').length > 0",
            log,
            lambda log: any("/wsi/tiles/" in t for t in log),
        )
        log.clear()
        query = (
            f"study={source.StudyInstanceUID}&slide={source.SeriesInstanceUID}"
            f"&ann={ann_uid}&seg={necrosis}"
        )
        shoot(
            f"{server.url}/dmv/index.html?{query}",
            args.out / "dicom-viewer-results.png",
            "document.title === 'rendered' || document.title === 'error'",
            log,
            all_drawn(necrosis),
        )
        (work / "console.log").write_text("\n".join(log))
        drawn = check_loaded(log, job_dir)
        print(f"job {job_dir}")
        print(f"viewer drew {drawn}; necrosis SEG series {necrosis}")
        for name in ("dicom-orthanc-wsi-viewer.png", "dicom-viewer-results.png"):
            print(f"wrote {args.out / name}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
