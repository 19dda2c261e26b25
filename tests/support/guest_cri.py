"""A small CRI client the systemd guest runs with the crio it installed (``crio.api`` stubs).

The guest has no crictl: tests copy this file into the VM's share. Under TCG a
Python that imports grpc and the CRI stubs takes seconds to start, so the
tests start it once (``PYTHON guest_cri.py serve``: it listens on
:data:`SERVE_SOCKET`) and each call is a stdlib-only client
(``python -S guest_cri.py call COMMAND ARG...``) that hands it the command.
``guest_cri.py COMMAND ARG...`` runs one command in its own process.
Each command prints one JSON object; a gRPC failure prints
``{"error": CODE, "message": ...}`` and exits 1.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from typing import Any

SOCKET = "unix:///var/run/crio/crio.sock"
IMAGE = "localhost/busybox:latest"
#: Where ``serve`` listens (the guest's own /run).
SERVE_SOCKET = "/run/guest-cri.sock"


def _pod_config(name: str, parent: str, log_dir: str) -> Any:
    import uuid

    from crio.api import api_pb2 as api

    uid = uuid.uuid4().hex[:12]
    config = api.PodSandboxConfig(
        metadata=api.PodSandboxMetadata(name=name, namespace="node-test", uid=uid),
        log_directory=f"{log_dir}/{uid}",
    )
    config.linux.cgroup_parent = parent
    namespaces = config.linux.security_context.namespace_options
    namespaces.network = api.NODE
    namespaces.pid = api.CONTAINER  # no infra container: no pause image to pull
    return config


def main(argv: list[str]) -> dict[str, Any]:
    import grpc
    from google.protobuf.json_format import MessageToDict

    from crio.api import api_pb2 as api
    from crio.api import api_pb2_grpc

    command, args = argv[0], argv[1:]
    with grpc.insecure_channel(SOCKET) as channel:
        rt = api_pb2_grpc.RuntimeServiceStub(channel)
        images = api_pb2_grpc.ImageServiceStub(channel)
        if command == "version":
            return MessageToDict(rt.Version(api.VersionRequest(), timeout=30))
        if command == "pull":  # SOURCE [NAME]: pull, then tag? the source name is kept
            reply = images.PullImage(api.PullImageRequest(image=api.ImageSpec(image=args[0])))
            return {"image_ref": reply.image_ref}
        if command == "runp":  # NAME CGROUP_PARENT
            config = _pod_config(args[0], args[1], "/var/log/crio/pods")
            reply = rt.RunPodSandbox(api.RunPodSandboxRequest(config=config), timeout=120)
            status = rt.PodSandboxStatus(
                api.PodSandboxStatusRequest(pod_sandbox_id=reply.pod_sandbox_id, verbose=True)
            )
            return {"id": reply.pod_sandbox_id, "info": dict(status.info)}
        if command == "create":  # POD_ID NAME IMAGE MEMORY_BYTES ARG...
            pod = rt.PodSandboxStatus(api.PodSandboxStatusRequest(pod_sandbox_id=args[0]))
            sandbox = api.PodSandboxConfig(metadata=pod.status.metadata)
            sandbox.log_directory = pod.status.annotations.get("log_directory", "")
            config = api.ContainerConfig(
                metadata=api.ContainerMetadata(name=args[1]),
                image=api.ImageSpec(image=args[2]),
                command=args[4:],
                log_path=f"{args[1]}.log",
            )
            if int(args[3]):
                config.linux.resources.memory_limit_in_bytes = int(args[3])
            reply = rt.CreateContainer(
                api.CreateContainerRequest(
                    pod_sandbox_id=args[0], config=config, sandbox_config=sandbox
                ),
                timeout=120,
            )
            rt.StartContainer(api.StartContainerRequest(container_id=reply.container_id))
            return {"id": reply.container_id}
        if command == "status":  # CONTAINER_ID
            reply = rt.ContainerStatus(api.ContainerStatusRequest(container_id=args[0]))
            return MessageToDict(reply.status, preserving_proto_field_name=True)
        if command == "update":  # CONTAINER_ID MEMORY_BYTES CPU_SHARES
            resources = api.LinuxContainerResources(
                memory_limit_in_bytes=int(args[1]), cpu_shares=int(args[2])
            )
            rt.UpdateContainerResources(
                api.UpdateContainerResourcesRequest(container_id=args[0], linux=resources)
            )
            return {}
        if command == "stop":  # CONTAINER_ID
            rt.StopContainer(api.StopContainerRequest(container_id=args[0], timeout=10))
            return {}
        if command == "rm":  # CONTAINER_ID
            rt.RemoveContainer(api.RemoveContainerRequest(container_id=args[0]))
            return {}
        if command == "stopp":  # POD_ID
            rt.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=args[0]))
            return {}
        if command == "rmp":  # POD_ID
            rt.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=args[0]))
            return {}
        if command == "ps":
            reply = rt.ListContainers(api.ListContainersRequest())
            return {"containers": [MessageToDict(c) for c in reply.containers]}
    raise SystemExit(f"unknown command {command!r}")


def answer(argv: list[str]) -> tuple[dict[str, Any], int]:
    """One command's JSON reply and exit status."""
    import grpc

    try:
        return main(argv), 0
    except grpc.RpcError as exc:
        return {"error": exc.code().name, "message": exc.details()}, 1
    except SystemExit as exc:
        return {"error": "USAGE", "message": str(exc)}, 2


def serve(path: str = SERVE_SOCKET) -> None:
    """Answer commands, one connection at a time: a JSON list in, a JSON reply out."""
    import grpc  # noqa: F401  (imported once, here, not per call)

    if os.path.exists(path):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path + ".tmp")
    os.rename(path + ".tmp", path)  # callers wait for the path: it appears listening
    server.listen(8)
    while True:
        conn, _ = server.accept()
        with conn, conn.makefile("rwb") as stream:
            argv = json.loads(stream.readline())
            reply, status = answer(argv)
            stream.write(json.dumps({"reply": reply, "status": status}).encode() + b"\n")


def call(argv: list[str], path: str = SERVE_SOCKET) -> int:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(path)
        with conn.makefile("rwb") as stream:
            stream.write(json.dumps(argv).encode() + b"\n")
            stream.flush()
            answered = json.loads(stream.readline())
    print(json.dumps(answered["reply"]))
    return int(answered["status"])


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve()
    elif sys.argv[1:2] == ["call"]:
        sys.exit(call(sys.argv[2:]))
    else:
        reply, status = answer(sys.argv[1:])
        print(json.dumps(reply))
        sys.exit(status)
