"""Content digests: computing them and checking what arrived (sans-I/O)."""

from __future__ import annotations

import hashlib

from crio.errors import CrioError
from crio.image.reference import validate_digest

__all__ = ["DigestMismatchError", "Hasher", "digest_of", "expect_digest"]

_ALGORITHMS = {"sha256": hashlib.sha256, "sha384": hashlib.sha384, "sha512": hashlib.sha512}


class DigestMismatchError(CrioError):
    """Content does not match the digest that names it (a corrupt or tampered blob)."""


class Hasher:
    """Incremental digest in the algorithm of an expected digest (sha256 by default)."""

    __slots__ = ("_hash", "algorithm", "size")

    def __init__(self, algorithm: str = "sha256") -> None:
        try:
            self._hash = _ALGORITHMS[algorithm]()
        except KeyError:
            raise DigestMismatchError(f"unsupported digest algorithm {algorithm!r}") from None
        self.algorithm = algorithm
        self.size = 0

    @classmethod
    def for_digest(cls, digest: str) -> Hasher:
        return cls(validate_digest(digest).partition(":")[0])

    def update(self, data: bytes | memoryview) -> None:
        self._hash.update(data)
        self.size += len(data)

    def digest(self) -> str:
        return f"{self.algorithm}:{self._hash.hexdigest()}"


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    hasher = Hasher(algorithm)
    hasher.update(data)
    return hasher.digest()


def expect_digest(
    what: str, expected: str, actual: str, size: int = -1, got_size: int = -1
) -> None:
    """Raise :class:`DigestMismatchError` naming ``what`` unless the digests (and sizes) agree."""
    if expected != actual:
        raise DigestMismatchError(f"{what}: digest mismatch: expected {expected}, got {actual}")
    if size >= 0 and got_size >= 0 and size != got_size:
        raise DigestMismatchError(f"{what}: size mismatch: expected {size} bytes, got {got_size}")
