"""Real registries for tests: Debian's docker-registry on 127.0.0.1, plus a token server.

Each :class:`Registry` has a private directory (config, storage, htpasswd)
and a free port, and is stopped by its PID. Three flavours:

* open: anyone may pull and push,
* ``htpasswd``: Basic authentication against a bcrypt htpasswd file,
* ``token``: Bearer tokens from :class:`TokenServer`, a small JWT issuer of
  the tests' own (ES256, the certificate in ``x5c`` and in the registry's
  ``rootcertbundle``), which records every scope it was asked for.

Schema 1 manifests are enabled so that tests can push signed schema 1 images.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

__all__ = ["REGISTRY_BIN", "Registry", "TokenServer", "free_port", "skopeo_push"]

REGISTRY_BIN = shutil.which("docker-registry") or "/usr/bin/docker-registry"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """A distribution token server: ``GET /token?service=S&scope=repository:N:A,B``.

    ``users`` maps user to (password, actions granted); anonymous callers get
    ``anonymous`` actions. Every request is recorded in :attr:`requests` as
    (user or "", tuple of scopes asked).
    """

    def __init__(
        self,
        directory: Path,
        users: Mapping[str, tuple[str, Sequence[str]]],
        anonymous: Sequence[str] = (),
        service: str = "crio-test-registry",
        issuer: str = "crio-test-issuer",
    ) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self.users = dict(users)
        self.anonymous = tuple(anonymous)
        self.service, self.issuer = service, issuer
        self.requests: list[tuple[str, tuple[str, ...]]] = []
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "crio test token signer")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self._cert_der = cert.public_bytes(serialization.Encoding.DER)
        self.cert_file = directory / "token-cert.pem"
        self.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.port = free_port()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def _sign(self, claims: dict[str, object]) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        header = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(self._cert_der).decode()]}
        signing_input = (
            f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        )
        der = self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def issue(self, user: str, scopes: Sequence[str]) -> str:
        allowed = set(self.users[user][1]) if user else set(self.anonymous)
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            granted = [a for a in actions.split(",") if a in allowed]
            access.append({"type": kind, "name": name, "actions": granted})
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": user,
            "aud": self.service,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        return self._sign(claims)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                return

            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                scopes = tuple(s for value in query.get("scope", []) for s in value.split(" ") if s)
                user = ""
                header = self.headers.get("Authorization", "")
                if header.startswith("Basic "):
                    user, _, password = base64.b64decode(header[6:]).decode().partition(":")
                    if server.users.get(user, ("\0",))[0] != password:
                        server.requests.append((f"!{user}", scopes))
                        self.send_response(401)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                server.requests.append((user, scopes))
                token = server.issue(user, scopes)
                body = json.dumps(
                    {"token": token, "access_token": token, "expires_in": 300}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler


class Registry:
    """One docker-registry process with its own config, storage and port."""

    def __init__(
        self,
        htpasswd: Mapping[str, str] | None = None,
        token: TokenServer | None = None,
        base: Path | None = None,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        self.base = base or Path(tempfile.mkdtemp(prefix="crio-registry-"))
        self.base.mkdir(parents=True, exist_ok=True)
        self.storage = self.base / "storage"
        self.port = free_port()
        self.htpasswd = dict(htpasswd or {})
        self.token = token
        self.tls = tls
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.base / "registry.log"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _config(self) -> str:
        lines = [
            "version: 0.1",
            "log:",
            "  level: info",
            "  accesslog:",
            "    disabled: true",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {self.storage}",
            "  delete:",
            "    enabled: true",
            "http:",
            f"  addr: 127.0.0.1:{self.port}",
            f"  secret: {secrets.token_hex(16)}",
            *(
                ["  tls:", f"    certificate: {self.tls[0]}", f"    key: {self.tls[1]}"]
                if self.tls
                else []
            ),
            "compatibility:",
            "  schema1:",
            "    enabled: true",
        ]
        if self.htpasswd:
            path = self.base / "htpasswd"
            path.write_text("")
            for user, password in self.htpasswd.items():
                subprocess.run(
                    ["htpasswd", "-bB", str(path), user, password], check=True, capture_output=True
                )
            lines += ["auth:", "  htpasswd:", "    realm: crio-test", f"    path: {path}"]
        elif self.token is not None:
            lines += [
                "auth:",
                "  token:",
                f"    realm: {self.token.realm}",
                f"    service: {self.token.service}",
                f"    issuer: {self.token.issuer}",
                f"    rootcertbundle: {self.token.cert_file}",
            ]
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 20.0) -> None:
        config = self.base / "config.yml"
        config.write_text(self._config())
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [REGISTRY_BIN, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited:\n{self.log.read_text()}")
            try:
                if self.tls:
                    import ssl

                    insecure = ssl.create_default_context()
                    insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE
                    urllib.request.urlopen(
                        f"https://{self.host}/v2/", timeout=1, context=insecure
                    ).close()
                else:
                    urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1).close()
                return
            except urllib.error.HTTPError:
                return  # 401: up, and wants auth
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"docker-registry did not come up:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def blob_file(self, digest: str) -> Path:
        """Where the registry keeps a blob (tests corrupt it to check verification)."""
        algorithm, _, hexpart = digest.partition(":")
        return (
            self.storage / "docker/registry/v2/blobs" / algorithm / hexpart[:2] / hexpart / "data"
        )

    def manifest_revision_dir(self, repository: str) -> Path:
        return self.storage / "docker/registry/v2/repositories" / repository / "_manifests"


@contextmanager
def running(**kwargs: object) -> Iterator[Registry]:
    registry = Registry(**kwargs)  # type: ignore[arg-type]
    try:
        registry.start()
        yield registry
    finally:
        registry.cleanup()


def skopeo_push(
    source: str,
    registry: Registry,
    name: str,
    *extra: str,
    creds: str = "",
    env: Mapping[str, str] | None = None,
) -> str:
    """``skopeo copy SOURCE docker://HOST/NAME`` over plain HTTP; returns the pushed digest."""
    digest_file = registry.base / f"digest-{secrets.token_hex(4)}"
    command = [
        "skopeo",
        "--insecure-policy",
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        "--digestfile",
        str(digest_file),
        *extra,
    ]
    if creds:
        command += ["--dest-creds", creds]
    command += [source, f"docker://{registry.host}/{name}"]
    result = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=120
    )
    if result.returncode != 0:
        raise RuntimeError(f"skopeo copy failed: {result.stderr}")
    digest = digest_file.read_text().strip()
    digest_file.unlink()
    return digest


