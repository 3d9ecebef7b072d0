"""Fixtures of the DICOMweb tests: a real Orthanc per test, a service context pointed at it, and
small DICOM instances that are not slides (made with pydicom)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tests.orthanc_server import PASSWORD, USER, Orthanc, available, start_orthanc
from workers.jobs import ServiceContext, build_context
from workers.settings import load_settings

SHARED_SLIDES = Path(__file__).resolve().parents[3] / "shared" / "data" / "slides"
CMU1_DICOM = SHARED_SLIDES / "dicom" / "cmu-1-small-region"
PASSWORD_ENV = "ATC_TEST_ORTHANC_PASSWORD"

pytestmark = pytest.mark.integration


@pytest.fixture
def orthanc_factory(tmp_path: Path) -> Iterator[Callable[..., Orthanc]]:
    """``make(lua=None) -> Orthanc``: a fresh Orthanc with its own storage; stopped at the end."""
    why = available()
    if why:
        pytest.skip(why)
    started: list[Orthanc] = []

    def make(lua: str | None = None) -> Orthanc:
        server = start_orthanc(tmp_path / f"orthanc{len(started)}", lua=lua)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def orthanc(orthanc_factory: Callable[..., Orthanc]) -> Orthanc:
    """A fresh, empty Orthanc with the DICOMweb plugin and basic authentication."""
    return orthanc_factory()


@pytest.fixture
def cmu1_files() -> list[Path]:
    """The instances of the real DICOM WSI series CMU-1-Small-Region (12 files, 1.5 MB)."""
    if not CMU1_DICOM.is_dir():
        pytest.skip(f"{CMU1_DICOM} not found")
    return sorted(CMU1_DICOM.glob("*.dcm"))


@pytest.fixture
def make_ctx(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., ServiceContext]]:
    """``make(base_url, password=, archive=, settings=, **pacs) -> ServiceContext``: one archive
    ``orthanc`` (``archive`` adds fields), top-level ``settings`` and ``pacs`` fields overridden."""
    made: list[ServiceContext] = []

    def make(
        base_url: str,
        password: str = PASSWORD,
        archive: dict[str, Any] | None = None,
        settings: dict[str, Any] | None = None,
        **pacs: Any,
    ) -> ServiceContext:
        monkeypatch.setenv(PASSWORD_ENV, password)
        root = tmp_path / f"svc{len(made)}"
        entry = {"name": "orthanc", "base_url": base_url, "username": USER}
        entry |= {"password_env": PASSWORD_ENV, **(archive or {})}
        overrides = {
            "service": {"output_root": str(root / "out"), "slide_roots": [str(root)]},
            "pacs": {"archives": [entry], "retries": 2, "backoff_s": 0.05, **pacs},
            "engine": {"num_workers": 0},
            **(settings or {}),
        }
        ctx = build_context(load_settings(environ={}, overrides=overrides))
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        ctx.store.dispose()


def write_instance(
    path: Path,
    *,
    modality: str,
    sop_class: str = "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image Storage
    study_uid: str | None = None,
    series_uid: str | None = None,
) -> Path:
    """Write a small 16 × 16 grey DICOM instance that is not a whole-slide image."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.PatientID, ds.PatientName, ds.Modality = "ATC-TEST", "Test^NotASlide", modality
    ds.Rows = ds.Columns = 16
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelData = np.arange(256, dtype=np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def copy_series(files: list[Path], dest: Path) -> Path:
    """Copy a series' files into ``dest`` (a folder)."""
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copy(f, dest / f.name)
    return dest
