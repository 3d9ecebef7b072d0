"""The service's error tree: every refusal the job store, API, watch folder or CLI raises.

Each error carries a stable machine-readable ``code`` (sent in the API's JSON body) and the HTTP
status the API answers with. Messages say what was wrong and what to do.
"""

from __future__ import annotations

from pathlib import Path


class JobError(Exception):
    """Base of the service's errors.

    Attributes:
        code: stable identifier for clients, e.g. ``"job_not_found"``.
        http_status: status code the API answers with.
    """

    code: str = "job_error"
    http_status: int = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class JobNotFoundError(JobError):
    """No job has this id."""

    code = "job_not_found"
    http_status = 404

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id {job_id!r}; list jobs with GET /v1/jobs")
        self.job_id = job_id


class BatchNotFoundError(JobError):
    """No batch has this id."""

    code = "batch_not_found"
    http_status = 404

    def __init__(self, batch_id: str) -> None:
        super().__init__(f"no batch with id {batch_id!r}")
        self.batch_id = batch_id


class JobStateError(JobError):
    """The job is not in a state that allows the request (e.g. report of a running job)."""

    code = "job_state"
    http_status = 409


class OutputNotFoundError(JobError):
    """The job has no output file with this name."""

    code = "file_not_found"
    http_status = 404


class PathNotAllowedError(JobError):
    """A slide path is outside the configured slide roots, or malformed.

    Attributes:
        path: the path as given.
        reason: why it was refused.
    """

    code = "path_not_allowed"
    http_status = 400

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"path {str(path)!r} refused: {reason}")
        self.path = str(path)
        self.reason = reason


class SlideMissingError(JobError):
    """The slide path is inside a root but nothing is there."""

    code = "slide_not_found"
    http_status = 400

    def __init__(self, path: str | Path) -> None:
        super().__init__(f"no slide at {str(path)!r}; check the path relative to a slide root")
        self.path = str(path)


class UploadTooLargeError(JobError):
    """An upload exceeded the configured size limit."""

    code = "upload_too_large"
    http_status = 413

    def __init__(self, limit_bytes: int) -> None:
        super().__init__(
            f"upload exceeds the limit of {limit_bytes} bytes; put the slide under a slide root "
            "and submit its path instead"
        )
        self.limit_bytes = limit_bytes


class AuthError(JobError):
    """No token, or a token that matches no stored hash."""

    code = "unauthorized"
    http_status = 401


class ForbiddenError(JobError):
    """A valid token without the scope the request needs."""

    code = "forbidden"
    http_status = 403

    def __init__(self, scope: str) -> None:
        super().__init__(f"this token lacks the {scope!r} scope; create one with that scope")
        self.scope = scope


class PipelineVersionError(JobError):
    """A request asked for a pipeline version this service does not run."""

    code = "pipeline_version_mismatch"
    http_status = 409


class ServiceConfigError(JobError):
    """The service configuration is unusable (e.g. a token file that cannot be read)."""

    code = "service_config"
    http_status = 500


class ApiUnreachableError(JobError):
    """The CLI could not reach the API (down, wrong ``service.api_url``, network)."""

    code = "api_unreachable"
    http_status = 503

    def __init__(self, url: str, detail: str) -> None:
        super().__init__(
            f"cannot reach the API at {url} ({detail}); start it with `atc-wsi serve`, or pass "
            "--api / set service.api_url"
        )
        self.url = url


class PacsError(JobError):
    """A DICOMweb archive refused or failed a request (base of the PACS errors).

    Attributes:
        archive: the archive's configured name.
    """

    code = "pacs_error"
    http_status = 502

    def __init__(self, archive: str, message: str) -> None:
        super().__init__(f"archive {archive!r}: {message}")
        self.archive = archive


class PacsUnreachableError(PacsError):
    """The archive did not answer (refused, DNS, timeout) or kept answering 5xx after retries."""

    code = "pacs_unreachable"
    http_status = 503


class PacsAuthError(PacsError):
    """The archive answered 401 or 403: wrong or missing credentials, or no permission."""

    code = "pacs_unauthorized"
    http_status = 502


class SeriesNotFoundError(PacsError):
    """The archive holds no series with this Series Instance UID."""

    code = "pacs_series_not_found"
    http_status = 404

    def __init__(self, archive: str, series_uid: str) -> None:
        super().__init__(archive, f"no series {series_uid}; check the Series Instance UID")
        self.series_uid = series_uid


class NotASlideError(PacsError):
    """The series is not a whole-slide image (modality other than SM, or no VL WSI instance)."""

    code = "pacs_not_a_slide"
    http_status = 400

    def __init__(self, archive: str, series_uid: str, what: str) -> None:
        super().__init__(
            archive, f"series {series_uid} is not a whole-slide image ({what}); submit an SM series"
        )
        self.series_uid = series_uid


class StowRejectedError(PacsError):
    """STOW-RS refused some or all of the result objects (the reason is the archive's)."""

    code = "pacs_store_rejected"
    http_status = 502


class ArchiveUnknownError(JobError):
    """A request named an archive that is not configured (or none, with several configured)."""

    code = "pacs_archive_unknown"
    http_status = 400

    def __init__(self, name: str | None, known: list[str]) -> None:
        if not known:
            msg = "no DICOMweb archive is configured; add one under pacs.archives"
        elif name is None:
            msg = f"several archives are configured; name one of {', '.join(known)}"
        else:
            msg = f"unknown archive {name!r}; configured: {', '.join(known)}"
        super().__init__(msg)
        self.name = name


class DicomResultError(JobError):
    """The DICOM result objects could not be built from the slide's DICOM header."""

    code = "dicom_results"
    http_status = 500
