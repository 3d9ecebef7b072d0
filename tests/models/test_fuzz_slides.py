"""Seeded fuzz corpus from the real slides: open_slide + tissue + one analysis (pattern) on a small
budget. No crash, no hang (each case ≤ 10 s), no traceback, every failure a typed ``WsiError``.

``ATC_FUZZ_CASES`` (default 300) and ``ATC_FUZZ_SEED`` (default 21) widen it, e.g.
``ATC_FUZZ_CASES=3000 pytest tests/models/test_fuzz_slides.py``; the figures are printed.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

import pytest

from tests.fuzz_slides import SLIDES, Runner, make_cases

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SLIDES.is_dir(), reason="shared slides not present"),
]

CASES = int(os.environ.get("ATC_FUZZ_CASES", "300"))
SEED = int(os.environ.get("ATC_FUZZ_SEED", "21"))


@pytest.mark.timeout(max(600, CASES * 12))
def test_fuzzed_slides_fail_typed_and_bounded(tmp_path: Path) -> None:
    log = tmp_path / "worker-stderr.log"
    runner = Runner(log, timeout_s=10.0)
    outcomes: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    bad: list[str] = []
    slowest = 0.0
    try:
        for case in make_cases(tmp_path / "corpus", CASES, SEED):
            result = runner.run(case)
            outcomes[result["outcome"]] += 1
            slowest = max(slowest, result["seconds"])
            if result["outcome"] == "typed":
                errors[result["error"]] += 1
            elif result["outcome"] != "ok":
                bad.append(f"{case.name} {case.mutation}: {result}")
            shutil.rmtree(case.path.parent)  # keep the disk footprint small
    finally:
        runner.close()
    print(f"\nfuzz seed {SEED}, {CASES} cases: {dict(outcomes)}; slowest {slowest:.1f} s")
    print(f"typed errors: {dict(errors.most_common())}")
    stderr = log.read_text(errors="replace")
    assert not bad, "\n".join(bad[:20])
    assert "Traceback" not in stderr, stderr[-3000:]
    assert sum(outcomes.values()) == CASES
    assert outcomes["ok"] > 0 and outcomes["typed"] > 0  # both kinds of outcome were exercised