def sha256_file(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


class FlakyProxy:
    """An HTTP proxy in front of a registry that fails on purpose, to test retries.

    For each blob: the first GET is answered 503, the second sends half the
    body and drops the connection; later GETs (with a Range header from a
    resuming client) pass through. Manifest GETs are answered 502 once.
    :attr:`log` records (method, path, Range header, status sent).
    """

    def __init__(self, target: str) -> None:
        self.target = target
        self.port = free_port()
        self.log: list[tuple[str, str, str, int]] = []
        self._seen: dict[str, int] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        import http.client

        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def _relay(self, method: str) -> None:
                kind = "/blobs/" if "/blobs/" in self.path else "/manifests/"
                with proxy._lock:
                    count = proxy._seen.get(self.path, 0) + 1
                    proxy._seen[self.path] = count
                rng = self.headers.get("Range", "")
                if method == "GET" and (
                    (kind == "/blobs/" and count == 1) or (kind == "/manifests/" and count == 1)
                ):
                    status = 503 if kind == "/blobs/" else 502
                    proxy.log.append((method, self.path, rng, status))
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                upstream = http.client.HTTPConnection(proxy.target, timeout=30)
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")
                }
                upstream.request(method, self.path, headers=headers)
                response = upstream.getresponse()
                body = response.read()
                proxy.log.append((method, self.path, rng, response.status))
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                cut = method == "GET" and kind == "/blobs/" and count == 2 and len(body) > 1000
                if cut:
                    self.send_header("Connection", "close")
                self.end_headers()
                if method == "GET":
                    self.wfile.write(body[: len(body) // 2] if cut else body)
                upstream.close()
                if cut:
                    self.wfile.flush()
                    self.close_connection = True

            def do_GET(self) -> None:
                self._relay("GET")

            def do_HEAD(self) -> None:
                self._relay("HEAD")

        return Handler


def make_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A test CA and a server certificate for 127.0.0.1 signed by it: (ca.crt, cert, key)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "crio test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    paths = (directory / "ca.crt", directory / "server.crt", directory / "server.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths
