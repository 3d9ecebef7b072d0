"""Write a synthetic whole-slide image with its ground truth, streaming by windows.

Level 0 is rendered in windows of ``WIN_W`` × ``WIN_H`` pixels (by worker processes when
``spec.workers > 1``); each window comes back JPEG-encoded as TIFF tiles, 2× reduced for level 1,
with its labels sampled onto the ≈ 2 µm/px label grid and with the truth points whose centres it
holds. Output folder: ``slide.tiff``, ``labels.tiff``, ``truth.geojson``, ``truth.json``,
``truth.npz`` (every object, for evaluation).
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from wsi.io import atomic_temp_path, commit_temp
from wsi.synthetic import _pyramid as PY
from wsi.synthetic._render import render_window
from wsi.synthetic._scene import BLOCK_UM, Scene, evict
from wsi.synthetic._stain import StainModel, stain_model
from wsi.synthetic.spec import SynthSpec, artefact_rates, scene_for
from wsi.synthetic.truth import write_truth

WIN_W = 1024
WIN_H = 512
U8 = NDArray[np.uint8]
F64 = NDArray[np.float64]


@dataclass
class _Window:
    col: int
    tiles: list[bytes]
    half: U8
    labels: U8
    points: F64


_STATE: dict[str, object] = {}


def _init(spec: SynthSpec) -> None:
    _STATE["spec"] = spec
    _STATE["scene"] = scene_for(spec)
    _STATE["stain"] = stain_model(spec.stain, spec.seed)


def _render(job: tuple[int, int, int]) -> _Window:
    """Render a window in a pool worker (state set by ``_init``)."""
    spec = _STATE["spec"]
    scene = _STATE["scene"]
    stain = _STATE["stain"]
    assert isinstance(spec, SynthSpec) and isinstance(scene, Scene)
    assert isinstance(stain, StainModel)
    return _render_window(spec, scene, stain, job)


def _render_window(
    spec: SynthSpec, scene: Scene, stain: StainModel, job: tuple[int, int, int]
) -> _Window:
    """Render window ``col`` at level-0 (x0, y0): tiles, level-1 copy, labels, objects."""
    col, x0, y0 = job
    w = min(WIN_W, spec.width - x0)
    h = min(WIN_H, spec.height - y0)
    evict(scene, int(np.floor(y0 * spec.mpp / BLOCK_UM)) - 2)
    r = render_window(scene, stain, artefact_rates(spec), x0, y0, w, h, spec.mpp, cache=True)
    f = spec.label_factor
    lab = r.labels[f // 2 :: f, f // 2 :: f]
    ny, nx = -(-h // f), -(-w // f)
    if lab.shape != (ny, nx):
        lab = np.pad(lab, ((0, ny - lab.shape[0]), (0, nx - lab.shape[1])), mode="edge")
    pts = r.points.copy()
    pts[:, 0] += x0
    pts[:, 1] += y0
    return _Window(col, PY.window_tiles(r.rgb, spec.jpeg_quality), PY.halve(r.rgb), lab, pts)


def _jobs(spec: SynthSpec) -> Iterator[tuple[int, int, int]]:
    for y0 in range(0, spec.height, WIN_H):
        for col, x0 in enumerate(range(0, spec.width, WIN_W)):
            yield col, x0, y0


class _Collector:
    """Consumes rendered windows band by band; yields level-0 tiles in TIFF order."""

    def __init__(self, spec: SynthSpec, windows: Iterator[_Window], spool: Path) -> None:
        self.spec = spec
        self.windows = windows
        self.spool = spool
        f = spec.label_factor
        self.labels = np.zeros((-(-spec.height // f), -(-spec.width // f)), np.uint8)
        self.points: list[F64] = []

    def tiles(self) -> Iterator[bytes]:
        """Yield level-0 tiles; each band's level-1 rows, labels and points are stored first
        (tifffile stops pulling after the last tile, so nothing may follow the last yield)."""
        ncols = -(-self.spec.width // WIN_W)
        f = self.spec.label_factor
        with open(self.spool, "wb") as spool:
            for y0 in range(0, self.spec.height, WIN_H):
                band = [next(self.windows) for _ in range(ncols)]
                spool.write(np.concatenate([w.half for w in band], axis=1).tobytes())
                spool.flush()
                ly = y0 // f
                for win in band:
                    lx = win.col * WIN_W // f
                    self.labels[ly : ly + win.labels.shape[0], lx : lx + win.labels.shape[1]] = (
                        win.labels
                    )
                    self.points.append(win.points)
                rows = -(-min(WIN_H, self.spec.height - y0) // PY.TILE)
                for r in range(rows):
                    for win in band:
                        per_row = len(win.tiles) // rows
                        yield from win.tiles[r * per_row : (r + 1) * per_row]


def _windows(spec: SynthSpec) -> Iterator[_Window]:
    jobs = list(_jobs(spec))
    workers = spec.workers
    if mp.current_process().daemon or len(jobs) < 4:
        workers = 1
    if workers == 1:
        scene, stain = scene_for(spec), stain_model(spec.stain, spec.seed)
        yield from (_render_window(spec, scene, stain, j) for j in jobs)
        return
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with ctx.Pool(workers, initializer=_init, initargs=(spec,)) as pool:
        yield from pool.imap(_render, jobs, chunksize=1)


def generate_slide(spec: SynthSpec, out_dir: str | Path) -> Path:
    """Render a synthetic slide and its ground truth into ``out_dir``.

    Args:
        spec: what the slide contains.
        out_dir: output folder (created); existing outputs are replaced atomically.

    Returns:
        The output folder, holding ``slide.tiff`` (pyramidal JPEG TIFF, OpenSlide generic-tiff
        with ``openslide.mpp-x/y``), ``labels.tiff``, ``truth.geojson``, ``truth.json`` and
        ``truth.npz``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = atomic_temp_path(out / "slide.tiff")
    spool = out / f".spool-{os.getpid()}.l1"
    try:
        coll = _Collector(spec, _windows(spec), spool)
        desc = f"atc-wsi synthetic slide seed={spec.seed} mpp={spec.mpp} stain={spec.stain}"
        dims = PY.write_pyramid(
            tmp, coll.tiles(), spec.width, spec.height, spec.mpp, spec.jpeg_quality, spool, desc
        )
        commit_temp(tmp, out / "slide.tiff")
    except BaseException:
        tmp.unlink(missing_ok=True)
        for p in out.glob(f".spool-{os.getpid()}.*"):
            p.unlink(missing_ok=True)
        raise
    points = np.concatenate(coll.points) if coll.points else np.zeros((0, 3))
    ltmp = atomic_temp_path(out / "labels.tiff")
    try:
        PY.write_label_pyramid(ltmp, coll.labels, float(spec.label_factor), spec.mpp)
        commit_temp(ltmp, out / "labels.tiff")
    except BaseException:
        ltmp.unlink(missing_ok=True)
        raise
    write_truth(out, spec, coll.labels, points, dims)
    return out
