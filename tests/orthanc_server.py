"""A real Orthanc (Debian packages ``orthanc`` and ``orthanc-dicomweb``) on free 127.0.0.1 ports.

The test writes Orthanc's configuration: storage in a temporary folder, the DICOMweb plugin from
the Debian package, HTTP basic authentication on (user ``atc``), optionally a Lua script (e.g. a
``ReceivedInstanceFilter`` that refuses some objects, as an archive policy would).
"""

from __future__ import annotations

import ctypes
import json
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
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
    folder: Path, lua: str | None = None, timeout_s: float = 30.0, http_port: int | None = None
) -> Orthanc:
    """Start Orthanc with a configuration written into ``folder``; wait until /system answers.

    Args:
        folder: configuration, storage and log go here.
        lua: a Lua script to install (archive policies such as ``ReceivedInstanceFilter``).
        timeout_s: how long to wait for the HTTP server.
        http_port: this HTTP port instead of a free one.
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
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "HttpCompressionEnabled": False,
        "StableAge": 1,
        "ConcurrentJobs": 1,
        "HttpThreadsCount": 8,
    }
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
