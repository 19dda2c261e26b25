"""A read-only registry on 127.0.0.1 that serves OCI layouts and controls the bytes it sends.

For tests that need what docker-registry cannot do: send a blob slowly
(``pace``), or send other bytes than the stored blob (``tamper``), and see
when each blob transfer started and ended (``log``). It answers the GETs
and HEADs of the distribution API a pull makes (``/v2/``, manifests by tag
or digest, blobs), nothing else.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from support.images import OciImage, digest
from support.registry import free_port

__all__ = ["LayoutRegistry", "flip_byte"]

PIECE = 64 << 10


def flip_byte(at: float) -> Callable[[bytes], bytes]:
    """A tamper that inverts the byte at fraction ``at`` of the blob."""

    def tamper(data: bytes) -> bytes:
        where = int(len(data) * at)
        return data[:where] + bytes([data[where] ^ 0xFF]) + data[where + 1 :]

    return tamper


class LayoutRegistry:
    """Serves ``NAME:TAG`` for each image added; stop it with :meth:`stop`."""

    def __init__(self) -> None:
        self.port = free_port()
        #: seconds to wait between pieces of PIECE bytes, per blob digest
        self.pace: dict[str, float] = {}
        #: what to send instead of a blob's bytes, per blob digest
        self.tamper: dict[str, Callable[[bytes], bytes]] = {}
        #: ("start" | "end", blob digest) in the order transfers began and finished
        self.log: list[tuple[str, str]] = []
        self._manifests: dict[tuple[str, str], bytes] = {}
        self._blobs: dict[str, Path] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def add(self, name: str, tag: str, image: OciImage) -> str:
        """Serve ``image`` as ``NAME:TAG``; returns ``HOST/NAME:TAG``."""
        manifest_digest = digest(image.manifest)
        self._manifests[(name, tag)] = image.manifest
        self._manifests[(name, manifest_digest)] = image.manifest
        blobs = image.path / "blobs" / "sha256"
        for path in blobs.iterdir():
            self._blobs["sha256:" + path.name] = path
        return f"{self.host}/{name}:{tag}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        registry = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()

            def do_HEAD(self) -> None:
                self._answer(send_body=False)

            def do_GET(self) -> None:
                self._answer(send_body=True)

            def _answer(self, send_body: bool) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/v2/":
                    self._send(200, b"{}", {"Docker-Distribution-API-Version": "registry/2.0"})
                    if send_body:
                        self.wfile.write(b"{}")
                    return
                name, kind, ref = _split(path)
                if kind == "manifests" and (name, ref) in registry._manifests:
                    body = registry._manifests[(name, ref)]
                    media = json.loads(body).get("mediaType", "")
                    self._send(
                        200, body, {"Content-Type": media, "Docker-Content-Digest": digest(body)}
                    )
                    if send_body:
                        self.wfile.write(body)
                    return
                if kind == "blobs" and ref in registry._blobs:
                    self._blob(ref, send_body)
                    return
                self._send(404, b"", {})

            def _blob(self, ref: str, send_body: bool) -> None:
                body = registry._blobs[ref].read_bytes()
                tamper = registry.tamper.get(ref)
                if tamper is not None:
                    body = tamper(body)
                self._send(200, body, {"Content-Type": "application/octet-stream"})
                if not send_body:
                    return
                with registry._lock:
                    registry.log.append(("start", ref))
                pace = registry.pace.get(ref, 0.0)
                try:
                    for at in range(0, len(body), PIECE):
                        self.wfile.write(body[at : at + PIECE])
                        if pace:
                            self.wfile.flush()
                            time.sleep(pace)
                finally:
                    with registry._lock:
                        registry.log.append(("end", ref))

        return Handler


def _split(path: str) -> tuple[str, str, str]:
    """``/v2/NAME/(manifests|blobs)/REF`` as (NAME, kind, REF); ("", "", "") otherwise."""
    parts = path.removeprefix("/v2/").split("/")
    if len(parts) < 3 or parts[-2] not in ("manifests", "blobs"):
        return "", "", ""
    return "/".join(parts[:-2]), parts[-2], parts[-1]
