"""The inspection API, as CRI-O's: ``/info``, ``/config`` and ``/containers/ID`` over HTTP.

CRI-O answers these on its CRI socket; crio's gRPC server owns that socket,
so they are served on a unix socket of their own, ``[crio.api]
inspect_listen`` (empty: ``crio-inspect.sock`` beside the CRI socket).
``crio status info|config|containers ID`` reads them. The JSON field names
are CRI-O's (``pkg/types``): ``/info`` has ``storage_driver``,
``storage_image``, ``storage_root``, ``cgroup_driver`` and
``default_id_mappings``; ``/containers/ID`` has ``name``, ``pid``,
``image``, ``image_ref``, ``created_time``, ``labels``, ``annotations``,
``crio_annotations``, ``log_path``, ``root``, ``sandbox``, ``ip_addresses``
and ``host_network``, and crio adds ``mounts``. ``/config`` is the running
configuration as TOML. An unknown container is a 404 with a plain-text
message, as CRI-O's ``http.Error``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crio._toml import dumps_model
from crio.errors import NotFoundError
from crio.httpd import HttpServer, Response

if TYPE_CHECKING:
    from crio.config import Config
    from crio.server.deps import Deps

__all__ = ["InspectServer", "container_info", "crio_info", "inspect_socket"]

log = logging.getLogger("crio.inspect")

SOCKET_NAME = "crio-inspect.sock"
JSON = "application/json"


def inspect_socket(config: Config) -> Path:
    """Where the inspection API listens for this configuration."""
    api = config.crio.api
    return Path(api.inspect_listen or Path(api.listen).with_name(SOCKET_NAME))


def crio_info(deps: Deps) -> dict[str, Any]:
    store = deps.store
    return {
        "storage_driver": store.driver.name if store is not None else "",
        "storage_image": "",
        "storage_root": deps.config.crio.root,
        "cgroup_driver": deps.config.crio.runtime.cgroup_manager,
        "default_id_mappings": {"uids": None, "gids": None},
    }


def container_info(deps: Deps, container_id: str) -> dict[str, Any]:
    """CRI-O's ContainerInfo of one container. :raises NotFoundError:"""
    if deps.state is None:
        raise NotFoundError(f"container with ID: {container_id} not found")
    ctr = deps.state.container(container_id)
    try:
        pod = deps.state.sandbox(ctr.pod_sandbox_id)
    except NotFoundError:
        pod = None
    return {
        "name": ctr.name,
        "pid": ctr.pid,
        "image": ctr.user_specified_image or ctr.image,
        "image_ref": ctr.image_ref,
        "created_time": ctr.created_at,
        "labels": dict(ctr.labels),
        "annotations": dict(ctr.annotations),
        "crio_annotations": {
            "io.kubernetes.cri-o.ContainerID": ctr.container_id,
            "io.kubernetes.cri-o.SandboxID": ctr.pod_sandbox_id,
            "io.kubernetes.cri-o.LogPath": ctr.log_path,
            "io.kubernetes.cri-o.MountPoint": ctr.rootfs,
        },
        "log_path": ctr.log_path,
        "root": ctr.rootfs,
        "sandbox": ctr.pod_sandbox_id,
        "ip_addresses": list(pod.ips) if pod is not None else [],
        "host_network": pod.host_network if pod is not None else None,
        "mounts": [
            {
                "container_path": m.container_path,
                "host_path": m.host_path,
                "readonly": m.readonly,
                "propagation": m.propagation.name.lower(),
            }
            for m in ctr.mounts
        ],
    }


class InspectServer:
    """Serves the inspection API for one daemon."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.path = inspect_socket(deps.config)
        self._server = HttpServer("inspect", self._handle)

    async def start(self) -> None:
        await self._server.listen_unix(self.path, "crio.api.inspect_listen")
        log.info("inspection API on unix socket %s", self.path)

    async def close(self) -> None:
        await self._server.close()

    async def _handle(self, path: str) -> Response:
        if path == "/info":
            return _json(crio_info(self.deps))
        if path == "/config":
            text = dumps_model(self.deps.config, "The configuration crio runs with.")
            return Response(200, text.encode(), "application/toml")
        if path.startswith("/containers/"):
            container_id = path.removeprefix("/containers/")
            try:
                return _json(container_info(self.deps, container_id))
            except NotFoundError:
                return Response(404, f"container with ID: {container_id} not found\n".encode())
        return Response(404, b"404 page not found\n")


def _json(value: Any) -> Response:
    return Response(200, json.dumps(value).encode(), JSON)


def fetch(socket_path: Path, path: str, timeout: float = 30.0) -> tuple[int, bytes]:
    """GET ``path`` from the inspection API at ``socket_path`` (for ``crio status``).

    :raises UnavailableError: nothing serves on the socket.
    """
    import http.client
    import socket

    from crio.errors import UnavailableError

    class _Connection(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(str(socket_path))

    connection = _Connection("localhost", timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    except OSError as exc:
        raise UnavailableError(
            f"cannot reach crio's inspection API at {socket_path}: {exc}; is crio running?"
        ) from exc
    finally:
        connection.close()
