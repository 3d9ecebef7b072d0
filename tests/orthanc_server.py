"""A real Orthanc (Debian packages ``orthanc`` and ``orthanc-dicomweb``) on free 127.0.0.1 ports.

The test writes Orthanc's configuration: storage in a temporary folder, the DICOMweb plugin from
the Debian package, HTTP basic authentication on (user ``atc``), optionally a Lua script (e.g. a
``ReceivedInstanceFilter`` that refuses some objects, as an archive policy would) and the WSI
viewer plugin. ``dicomize`` converts a pyramidal TIFF to a DICOM WSI series with
``OrthancWSIDicomizer`` (Debian package ``orthanc-wsi``).
"""

from __future__ import annotations

import ctypes
import json
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
WSI_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancWSI.so")
SERVE_FOLDERS_PLUGIN = Path("/usr/share/orthanc/plugins/libServeFolders.so")
DICOMIZER = shutil.which("OrthancWSIDicomizer") or "/usr/bin/OrthancWSIDicomizer"
USER, PASSWORD = "atc", "orthanc-test-secret"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def available() -> str | None:
    """Return why Orthanc cannot run here, or None when it can."""
    if not Path(ORTHANC).exists():
        return "Orthanc is not installed (make system-deps installs orthanc)"
    if not DICOMWEB_PLUGIN.exists():
        return f"{DICOMWEB_PLUGIN} missing (make system-deps installs orthanc-dicomweb)"
    return None


