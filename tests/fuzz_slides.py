"""Seeded mutations of the real slides in ../shared/data/slides, and a runner that pushes each
mutant through ``open_slide`` + tissue + one analysis in a separate, restartable process.

Run as a script (``python tests/fuzz_slides.py``) it is the worker: it reads one JSON case per line
on stdin and answers one JSON line per case on stdout.
"""

from __future__ import annotations

import json
import os
import random
import select
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SLIDES = REPO.parent / "shared" / "data" / "slides"

#: (source, mpp override, weight): the real files the mutants are made from.
SOURCES: tuple[tuple[str, float | None, int], ...] = (
    ("CMU-1-Small-Region.svs", None, 3),
    ("openslide-fixtures/small.svs", None, 3),
    ("openslide-fixtures/boxes.tiff", 0.5, 3),
    ("pathml/small_HE_levels.tiff", 0.5, 3),
    ("dicom/cmu-1-small-region", None, 2),
)
#: "small budget" of the fuzz runs: the tissue mask of CMU (6.6 Mpx, one level) fits.
BUDGET_PX = 8_000_000
_TAGS = {"width": 256, "length": 257, "tile_width": 322, "tile_length": 323}
_OFFSETS, _COUNTS = (324, 273), (325, 279)  # tile or strip offsets / byte counts
_ODD_DIMS = (0, 1, 2, 17, 65_535, 999_999, 1_000_001, 2**31 - 1, 2**32 - 1)
_ODD_TILES = (0, 1, 15, 16, 17, 48, 4096, 65_535, 65_536, 2**31)


@dataclass(frozen=True)
class Case:
    """One mutant: where it is, what was done, and the mpp to pass."""

    name: str
    path: Path
    mutation: str
    mpp: float | None


@dataclass(frozen=True)
class _Field:
    at: int
    fmt: str  # struct format of one value, byte order included
    count: int


def _tiff_fields(path: Path) -> tuple[list[tuple[int, int]], dict[str, list[_Field]]]:
    """Byte ranges of the header and IFDs, and the positions of the interesting tag values."""
    import tifffile

    regions: list[tuple[int, int]] = [(0, 16)]
    fields: dict[str, list[_Field]] = {k: [] for k in (*_TAGS, "offsets", "counts")}
    with tifffile.TiffFile(path) as tif:
        order = tif.byteorder
        entry_size, count_size = (20, 8) if tif.is_bigtiff else (12, 2)
        value_at = 12 if tif.is_bigtiff else 8
        for page in tif.pages:
            n = len(page.tags)  # type: ignore[union-attr]
            regions.append((page.offset, page.offset + count_size + n * entry_size + 8))
            for tag in page.tags.values():  # type: ignore[union-attr]
                size = {3: 2, 4: 4, 16: 8}.get(tag.dtype, 0)
                if not size:
                    continue
                fmt = order + {2: "H", 4: "I", 8: "Q"}[size]
                inline = tag.count * size <= (8 if tif.is_bigtiff else 4)
                at = tag.offset + value_at if inline else tag.valueoffset
                for key, code in _TAGS.items():
                    if tag.code == code:
                        fields[key].append(_Field(at, fmt, 1))
                if tag.code in _OFFSETS:
                    fields["offsets"].append(_Field(at, fmt, tag.count))
                if tag.code in _COUNTS:
                    fields["counts"].append(_Field(at, fmt, tag.count))
    return regions, fields


def _put(data: bytearray, f: _Field, index: int, value: int) -> None:
    size = struct.calcsize(f.fmt)
    value = min(value, 2 ** (8 * size) - 1)
    data[f.at + index * size : f.at + (index + 1) * size] = struct.pack(f.fmt, value)


def _flip(data: bytearray, rng: random.Random, lo: int, hi: int, n: int) -> None:
    hi = min(hi, len(data))
    for _ in range(n):
        if hi > lo:
            data[rng.randrange(lo, hi)] ^= 1 << rng.randrange(8)


def mutate_tiff(src: bytes, path: Path, rng: random.Random) -> tuple[bytes, str]:
    """Return a mutant of the TIFF bytes ``src`` (written at ``path`` for parsing) and its label."""
    regions, fields = _tiff_fields(path)
    data = bytearray(src)
    kind = rng.choice(
        ("flip_header", "flip_tables", "truncate", "dims", "tile_size", "past_end", "counts")
    )
    if kind == "flip_header":
        lo, hi = rng.choice(regions)
        _flip(data, rng, lo, hi, rng.randint(1, 8))
    elif kind == "flip_tables" and fields["offsets"] + fields["counts"]:
        f = rng.choice(fields["offsets"] + fields["counts"])
        _flip(data, rng, f.at, f.at + f.count * struct.calcsize(f.fmt), rng.randint(1, 8))
    elif kind in ("dims", "tile_size"):
        keys = ("width", "length") if kind == "dims" else ("tile_width", "tile_length")
        choices = [f for k in keys for f in fields[k]]
        if choices:
            odd = _ODD_DIMS if kind == "dims" else (*_ODD_TILES, rng.randint(2, 9999))
            value = rng.choice(odd)
            _put(data, rng.choice(choices), 0, value)
    elif kind == "past_end" and fields["offsets"]:
        f = rng.choice(fields["offsets"])
        for _ in range(rng.randint(1, max(1, f.count))):
            _put(data, f, rng.randrange(f.count), len(src) + rng.randint(0, 1 << 20))
    elif kind == "counts" and fields["counts"]:
        f = rng.choice(fields["counts"])
        _put(data, f, rng.randrange(f.count), rng.choice((0, 1, 2**31, 2**32 - 1)))
    else:
        kind = "truncate"
    if kind == "truncate":
        cut = rng.choice((rng.randrange(len(src)), rng.randrange(min(len(src), 4096))))
        return bytes(data[:cut]), f"truncate@{cut}"
    return bytes(data), kind


