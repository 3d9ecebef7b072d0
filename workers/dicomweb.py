"""A small DICOMweb client on httpx: QIDO-RS series search, WADO-RS series retrieval streamed to
disk, STOW-RS storage, each failure a typed ``PacsError``.

Transient failures (connection refused or reset, timeouts, HTTP 5xx and 429) are retried with
exponential backoff (``pacs.retries``, ``pacs.backoff_s`` doubling); 401/403 are never retried.
Retrieval parses the ``multipart/related`` answer as it arrives and writes each part to its own
``.dcm`` file, so memory stays at one network chunk (64 KiB) whatever the series size.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pydicom

from workers.errors import (
    NotASlideError,
    PacsAuthError,
    PacsError,
    PacsUnreachableError,
    SeriesNotFoundError,
    StowRejectedError,
)
from workers.multipart import parse_multipart, write_multipart
from workers.pacs_settings import ArchiveSettings, PacsSettings

log = logging.getLogger(__name__)

T = TypeVar("T")

#: VL Whole Slide Microscopy Image Storage.
WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"
#: Ask for the stored transfer syntax: no transcoding of JPEG frames to raw pixels by the server.
_DICOM_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
_TAG_STUDY, _TAG_SERIES, _TAG_MODALITY = "0020000D", "0020000E", "00080060"
_TAG_COUNT, _TAG_SOP_CLASS, _TAG_SOP_UID = "00201209", "00080016", "00080018"
_TAG_FAILED, _TAG_REASON = "00081198", "00081197"


class _Transient(Exception):
    """A failure worth retrying (network, 5xx, 429)."""


@dataclass(frozen=True)
class SeriesInfo:
    """One series as QIDO-RS describes it.

    Attributes:
        study_uid: Study Instance UID.
        series_uid: Series Instance UID.
        modality: e.g. ``"SM"``.
        instances: Number of Series Related Instances (None when the archive does not say).
        date: the cursor attribute's value (YYYYMMDD) when one is configured, else None.
    """

    study_uid: str
    series_uid: str
    modality: str
    instances: int | None
    date: str | None = None


def _value(item: dict[str, Any], tag: str) -> Any:
    values = item.get(tag, {}).get("Value") or [None]
    return values[0]


class DicomWebClient:
    """Talks to one archive. Use as a context manager (one HTTP connection pool).

    Args:
        archive: where the archive is and how to log in.
        pacs: retry policy.
    """

    def __init__(self, archive: ArchiveSettings, pacs: PacsSettings) -> None:
        self.archive, self.retries, self.backoff_s = archive, pacs.retries, pacs.backoff_s
        headers = {}
        auth: tuple[str, str] | None = None
        if archive.token():
            headers["Authorization"] = f"Bearer {archive.token()}"
        elif archive.username:
            auth = (archive.username, archive.password() or "")
        self.http = httpx.Client(
            base_url=archive.base_url,
            auth=auth,
            headers=headers,
            timeout=archive.timeout_s,
            verify=archive.verify_tls,
        )

    def __enter__(self) -> DicomWebClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    # --- retries and status mapping -------------------------------------------------------
    def _retrying(self, what: str, call: Callable[[], T]) -> T:
        """Run ``call``, retrying transient failures with doubling backoff."""
        name = self.archive.name
        for attempt in range(self.retries + 1):
            try:
                return call()
            except (httpx.TransportError, _Transient) as exc:
                detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                if attempt == self.retries:
                    raise PacsUnreachableError(
                        name,
                        f"{what} failed after {self.retries + 1} attempts ({detail}); check that "
                        f"{self.archive.base_url} is up and reachable",
                    ) from None
                delay = self.backoff_s * 2**attempt
                log.warning("archive %s: %s: %s; retry in %.2f s", name, what, detail, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _check(self, r: httpx.Response, what: str) -> None:
        if r.status_code >= 500 or r.status_code == 429:
            raise _Transient(f"HTTP {r.status_code}")
        if r.status_code in (401, 403):
            raise PacsAuthError(
                self.archive.name,
                f"{what}: HTTP {r.status_code}; check username/password_env or token_env of "
                "this archive and its permissions",
            )

    def _get_json(self, path: str, params: dict[str, str], what: str) -> list[dict[str, Any]]:
        def call() -> list[dict[str, Any]]:
            r = self.http.get(path, params=params, headers={"Accept": "application/dicom+json"})
            self._check(r, what)
            if r.status_code == 204 or not r.content:
                return []
            if r.status_code >= 400:
                raise PacsError(self.archive.name, f"{what}: HTTP {r.status_code} {r.text[:200]}")
            data = r.json()
            return data if isinstance(data, list) else []

        return self._retrying(what, call)

    # --- QIDO-RS ---------------------------------------------------------------------------
    def search_series(self, match: dict[str, str]) -> list[SeriesInfo]:
        """Return the series matching ``match`` (QIDO-RS keys, e.g. ``{"Modality": "SM"}``)."""
        date_key = self.archive.date_attribute
        params = {**match, "includefield": ",".join(k for k in (_TAG_COUNT, date_key) if k)}
        found = []
        for item in self._get_json("/series", params, "QIDO-RS series search"):
            count = _value(item, _TAG_COUNT)
            date = _value(item, _date_tag(date_key)) if date_key else None
            found.append(
                SeriesInfo(
                    study_uid=str(_value(item, _TAG_STUDY)),
                    series_uid=str(_value(item, _TAG_SERIES)),
                    modality=str(_value(item, _TAG_MODALITY) or ""),
                    instances=int(count) if count is not None else None,
                    date=str(date) if date else None,
                )
            )
        return found

    def get_series(self, series_uid: str) -> SeriesInfo:
        """Return one series by its UID.

        Raises:
            SeriesNotFoundError: the archive holds no such series.
        """
        found = self.search_series({"SeriesInstanceUID": series_uid})
        if not found:
            raise SeriesNotFoundError(self.archive.name, series_uid)
        return found[0]

    def instance_classes(self, info: SeriesInfo) -> list[str]:
        """Return the SOP Class UID of every instance of the series (QIDO-RS instances)."""
        path = f"/studies/{info.study_uid}/series/{info.series_uid}/instances"
        items = self._get_json(path, {"includefield": _TAG_SOP_CLASS}, "QIDO-RS instance search")
        return [str(_value(i, _TAG_SOP_CLASS)) for i in items]

    def check_slide(self, info: SeriesInfo) -> None:
        """Refuse a series that is not a whole-slide image.

        Raises:
            NotASlideError: modality other than SM, or no VL Whole Slide Microscopy instance.
        """
        if info.modality != "SM":
            raise NotASlideError(self.archive.name, info.series_uid, f"modality {info.modality}")
        classes = self.instance_classes(info)
        if WSI_SOP_CLASS not in classes:
            kinds = ", ".join(sorted(set(classes))) or "no instances"
            raise NotASlideError(self.archive.name, info.series_uid, f"SOP classes {kinds}")

    # --- WADO-RS ---------------------------------------------------------------------------
    def retrieve_series(self, info: SeriesInfo, dest: Path) -> list[Path]:
        """Stream every instance of the series into the new folder ``dest`` (atomically).

        The answer is written part by part into a hidden sibling folder, renamed to ``dest``
        once complete; a failed or interrupted retrieval leaves no ``dest``.

        Returns:
            The instance files, ``instance-00001.dcm`` … in the order the archive sent them.
        """
        path = f"/studies/{info.study_uid}/series/{info.series_uid}"
        what = f"WADO-RS retrieve of series {info.series_uid}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")

        def call() -> int:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            with self.http.stream("GET", path, headers={"Accept": _DICOM_ACCEPT}) as r:
                self._check(r, what)
                if r.status_code == 404:
                    raise SeriesNotFoundError(self.archive.name, info.series_uid)
                if r.status_code >= 400:
                    raise PacsError(self.archive.name, f"{what}: HTTP {r.status_code}")
                try:
                    return write_multipart(r.headers.get("content-type", ""), r.iter_bytes(), tmp)
                except httpx.TransportError:
                    raise
                except ValueError as exc:
                    raise PacsError(self.archive.name, f"{what}: {exc}") from None

        try:
            n = self._retrying(what, call)
            if n == 0:
                raise SeriesNotFoundError(self.archive.name, info.series_uid)
            os.replace(tmp, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return sorted(dest.glob("*.dcm"))

    def retrieve_frame(self, study: str, series: str, sop_uid: str, frame: int) -> bytes:
        """Return one frame's bytes as stored (WADO-RS frames; used by the read benchmark)."""
        path = f"/studies/{study}/series/{series}/instances/{sop_uid}/frames/{frame}"
        accept = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'

        def call() -> bytes:
            r = self.http.get(path, headers={"Accept": accept})
            self._check(r, "WADO-RS frame")
            parts = parse_multipart(r.headers.get("content-type", ""), iter([r.content]))
            return parts[0] if parts else b""

        return self._retrying("WADO-RS frame", call)

    # --- STOW-RS ---------------------------------------------------------------------------
    def store(self, files: Sequence[Path]) -> None:
        """Store DICOM files with one STOW-RS request.

        Raises:
            StowRejectedError: the archive refused some or all instances (HTTP 4xx or a
                Failed SOP Sequence in the answer), with its reasons.
        """
        boundary = uuid.uuid4().hex
        ctype = f'multipart/related; type="application/dicom"; boundary={boundary}'

        def body() -> Iterator[bytes]:
            for f in files:
                yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
                with open(f, "rb") as fh:
                    while block := fh.read(1 << 20):
                        yield block
                yield b"\r\n"
            yield f"--{boundary}--\r\n".encode()

        def call() -> httpx.Response:
            headers = {"Content-Type": ctype, "Accept": "application/dicom+json"}
            r = self.http.post("/studies", content=body(), headers=headers)
            self._check(r, "STOW-RS")
            return r

        r = self._retrying("STOW-RS", call)
        failed = _failed_sops(r)
        if r.status_code >= 400 or failed:
            detail = "; ".join(failed) or r.text[:200]
            raise StowRejectedError(
                self.archive.name,
                f"STOW-RS refused {len(failed) or len(files)} of {len(files)} object(s) "
                f"(HTTP {r.status_code}): {detail}; the files stay in the job's dicom/ folder",
            )
        self._verify_stored(files)

    def _verify_stored(self, files: Sequence[Path]) -> None:
        """Check with QIDO-RS that the archive holds every stored instance.

        An archive policy may drop an instance and still acknowledge it (Orthanc 1.10 with the
        DICOMweb plugin 1.7 lists a Lua-filtered instance as stored): without this check the
        results would be lost silently.
        """
        missing = []
        for f in files:
            ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
            uid = str(ds.SOPInstanceUID)
            found = self._get_json("/instances", {"SOPInstanceUID": uid}, "QIDO-RS check")
            if not found:
                missing.append(f"{f.name} ({uid})")
        if missing:
            raise StowRejectedError(
                self.archive.name,
                f"STOW-RS acknowledged {len(files)} object(s) but the archive does not hold "
                f"{len(missing)}: {', '.join(missing)} (dropped by an archive policy?); the "
                "files stay in the job's dicom/ folder",
            )


def _date_tag(keyword: str) -> str:
    return {"StudyDate": "00080020", "SeriesDate": "00080021"}.get(keyword, keyword)


def _failed_sops(r: httpx.Response) -> list[str]:
    try:
        data = r.json()
    except ValueError:
        return []
    if isinstance(data, list):
        data = data[0] if data else {}
    failed = data.get(_TAG_FAILED, {}).get("Value") or [] if isinstance(data, dict) else []
    out = []
    for item in failed:
        reason = _value(item, _TAG_REASON)
        out.append(f"{_value(item, _TAG_SOP_UID)} (failure reason {reason})")
    return out
