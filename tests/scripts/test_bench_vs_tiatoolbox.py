"""The side-by-side benchmark's arithmetic (the benchmark itself needs TIAToolbox; CI skips it)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_vs_tiatoolbox.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_vs_tiatoolbox", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_parse_result_line_takes_the_last(bench: ModuleType) -> None:
    out = 'noise\nRESULT {"tiles": 1}\nmore\nRESULT {"tiles": 707, "total_s": 22.6}\n'
    assert bench.parse_result_line(out) == {"tiles": 707, "total_s": 22.6}
    with pytest.raises(ValueError, match="no 'RESULT"):
        bench.parse_result_line("Traceback ...\n")


def test_tia_seconds_per_mm2(bench: ModuleType) -> None:
    # 707 patches of 224 px at 0.5 µm/px = 707 × 0.112² mm² = 8.868 mm² (the figure)
    s_mm2, area = bench.tia_s_per_mm2({"tiles": 707, "total_s": 22.6}, 224, 0.5)
    assert area == pytest.approx(8.8685, abs=1e-3)
    assert s_mm2 == pytest.approx(22.6 / 8.8685, rel=1e-4)
    with pytest.raises(ValueError, match="0 patches"):
        bench.tia_s_per_mm2({"tiles": 0, "total_s": 1.0}, 224, 0.5)


def test_atc_seconds_per_mm2(bench: ModuleType) -> None:
    report = {"tissue": {"area_mm2": 7.85}, "provenance": {"durations_s": {"total": 35.4}}}
    s_mm2, area = bench.atc_s_per_mm2(json.loads(json.dumps(report)))
    assert (round(s_mm2, 3), area) == (4.510, 7.85)


def test_summary_ratio_is_tia_over_atc(bench: ModuleType) -> None:
    rounds = [
        {"tia_s_per_mm2": 2.5, "atc_s_per_mm2": 4.6},
        {"tia_s_per_mm2": 2.4, "atc_s_per_mm2": 4.5},
        {"tia_s_per_mm2": 3.0, "atc_s_per_mm2": 1.5},
    ]
    s = bench.summarise(rounds)
    assert s["rounds"] == 3
    assert (s["tia_s_per_mm2"], s["atc_s_per_mm2"]) == (2.5, 4.5)
    assert s["ratio"] == pytest.approx(2.5 / 4.5, abs=1e-3)  # < 1: atc-wsi costs more per mm²
    assert s["ratio_per_round"] == [0.543, 0.533, 2.0]
    assert s["tia_s_per_mm2_range"] == [2.4, 3.0]
    with pytest.raises(ValueError):
        bench.summarise([])