def mutate_bytes(src: bytes, rng: random.Random) -> tuple[bytes, str]:
    """Mutate a non-TIFF file (a DICOM instance): header flips, anywhere flips, truncation."""
    data = bytearray(src)
    kind = rng.choice(("flip_header", "flip_any", "truncate"))
    if kind == "flip_header":
        _flip(data, rng, 0, 2048, rng.randint(1, 8))
    elif kind == "flip_any":
        _flip(data, rng, 0, len(data), rng.randint(1, 32))
    else:
        cut = rng.randrange(len(src))
        return bytes(data[:cut]), f"truncate@{cut}"
    return bytes(data), kind


def make_cases(out: Path, n: int, seed: int) -> Iterator[Case]:
    """Write ``n`` seeded mutants under ``out``, yielding each as it is written."""
    rng = random.Random(seed)
    weighted = [s for s in SOURCES for _ in range(s[2])]
    for i in range(n):
        rel, mpp, _ = rng.choice(weighted)
        src = SLIDES / rel
        case_dir = out / f"case-{i:04d}"
        case_dir.mkdir(parents=True)
        if src.is_dir():  # a DICOM series: mutate one instance of a copy of the folder
            target_dir = case_dir / src.name
            shutil.copytree(src, target_dir)
            victim = rng.choice(sorted(target_dir.iterdir()))
            data, kind = mutate_bytes(victim.read_bytes(), rng)
            victim.write_bytes(data)
            yield Case(f"{i:04d}", target_dir, f"{rel}:{victim.name}:{kind}", mpp)
            continue
        target = case_dir / src.name
        shutil.copyfile(src, target)
        data, kind = mutate_tiff(src.read_bytes(), target, rng)
        target.write_bytes(data)
        yield Case(f"{i:04d}", target, f"{rel}:{kind}", mpp)


class Runner:
    """Runs cases in a worker process; a case over ``timeout_s`` or a dead worker is recorded
    (``hang`` / ``crash``) and the worker restarted."""

    def __init__(self, log: Path, timeout_s: float = 10.0) -> None:
        self.log, self.timeout_s = log, timeout_s
        self.proc: subprocess.Popen[bytes] | None = None

    def _start(self) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
        with open(self.log, "ab") as err:
            proc = subprocess.Popen(
                [sys.executable, __file__],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                env=env,
            )
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        assert ready and proc.stdout.readline().strip() == b"ready", "fuzz worker did not start"
        return proc

    def run(self, case: Case) -> dict[str, Any]:
        """Run one case; return ``{"outcome": ok|typed|untyped|hang|crash, ...}``."""
        if self.proc is None or self.proc.poll() is not None:
            self.proc = self._start()
        proc = self.proc
        assert proc.stdin is not None and proc.stdout is not None
        t0 = time.monotonic()
        proc.stdin.write((json.dumps({"path": str(case.path), "mpp": case.mpp}) + "\n").encode())
        proc.stdin.flush()
        ready, _, _ = select.select([proc.stdout], [], [], self.timeout_s)
        seconds = time.monotonic() - t0
        if not ready:
            proc.kill()
            proc.wait(10)
            self.proc = None
            return {"outcome": "hang", "seconds": seconds}
        line = proc.stdout.readline()
        if not line:
            code = proc.wait(10)
            self.proc = None
            return {"outcome": "crash", "returncode": code, "seconds": seconds}
        result: dict[str, Any] = json.loads(line)
        result["seconds"] = seconds
        return result

    def close(self) -> None:
        """Stop the worker."""
        if self.proc is not None and self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(30)


def _worker() -> None:  # pragma: no cover - runs in the subprocess
    import resource
    import traceback

    resource.setrlimit(resource.RLIMIT_AS, (12 << 30, 12 << 30))  # runaway allocation: an error
    from models.analysis import analyze_slide
    from models.settings import PipelineSettings
    from wsi.errors import WsiError

    settings = PipelineSettings.model_validate(
        {
            "analyses": ["pattern"],
            "slide": {"max_stage_read_px": BUDGET_PX},
            "engine": {"num_workers": 0, "batch_size": 16, "bounded_heap": False},
        }
    )
    print("ready", flush=True)
    for line in sys.stdin:
        case = json.loads(line)
        try:
            result = analyze_slide(case["path"], settings, mpp_override=case["mpp"])
            tiles = result.report["qc"]["analyses"]["pattern"].get("tiles", 0)
            answer: dict[str, Any] = {"outcome": "ok", "tiles": tiles}
        except WsiError as exc:
            answer = {"outcome": "typed", "error": type(exc).__name__, "message": str(exc)}
        except BaseException as exc:
            answer = {
                "outcome": "untyped",
                "error": type(exc).__name__,
                "message": traceback.format_exc(),
            }
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    _worker()
