"""The DICOMweb client against a real Orthanc: streamed retrieval, and each failure a typed error
(unreachable after retries, 401, not a slide, STOW refused, a transient outage retried)."""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest

from tests.dicomweb.conftest import write_instance
from tests.orthanc_server import Orthanc, free_port, start_orthanc
from workers.dicomweb import DicomWebClient
from workers.errors import (
    NotASlideError,
    PacsAuthError,
    PacsUnreachableError,
    SeriesNotFoundError,
    StowRejectedError,
)
from workers.jobs import ServiceContext
from workers.multipart import parse_multipart, write_multipart
from workers.pacs import submit_series

pytestmark = pytest.mark.integration


def _client(ctx: ServiceContext) -> DicomWebClient:
    return DicomWebClient(ctx.settings.pacs.archives[0], ctx.settings.pacs)


def _md5s(files: list[Path]) -> list[str]:
    return sorted(hashlib.md5(f.read_bytes()).hexdigest() for f in files)


def test_retrieve_streams_the_series_byte_identical(
    orthanc: Orthanc,
    cmu1_files: list[Path],
    make_ctx: Callable[..., ServiceContext],
    tmp_path: Path,
) -> None:
    orthanc.upload(cmu1_files)
    with _client(make_ctx(orthanc.dicomweb)) as client:
        (info,) = client.search_series({"Modality": "SM"})
        assert info.instances == len(cmu1_files)
        client.check_slide(info)
        got = client.retrieve_series(info, tmp_path / "series")
    assert _md5s(got) == _md5s(cmu1_files)  # the stored transfer syntax, not a transcoded copy
    assert not list(tmp_path.glob(".*part"))  # the temporary folder is gone


def test_multipart_parser_is_chunking_invariant(tmp_path: Path) -> None:
    parts = [b"A" * 1000, b"", b"--not-a-boundary\r\n" * 50, bytes(range(256)) * 9]
    body = b"".join(
        b"--XyZ\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n" for p in parts
    )
    body = b"preamble\r\n" + body + b"--XyZ--\r\n"
    ctype = 'multipart/related; type="application/dicom"; boundary="XyZ"'
    for size in (1, 2, 3, 7, 64, 4096):
        chunks = iter([body[i : i + size] for i in range(0, len(body), size)])
        assert parse_multipart(ctype, chunks) == parts
    folder = tmp_path / "parts"
    folder.mkdir()
    assert write_multipart(ctype, iter([body]), folder) == len(parts)
    with pytest.raises(ValueError, match="ended inside a part"):
        write_multipart(ctype, iter([body[:1500]]), tmp_path)


def test_unreachable_archive_is_retried_with_backoff_then_typed(
    make_ctx: Callable[..., ServiceContext], caplog: pytest.LogCaptureFixture
) -> None:
    ctx = make_ctx(f"http://127.0.0.1:{free_port()}/dicom-web", retries=3, backoff_s=0.05)
    t0 = time.monotonic()
    with _client(ctx) as client, pytest.raises(PacsUnreachableError) as err:
        client.search_series({"Modality": "SM"})
    assert time.monotonic() - t0 >= 0.05 * (1 + 2 + 4)  # three doubling waits
    assert "after 4 attempts" in err.value.message and err.value.code == "pacs_unreachable"
    assert sum("retry in" in r.getMessage() for r in caplog.records) == 3


def test_a_transient_outage_is_bridged_by_the_retries(
    tmp_path: Path, make_ctx: Callable[..., ServiceContext]
) -> None:
    """The archive is down when the query starts and comes up during the backoff."""
    port = free_port()
    ctx = make_ctx(f"http://127.0.0.1:{port}/dicom-web", retries=6, backoff_s=0.2)
    answers: list[object] = []

    def query() -> None:
        try:
            with _client(ctx) as client:
                answers.append(client.search_series({"Modality": "SM"}))
        except Exception as exc:  # reported by the assertion below
            answers.append(exc)

    querying = threading.Thread(target=query)
    querying.start()
    time.sleep(0.5)  # the first attempts are refused
    server = start_orthanc(tmp_path / "late", http_port=port)
    try:
        querying.join(30)
        assert answers == [[]]
    finally:
        server.stop()


def test_wrong_password_is_401_and_not_retried(
    orthanc: Orthanc, make_ctx: Callable[..., ServiceContext]
) -> None:
    ctx = make_ctx(orthanc.dicomweb, password="wrong", retries=5, backoff_s=1.0)
    t0 = time.monotonic()
    with _client(ctx) as client, pytest.raises(PacsAuthError, match="HTTP 401"):
        client.search_series({"Modality": "SM"})
    assert time.monotonic() - t0 < 1.0


def test_series_that_are_not_slides_are_refused(
    orthanc: Orthanc, make_ctx: Callable[..., ServiceContext], tmp_path: Path
) -> None:
    ct = write_instance(tmp_path / "ct.dcm", modality="CT", sop_class="1.2.840.10008.5.1.4.1.1.2")
    sc = write_instance(tmp_path / "sc.dcm", modality="SM")  # says SM, holds a secondary capture
    orthanc.upload([ct, sc])
    ctx = make_ctx(orthanc.dicomweb)
    sent: list[str] = []
    for path, what in ((ct, "modality CT"), (sc, "SOP classes 1.2.840.10008.5.1.4.1.1.7")):
        uid = str(pydicom.dcmread(path).SeriesInstanceUID)
        with pytest.raises(NotASlideError, match=what) as err:
            submit_series(ctx, uid, sent.append)
        assert err.value.code == "pacs_not_a_slide"
    with pytest.raises(SeriesNotFoundError):
        submit_series(ctx, "1.2.3.4.5", sent.append)
    assert sent == [] and sum(ctx.store.counts().values()) == 0


def test_stow_dropped_by_an_archive_policy_is_a_typed_error(
    orthanc_factory: Callable[..., Orthanc], make_ctx: Callable[..., ServiceContext], tmp_path: Path
) -> None:
    """Orthanc acknowledges a STOW whose instance its Lua policy dropped: caught by the check."""
    lua = (
        "function ReceivedInstanceFilter(dicom, origin, info)\n"
        "  return dicom.Modality ~= 'OT'\n"
        "end\n"
    )
    server = orthanc_factory(lua=lua)
    kept = write_instance(tmp_path / "kept.dcm", modality="SM")
    dropped = write_instance(tmp_path / f"{uuid.uuid4().hex}.dcm", modality="OT")
    with _client(make_ctx(server.dicomweb)) as client:
        client.store([kept])  # accepted and verified
        with pytest.raises(StowRejectedError, match=dropped.name) as err:
            client.store([kept, dropped])
    assert err.value.code == "pacs_store_rejected" and "does not hold 1" in err.value.message
