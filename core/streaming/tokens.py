"""Single-use streaming tokens, after the kubelet's ``requestCache``.

Exec, Attach and PortForward answer with a URL holding a random token; the
streaming server trades the token for the request it stands for, once.
Tokens live for a minute; at most 1000 may wait at a time. The clock is
injected: this module does no I/O and reads no time by itself.
"""

from __future__ import annotations

import collections
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from crio.errors import CrioError, NotFoundError, ResourceExhaustedError

__all__ = ["DEFAULT_TTL", "MAX_PENDING", "TokenCache", "TokenExpiredError"]

DEFAULT_TTL = 60.0
MAX_PENDING = 1000

T = TypeVar("T")


class TokenExpiredError(CrioError):
    """The token existed but its minute is over (the server answers 404, with a body saying so)."""


@dataclass(frozen=True, slots=True)
class _Entry(Generic[T]):
    request: T
    expires: float


class TokenCache(Generic[T]):
    """Tokens to requests; ``consume`` removes them, expiry is checked at use."""

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        ttl: float = DEFAULT_TTL,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self._clock = clock
        self._ttl = ttl
        self._max = max_pending
        # Insertion order is expiry order: the oldest entries sit at the front.
        self._entries: collections.OrderedDict[str, _Entry[T]] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def insert(self, request: T) -> str:
        """Store ``request`` and return its new token.

        :raises ResourceExhaustedError: 1000 unexpired tokens are pending.
        """
        now = self._clock()
        self._drop_expired(now)
        if len(self._entries) >= self._max:
            raise ResourceExhaustedError(
                f"too many pending streaming requests ({self._max}); retry after some expire"
            )
        token = secrets.token_urlsafe(16)
        while token in self._entries:  # pragma: no cover - 128 random bits
            token = secrets.token_urlsafe(16)
        self._entries[token] = _Entry(request, now + self._ttl)
        return token

    def consume(self, token: str) -> T:
        """Trade a token for its request; the token is gone afterwards.

        :raises NotFoundError: unknown or already used.
        :raises TokenExpiredError: issued more than a minute ago.
        """
        entry = self._entries.pop(token, None)
        if entry is None:
            raise NotFoundError("streaming token is unknown or was already used")
        if self._clock() >= entry.expires:
            raise TokenExpiredError("streaming token expired; ask for a new URL")
        return entry.request

    def _drop_expired(self, now: float) -> None:
        # Expired entries are kept until room is needed, so that a late client
        # hears "expired" rather than "unknown"; past the limit they go.
        while self._entries:
            token, entry = next(iter(self._entries.items()))
            if entry.expires > now or len(self._entries) < self._max:
                return
            del self._entries[token]
