"""Bearer tokens for the API: stored as sha256 hashes, compared in constant time, with scopes.

Scopes: ``read`` (GET endpoints), ``submit`` (create and cancel jobs and batches), ``admin``
(everything). Tokens live in the token file (a JSON list of ``TokenEntry``) and/or inline in the
settings; the file is re-read when it changes, so ``atc-wsi tokens`` takes effect without a
restart.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from workers.errors import AuthError, ForbiddenError, ServiceConfigError
from workers.service_settings import Scope, ServiceSettings, TokenEntry
from wsi.io import atomic_write_json

_ENTRIES = TypeAdapter(list[TokenEntry])
_PREFIX = "atc_"


def hash_token(token: str) -> str:
    """Return the hex sha256 of a token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def read_token_file(path: Path) -> list[TokenEntry]:
    """Return the entries of a token file (none when the file does not exist).

    Raises:
        ServiceConfigError: the file is not a JSON list of token entries.
    """
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    try:
        return _ENTRIES.validate_json(raw)
    except ValidationError as exc:
        raise ServiceConfigError(f"{path}: not a JSON list of token entries ({exc})") from None


def create_token(path: Path, name: str, scopes: tuple[Scope, ...]) -> str:
    """Create a token, store only its hash in ``path`` and return the token (shown once)."""
    token = _PREFIX + secrets.token_urlsafe(32)
    entries = read_token_file(path)
    if any(e.name == name for e in entries):
        raise ValueError(f"a token named {name!r} already exists in {path}; choose another name")
    entries.append(TokenEntry(name=name, sha256=hash_token(token), scopes=scopes))
    atomic_write_json(path, json.loads(_ENTRIES.dump_json(entries)))
    path.chmod(0o600)
    return token


class TokenVerifier:
    """Checks ``Authorization: Bearer`` headers against the configured token hashes."""

    def __init__(self, service: ServiceSettings) -> None:
        self._inline = list(service.tokens)
        self._path = service.resolved_token_file
        self._lock = threading.Lock()
        self._stamp: tuple[float, int] | None = None
        self._from_file: list[TokenEntry] = []

    def entries(self) -> list[TokenEntry]:
        """Return inline and file entries, re-reading the file when its mtime or size changed."""
        try:
            st = self._path.stat()
            stamp: tuple[float, int] | None = (st.st_mtime, st.st_size)
        except FileNotFoundError:
            stamp = None
        with self._lock:
            if stamp != self._stamp:
                self._from_file = read_token_file(self._path) if stamp else []
                self._stamp = stamp
            return self._inline + self._from_file

    def verify(self, authorization: str | None, scope: Scope) -> TokenEntry:
        """Return the entry of a valid token holding ``scope`` (or ``admin``).

        Raises:
            AuthError: no bearer token, or no stored hash matches (HTTP 401).
            ForbiddenError: the token lacks the scope (HTTP 403).
        """
        scheme, _, credentials = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():  # the scheme is case-insensitive
            raise AuthError("missing bearer token; send 'Authorization: Bearer <token>'")
        digest = hash_token(credentials.strip())
        match: TokenEntry | None = None
        for entry in self.entries():  # no early exit: the time spent does not reveal which
            if hmac.compare_digest(digest, entry.sha256):
                match = entry
        if match is None:
            raise AuthError("invalid token; create one with `atc-wsi tokens NAME --scope read`")
        if scope not in match.scopes and "admin" not in match.scopes:
            raise ForbiddenError(scope)
        return match
