"""A Registry HTTP API v2 client: TLS, authentication, retries.

Authentication follows the distribution token spec: a request answered 401
carries ``WWW-Authenticate``; ``Basic`` means send the credentials,
``Bearer realm=..,service=..,scope=..`` means fetch a token from the realm
(with the credentials as Basic auth, or an OAuth2 refresh token) for the
scopes needed so far, and retry. Tokens are cached per scope set and
fetched again when they expire or when a request needs a scope the token
lacks (a push after a pull, a mount from another repository).

Connection errors, 429 and 5xx answers are retried with exponential backoff.
An insecure registry is tried over HTTPS without verification first, then
over plain HTTP.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

from crio.errors import CrioError, NotFoundError, PermissionDeniedError, UnavailableError
from crio.image.auth import Challenge, Credentials, parse_challenges

__all__ = ["RegistryClient", "RegistryError"]

log = logging.getLogger("crio.image.registry")

_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_BACKOFF = 0.2


class RegistryError(CrioError):
    """A registry answered with an error the caller did not expect."""


def _error_detail(response: httpx.Response) -> str:
    try:
        errors = json.loads(response.content).get("errors") or []
        return "; ".join(f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errors)
    except (ValueError, AttributeError, httpx.ResponseNotRead):
        return ""


def _ssl_context(host: str, verify: bool, certs_dir: str) -> ssl.SSLContext:
    context = ssl.create_default_context()  # the system's CA bundle
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    directory = Path(certs_dir) / host if certs_dir else None
    if directory is not None and directory.is_dir():
        for ca in sorted(directory.glob("*.crt")):
            context.load_verify_locations(cafile=str(ca))
        for cert in sorted(directory.glob("*.cert")):
            key = cert.with_suffix(".key")
            if key.exists():
                context.load_cert_chain(str(cert), str(key))
    return context


class RegistryClient:
    """One registry host (``host[:port]``), shared by the requests of one copy."""

    def __init__(
        self,
        host: str,
        *,
        insecure: bool = False,
        credentials: Credentials | None = None,
        certs_dir: str = "",
        retries: int = 4,
        user_agent: str = "crio",
    ) -> None:
        self.host = host
        self.insecure = insecure
        self.credentials = credentials or Credentials()
        self.retries = max(1, retries)
        self._scheme = ""  # decided by the first request
        self._challenge: Challenge | None = None
        self._tokens: dict[frozenset[str], tuple[str, float]] = {}
        self._scopes: set[str] = set()
        self._token_lock = asyncio.Lock()
        self._scheme_lock = asyncio.Lock()
        self._client = httpx.AsyncClient(
            verify=_ssl_context(host, not insecure, certs_dir),
            timeout=httpx.Timeout(60.0, connect=15.0),
            headers={"User-Agent": user_agent},
            follow_redirects=True,
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
        )
        #: scopes asked of the token server, in order (tests look at this)
        self.token_requests: list[tuple[str, ...]] = []

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- transport ----------------------------------------------------------

    async def _pick_scheme(self) -> None:
        async with self._scheme_lock:
            if self._scheme:
                return
            schemes = ("https", "http") if self.insecure else ("https",)
            last: Exception | None = None
            for scheme in schemes:
                try:
                    # Falling back to plain HTTP: one HTTPS try is enough.
                    attempts = 1 if len(schemes) > 1 and scheme == "https" else self.retries
                    response = await self._send_retrying(
                        "GET", f"{scheme}://{self.host}/v2/", {}, attempts=attempts
                    )
                except UnavailableError as exc:
                    last = exc
                    continue
                self._scheme = scheme
                await response.aread()
                await response.aclose()
                self._learn(response)
                return
            raise UnavailableError(f"registry {self.host} is unreachable: {last}")

    def _learn(self, response: httpx.Response) -> None:
        if response.status_code != 401:
            return
        for challenge in parse_challenges(response.headers.get("www-authenticate", "")):
            if challenge.scheme in ("bearer", "basic"):
                self._challenge = challenge
                return

    async def _send_retrying(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        content: object = None,
        attempts: int = 0,
    ) -> httpx.Response:
        delay = _BACKOFF
        replayable = content is None or isinstance(content, bytes)
        attempts = attempts or self.retries
        for attempt in range(1, attempts + 1):
            try:
                request = self._client.build_request(
                    method, url, headers=dict(headers), content=content
                )  # type: ignore[arg-type]
                response = await self._client.send(request, stream=True)
            except httpx.TransportError as exc:
                # A TLS failure (wrong certificate, HTTP on the other end) is not transient.
                tls = isinstance(exc.__context__, ssl.SSLError) or "SSL" in str(exc)
                if attempt == attempts or not replayable or tls:
                    raise UnavailableError(f"{method} {url}: {type(exc).__name__}: {exc}") from exc
                log.info("%s %s failed (%s), retrying in %.1fs", method, url, exc, delay)
            else:
                if (
                    response.status_code not in _RETRY_STATUS
                    or attempt == attempts
                    or not replayable
                ):
                    return response
                await response.aclose()
                log.info(
                    "%s %s answered %d, retrying in %.1fs", method, url, response.status_code, delay
                )
            await asyncio.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    # -- authentication -----------------------------------------------------

    async def _token(self, scopes: frozenset[str]) -> str:
        if self.credentials.registry_token:
            return self.credentials.registry_token
        async with self._token_lock:
            cached = self._tokens.get(scopes)
            if cached and cached[1] > time.monotonic():
                return cached[0]
            assert self._challenge is not None
            params = self._challenge.params
            realm = params.get("realm", "")
            if not realm:
                raise RegistryError(f"registry {self.host} asked for a token but named no realm")
            query: list[tuple[str, str]] = []
            if params.get("service"):
                query.append(("service", params["service"]))
            query += [("scope", s) for s in sorted(scopes)]
            self.token_requests.append(tuple(sorted(scopes)))
            creds = self.credentials
            if creds.identity_token:
                form = dict(query[:1])
                form.update(
                    grant_type="refresh_token",
                    refresh_token=creds.identity_token,
                    client_id="crio",
                    scope=" ".join(sorted(scopes)),
                )
                response = await self._client.post(realm, data=form)
            else:
                auth = (creds.username, creds.password) if creds.username else None
                response = await self._client.get(realm, params=query, auth=auth)
            if response.status_code in (401, 403):
                raise PermissionDeniedError(
                    f"registry {self.host}: token server refused the credentials "
                    f"(HTTP {response.status_code})"
                )
            if response.status_code != 200:
                raise RegistryError(f"token server {realm} answered HTTP {response.status_code}")
            try:
                doc = response.json()
                token = doc.get("token") or doc.get("access_token")
                expires = int(doc.get("expires_in") or 60)
            except (ValueError, AttributeError, TypeError):
                raise RegistryError(f"token server {realm} sent no token") from None
            if not token:
                raise RegistryError(f"token server {realm} sent no token")
            # Refresh a little early; tokens are short-lived (60 s by default).
            self._tokens[scopes] = (token, time.monotonic() + max(expires - 10, 5))
            return token

    async def _auth_header(self, scope: str) -> dict[str, str]:
        if self._challenge is None:
            return {}
        if self._challenge.scheme == "basic":
            if not self.credentials.username:
                return {}
            basic = httpx.BasicAuth(self.credentials.username, self.credentials.password)
            request = httpx.Request("GET", "http://x")
            return {"Authorization": next(basic.auth_flow(request)).headers["Authorization"]}
        if scope:
            self._scopes.add(scope)
        token = await self._token(frozenset(self._scopes))
        return {"Authorization": f"Bearer {token}"}

    # -- requests -----------------------------------------------------------

    def url(self, path: str) -> str:
        return f"{self._scheme}://{self.host}{path}"

    @asynccontextmanager
    async def request(
        self,
        method: str,
        path: str,
        *,
        scope: str = "",
        headers: Mapping[str, str] | None = None,
        content: bytes | AsyncIterator[bytes] | None = None,
    ) -> AsyncIterator[httpx.Response]:
        """Send with auth and retries; yield the streamed response (any status).

        ``path`` may also be an absolute URL (upload locations).
        """
        if not self._scheme:
            await self._pick_scheme()
        url = path if "://" in path else self.url(path)
        response: httpx.Response | None = None
        for attempt in range(2):
            sent = {**(headers or {}), **(await self._auth_header(scope))}
            response = await self._send_retrying(method, url, sent, content)
            if response.status_code != 401 or attempt == 1:
                break
            await response.aread()
            await response.aclose()
            self._learn(response)
            challenge = self._challenge
            if challenge is None or (challenge.scheme == "basic" and not self.credentials.username):
                break
            if challenge.scheme == "bearer":
                # The token lacks a scope (say push after pull) or was revoked:
                # ask again for everything needed so far plus what the challenge names.
                wanted = challenge.params.get("scope", "")
                if wanted:
                    self._scopes.update(wanted.split(" "))
                self._tokens.pop(frozenset(self._scopes), None)
            if content is not None and not isinstance(content, bytes):
                break  # a streamed body cannot be sent twice
        assert response is not None
        try:
            yield response
        finally:
            await response.aclose()

    async def check_login(self) -> None:
        """``GET /v2/`` with the credentials (a token without scope under Bearer auth)."""
        async with self.request("GET", "/v2/") as response:
            if response.status_code == 401:
                raise PermissionDeniedError(
                    f"login to {self.host}: unauthorized (wrong credentials?)"
                )
            await self.check(response, f"login to {self.host}")

    async def check(
        self, response: httpx.Response, what: str, ok: tuple[int, ...] = (200,)
    ) -> None:
        """Turn an unexpected status into the error class crio uses for it."""
        if response.status_code in ok:
            return
        await response.aread()
        detail = _error_detail(response) or response.reason_phrase
        message = f"{what}: {self.host} answered HTTP {response.status_code} ({detail})"
        if response.status_code in (401, 403):
            raise PermissionDeniedError(message)
        if response.status_code == 404:
            raise NotFoundError(message)
        if response.status_code >= 500:
            raise UnavailableError(message)
        raise RegistryError(message)
