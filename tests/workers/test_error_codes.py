"""Every error code the code can emit is in the documented list (docs/deployment.md)."""

from __future__ import annotations

import re
from pathlib import Path

import models.errors
import wsi.errors
from workers import errors as job_errors
from workers.tasks import _snake

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "deployment.md"


def _subclasses(root: type) -> set[type]:
    found = {root}
    for sub in root.__subclasses__():
        found |= _subclasses(sub)
    return found


def _documented() -> set[str]:
    text = DOCS.read_text(encoding="utf-8")
    section = text[text.index("## Error codes") :]
    return set(re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.MULTILINE))


def _emitted() -> set[str]:
    codes = {cls.code for cls in _subclasses(job_errors.JobError)}
    for module in (wsi.errors, models.errors):  # job reason codes: describe_failure's snake case
        roots = [v for v in vars(module).values() if isinstance(v, type)]
        codes |= {
            _snake(c.__name__)
            for c in roots
            if issubclass(c, wsi.errors.WsiError | models.errors.ModelError)
            and c.__module__ == module.__name__
        }
    sources = [p for p in (REPO / "workers").rglob("*.py")]
    patterns = (
        r'error_body\(\s*"([a-z_]+)"',  # the API's own handlers
        r'\d{3}: "([a-z_]+)"',  # status → code maps
        r'\.get\(exc\.status_code, "([a-z_]+)"\)',
        r'reason_code="([a-z_]+)"',  # reason codes set by the task and the store
        r'return "([a-z_]+)", f?"',  # describe_failure's fixed codes
    )
    for path in sources:
        text = path.read_text(encoding="utf-8")
        for pattern in patterns:
            codes |= set(re.findall(pattern, text))
    return codes


def test_every_emitted_code_is_documented_and_nothing_else() -> None:
    emitted, documented = _emitted(), _documented()
    assert {"job_error", "file_not_found", "read_budget_error", "cancelled"} <= emitted
    assert emitted - documented == set(), "codes missing from docs/deployment.md"
    assert documented - emitted == set(), "documented codes nothing emits"
