"""Slide identity and idempotency keys.

The key of an analysis is sha256(slide fingerprint | pipeline version | configuration hash): the
same slide content analysed by the same code with the same settings gives the same key, whatever
the file is called or wherever it lies.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

import wsi
from wsi.slide import is_dicom_folder as is_dicom_series_folder
from wsi.slide import resolve_slide_file

#: File name suffixes of single-file slides OpenSlide reads.
SLIDE_SUFFIXES: frozenset[str] = frozenset(
    {".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".bif", ".svslide", ".dcm"}
)


def is_dicom_folder(path: Path) -> bool:
    """Return True for a folder holding DICOM instances and nothing else visible (one slide)."""
    return is_dicom_series_folder(path)


def open_target(path: Path) -> Path:
    """Return the file OpenSlide should open for ``path`` (any instance of a DICOM folder)."""
    return resolve_slide_file(path)


def content_hash(path: Path) -> str:
    """Return ``sha256:<hex>`` of a file, or of a folder's files (names and bytes, sorted)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        digest.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        with open(f, "rb") as fh:
            while block := fh.read(1 << 20):
                digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def slide_fingerprint(path: Path) -> str:
    """Return the slide's content identity.

    OpenSlide's quickhash-1 when the slide opens (via ``wsi.Slide.fingerprint``), else a sha256 of
    its bytes: a slide that cannot be opened still gets a job, which then fails with the reason.
    """
    try:
        with wsi.open_slide(open_target(path)) as slide:
            return slide.fingerprint
    except wsi.WsiError:
        return content_hash(path)


def config_hash(config: BaseModel | dict[str, Any]) -> str:
    """Return the sha256 hex of a configuration's canonical JSON (sorted keys)."""
    data = config.model_dump(mode="json") if isinstance(config, BaseModel) else config
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def idempotency_key(fingerprint: str, pipeline_version: str, cfg_hash: str) -> str:
    """Return the sha256 hex of ``fingerprint|pipeline_version|cfg_hash``."""
    return hashlib.sha256(f"{fingerprint}|{pipeline_version}|{cfg_hash}".encode()).hexdigest()
