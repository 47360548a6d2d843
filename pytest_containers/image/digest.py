"""Content digests as the OCI image spec defines them (image-spec ``descriptor.md``, "Digests").

Only the registered ``sha256`` algorithm is supported: a digest is the text
``sha256:<64 lowercase hex>``. Digests are passed around as plain ``str``
values that went through :func:`validate_digest`.
"""

from __future__ import annotations

import hashlib
import re
from typing import BinaryIO

from pytest_containers.exceptions import DigestMismatchError, ImageError

ALGORITHM = "sha256"
_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
_ANY_DIGEST_RE = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")

#: Chunk size, in bytes, used when hashing files.
CHUNK_BYTES = 1 << 20


def is_digest(text: str) -> bool:
    """Whether ``text`` is a well-formed ``sha256:<64 lowercase hex>`` digest."""
    return _DIGEST_RE.fullmatch(text) is not None


def validate_digest(text: str) -> str:
    """Return ``text`` unchanged if it is a ``sha256:<64 lowercase hex>`` digest.

    Raises :class:`~pytest_containers.exceptions.ImageError` (field ``digest``)
    for a malformed digest or an algorithm other than sha256.
    """
    if not isinstance(text, str) or not is_digest(text):
        if isinstance(text, str) and _ANY_DIGEST_RE.fullmatch(text):
            why = f"unsupported digest algorithm {text.split(':', 1)[0]!r} (only sha256)"
        else:
            why = "expected 'sha256:' followed by 64 lowercase hex digits"
        raise ImageError(f"invalid digest {text!r}: {why}", digest=text)
    return text


def digest_hex(digest: str) -> str:
    """The 64 hex digits of a validated digest (the file name under ``blobs/sha256/``)."""
    return validate_digest(digest).split(":", 1)[1]


def digest_of(data: bytes) -> str:
    """The ``sha256:<hex>`` digest of ``data``."""
    return f"{ALGORITHM}:{hashlib.sha256(data).hexdigest()}"


def digest_of_file(src: BinaryIO) -> tuple[str, int]:
    """Hash an open binary file from its current position to the end.

    Returns ``(digest, size_bytes)``.
    """
    hasher = Hasher()
    while chunk := src.read(CHUNK_BYTES):
        hasher.update(chunk)
    return hasher.digest, hasher.size


class Hasher:
    """A streaming sha256 hasher that also counts bytes.

    ``update()`` chunks in order, then read ``digest`` (``sha256:<hex>``) and
    ``size`` (bytes); :meth:`verify` compares both with expected values.
    """

    __slots__ = ("_hash", "size")

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.size = 0

    def update(self, chunk: bytes) -> None:
        self._hash.update(chunk)
        self.size += len(chunk)

    @property
    def digest(self) -> str:
        return f"{ALGORITHM}:{self._hash.hexdigest()}"

    def verify(self, expected_digest: str, expected_size: int | None = None) -> None:
        """Check size first (if given), then digest.

        Raises :class:`DigestMismatchError` with fields ``digest`` (expected),
        ``actual`` (computed) and ``size`` (bytes seen).
        """
        if expected_size is not None and self.size != expected_size:
            raise DigestMismatchError(
                f"size mismatch for {expected_digest}: expected {expected_size} bytes,"
                f" got {self.size}",
                digest=expected_digest,
                actual=self.digest,
                size=self.size,
            )
        actual = self.digest
        if actual != expected_digest:
            raise DigestMismatchError(
                f"digest mismatch: expected {expected_digest}, content hashes to {actual}",
                digest=expected_digest,
                actual=actual,
                size=self.size,
            )