@dataclass
class Orthanc:
    """A running Orthanc: its URLs, credentials and process."""

    http_port: int
    dicom_port: int
    folder: Path
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def client(self, auth: bool = True) -> httpx.Client:
        """An httpx client on Orthanc's REST API."""
        return httpx.Client(base_url=self.url, auth=(USER, PASSWORD) if auth else None, timeout=60)

    def upload(self, files: list[Path]) -> list[str]:
        """Store DICOM files one by one through Orthanc's REST API (as a scanner would)."""
        ids = []
        with self.client() as c:
            for f in files:
                r = c.post("/instances", content=f.read_bytes())
                r.raise_for_status()
                ids.append(r.json()["ID"])
        return ids

    def log(self) -> str:
        path = self.folder / "orthanc.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """End the server at once (SIGKILL: a throwaway test server, its storage is temporary;
        a graceful stop takes ~3 s)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def _die_with_parent() -> None:
    """In the child: ask Linux to SIGKILL it when the test process dies (no orphan servers)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def start_orthanc(
    folder: Path,
    lua: str | None = None,
    timeout_s: float = 30.0,
    http_port: int | None = None,
    *,
    plugins: Sequence[Path] = (),
    extra_config: Mapping[str, object] | None = None,
) -> Orthanc:
    """Start Orthanc with a configuration written into ``folder``; wait until /system answers.

    Args:
        folder: configuration, storage and log go here.
        lua: a Lua script to install (archive policies such as ``ReceivedInstanceFilter``).
        timeout_s: how long to wait for the HTTP server.
        http_port: this HTTP port instead of a free one.
        plugins: more plugins to load (e.g. ``WSI_PLUGIN``, the WSI viewer at
            ``/wsi/app/viewer.html?series=<Orthanc series id>``, or ``SERVE_FOLDERS_PLUGIN``).
        extra_config: more configuration keys (e.g. ``ServeFolders``), over the defaults.
    """
    folder.mkdir(parents=True, exist_ok=True)
    http_port = http_port or free_port()
    dicom_port = free_port()
    while dicom_port == http_port:
        dicom_port = free_port()
    config = {
        "Name": "atc-test",
        "StorageDirectory": str(folder / "db"),
        "IndexDirectory": str(folder / "db"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {USER: PASSWORD},
        "Plugins": [str(DICOMWEB_PLUGIN), *(str(p) for p in plugins)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "HttpCompressionEnabled": False,
        "StableAge": 1,
        "ConcurrentJobs": 1,
        "HttpThreadsCount": 8,
    }
    config.update(extra_config or {})
    if lua is not None:
        (folder / "policy.lua").write_text(lua, encoding="utf-8")
        config["LuaScripts"] = [str(folder / "policy.lua")]
    (folder / "orthanc.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
    log = open(folder / "orthanc.log", "wb")  # noqa: SIM115  (closed when Orthanc exits)
    proc = subprocess.Popen(
        [ORTHANC, "--no-jobs", str(folder / "orthanc.json")],
        stdout=log,
        stderr=log,
        preexec_fn=_die_with_parent,
    )
    server = Orthanc(http_port, dicom_port, folder, proc)
    deadline = time.monotonic() + timeout_s
    with server.client() as c:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {proc.returncode}:\n{server.log()}")
            try:
                if c.get("/system").status_code == 200:
                    return server
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"Orthanc did not answer /system within {timeout_s} s:\n{server.log()}")


def dicomizer_available() -> str | None:
    """Return why ``OrthancWSIDicomizer`` cannot run here, or None when it can."""
    if not Path(DICOMIZER).exists():
        return "OrthancWSIDicomizer is not installed (make system-deps installs orthanc-wsi)"
    return None


def dicomize(
    tiff: Path,
    folder: Path,
    *,
    width: int,
    height: int,
    mpp: float,
    dataset: Mapping[str, object],
    threads: int = 2,
) -> list[Path]:
    """Convert a pyramidal TIFF into a DICOM VL Whole Slide Microscopy series, one file a level.

    ``OrthancWSIDicomizer`` 1.1 (Debian 12) copies the JPEG tiles without re-encoding them, but
    it needs three things passed for the series to be one that OpenSlide opens at the right size:

    * Pixel Spacing: it ignores the TIFF's resolution tags and derives the spacing from the
      imaged volume (default 15 × 15 mm), so ``--imaged-width/--imaged-height`` are the slide's
      size in mm (it stores them as 32-bit floats: 0.25 µm/px comes back as 0.250000012).
    * ``--max-size 0``: its default (10 MB per instance) writes each level as a Concatenation,
      one instance long for a small slide, which OpenSlide 4.0 refuses ("Found only one SOP
      instance in concatenation").
    * ``dataset`` (``--dataset``): without one it writes no Image Type (OpenSlide: "Couldn't get
      image flavor") and no Frame of Reference UID (type 1 in the IOD), so the caller gives at
      least ``ImageType`` and ``FrameOfReferenceUID``; Patient/Study/Series attributes may be
      given too (the dicomizer makes new UIDs otherwise).

    Args:
        tiff: the pyramidal TIFF.
        folder: where the ``.dcm`` files go (created; must be empty or missing).
        width: level-0 width in pixels.
        height: level-0 height in pixels.
        mpp: level-0 µm per pixel.
        dataset: DICOM attributes by keyword (the dicomizer's JSON format).
        threads: conversion threads.

    Returns:
        The written files, sorted (level 0 first).
    """
    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.iterdir()):
        raise ValueError(f"{folder} is not empty; dicomize writes into an empty folder")
    spec = folder.parent / f"{folder.name}.dataset.json"
    spec.write_text(json.dumps(dict(dataset), indent=1), encoding="utf-8")
    cmd = [
        DICOMIZER,
        f"--folder={folder}",
        f"--dataset={spec}",
        "--max-size=0",
        f"--imaged-width={width * mpp / 1000:.9g}",
        f"--imaged-height={height * mpp / 1000:.9g}",
        f"--threads={threads}",
        str(tiff),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {done.returncode}:\n{done.stderr}")
    return sorted(folder.glob("*.dcm"))


def wsi_dataset(label: str) -> dict[str, object]:
    """The attributes ``dicomize`` needs given (see there) plus the Specimen module's type 1
    ones, in the dicomizer's JSON format; ``label`` names the patient, container and specimen.
    The Frame of Reference and Specimen UIDs are new ones."""
    from pydicom.uid import generate_uid

    return {
        "PatientID": label,
        "PatientName": f"Synthetic^{label}",
        "StudyID": label[:16],
        "StudyDescription": f"atc-wsi synthetic slide {label}",
        "AccessionNumber": "",
        "SeriesNumber": "1",
        "Manufacturer": "atc-wsi synthetic generator",
        "ImageType": "ORIGINAL\\PRIMARY\\VOLUME\\NONE",
        "FrameOfReferenceUID": generate_uid(),
        "FocusMethod": "AUTO",
        "ExtendedDepthOfField": "NO",
        "AcquisitionContextSequence": [],
        "ContainerIdentifier": label,
        "IssuerOfTheContainerIdentifierSequence": [],
        "ContainerTypeCodeSequence": [],
        "SpecimenDescriptionSequence": [
            {
                "SpecimenIdentifier": label,
                "SpecimenUID": generate_uid(),
                "IssuerOfTheSpecimenIdentifierSequence": [],
                "SpecimenPreparationSequence": [],
            }
        ],
        "SpecimenLabelInImage": "NO",
        "BurnedInAnnotation": "NO",
    }
