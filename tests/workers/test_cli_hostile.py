"""The CLI facing odd conditions: the API down, the giant slide, a terminal or a pipe."""

from __future__ import annotations

import os
import pty
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.hostile_files import write_repeated_tile_tiff

REPO = Path(__file__).resolve().parents[2]
CMU = REPO.parent / "shared" / "data" / "slides" / "CMU-1-Small-Region.svs"
CLI = [sys.executable, "-c", "from workers.cli import main; main()"]


def _env(tmp: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "ATC_OUTPUT_ROOT": str(tmp / "out"),
        "OMP_NUM_THREADS": "1",
    }


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("command", [["submit", "x.svs"], ["jobs"]])
def test_api_down_is_one_line_and_exit_2(tmp_path: Path, command: list[str]) -> None:
    api = f"http://127.0.0.1:{_closed_port()}"
    out = subprocess.run(
        [*CLI, *command, "--api", api, "--token", "t"],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ApiUnreachableError:"), out.stderr
    assert api in lines[0] and "Traceback" not in out.stderr


def test_giant_slide_is_refused_with_one_line_in_seconds(tmp_path: Path) -> None:
    giant = write_repeated_tile_tiff(tmp_path / "giant.tif", 900_000, 900_000)
    t0 = time.monotonic()
    out = subprocess.run(
        [*CLI, "analyze", str(giant), "--out", str(tmp_path / "o"), "--analyses", "pattern"],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and "ReadBudgetError" in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert time.monotonic() - t0 < 30
    assert not (tmp_path / "o" / "report.json").exists()


def _run_on_pty(cmd: list[str], env: dict[str, str], timeout: float) -> tuple[int, str]:
    main, secondary = pty.openpty()
    proc = subprocess.Popen(cmd, env=env, stdin=secondary, stdout=secondary, stderr=secondary)
    os.close(secondary)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 0.2)
        if ready:
            try:
                data = os.read(main, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    os.close(main)
    return proc.wait(30), b"".join(chunks).decode(errors="replace")


@pytest.mark.slow
@pytest.mark.skipif(not CMU.is_file(), reason="shared data not present")
def test_analyze_draws_progress_on_a_terminal_and_stays_quiet_in_a_pipe(tmp_path: Path) -> None:
    args = [*CLI, "analyze", str(CMU), "--analyses", "pattern", "--out"]
    env = {**_env(tmp_path), "TERM": "xterm", "COLUMNS": "120"}
    rc, screen = _run_on_pty([*args, str(tmp_path / "tty")], env, 300)
    assert rc == 0, screen
    assert "tissue" in screen and "pattern" in screen and "━" in screen, screen
    piped = subprocess.run(
        [*args, str(tmp_path / "pipe")], env=env, capture_output=True, text=True, timeout=300
    )
    assert piped.returncode == 0, piped.stderr
    assert "━" not in piped.stderr + piped.stdout  # no bar, only the summary
    assert "tissue" in piped.stdout
