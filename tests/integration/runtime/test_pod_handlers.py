"""Mixed runtimes: RuntimeClass handlers, the 2017 TrustedSandbox annotation, unknown handlers."""

from __future__ import annotations

import json

import grpc

from crio.api import api_pb2 as api
from support.cri import container_config, rpc_error
from support.node import Node

TRUSTED = "io.kubernetes.cri-o.TrustedSandbox"


def _runtime_of(node: Node, cid: str) -> str:
    reply = node.cri.rt.ContainerStatus(api.ContainerStatusRequest(container_id=cid, verbose=True))
    return json.loads(reply.info["info"])["runtimeHandler"]


def test_runc_and_crun_pods_side_by_side(node: Node) -> None:
    pods = {h: node.cri.run_pod(node.pod(), runtime_handler=h) for h in ("runc", "crun")}
    cids = {h: node.cri.create(p, container_config("c"), start=True) for h, p in pods.items()}
    for handler, cid in cids.items():
        assert node.cri.pod_status(pods[handler]).runtime_handler == handler
        assert _runtime_of(node, cid) == handler
        state = node.base / f"rt-{handler}" / cid
        assert state.is_dir(), f"{handler} keeps its state in its own runtime_root"
    default = node.cri.run_pod(node.pod())
    assert node.cri.pod_status(default).runtime_handler == "runc"  # default_runtime


def test_trusted_sandbox_annotation_picks_the_untrusted_runtime(make_node) -> None:  # type: ignore[no-untyped-def]
    node = make_node({"crio.runtime": {"runtime_untrusted_workload": "crun"}})
    node.use_loopback_network()

    def handler_of(**pod: object) -> str:
        pod_id = node.cri.run_pod(node.pod(host_network=False, **pod), **runtime)  # type: ignore[arg-type]
        return node.cri.pod_status(pod_id).runtime_handler

    runtime: dict[str, str] = {}
    assert handler_of(annotations={TRUSTED: "false"}) == "crun"
    assert handler_of(annotations={TRUSTED: "true"}) == "runc"
    assert handler_of() == "runc"
    # Pods in the host's namespaces are always trusted.
    assert handler_of(annotations={TRUSTED: "false"}, pid=api.NODE) == "runc"
    assert handler_of(annotations={TRUSTED: "false"}, ipc=api.NODE) == "runc"
    # A RuntimeClass handler wins over the annotation.
    runtime["runtime_handler"] = "runc"
    assert handler_of(annotations={TRUSTED: "false"}) == "runc"
    error = rpc_error(node.cri.run_pod, node.pod(annotations={TRUSTED: "maybe"}))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert TRUSTED in error.details()


def test_untrusted_by_default(make_node) -> None:  # type: ignore[no-untyped-def]
    node = make_node(
        {
            "crio.runtime": {
                "runtime_untrusted_workload": "crun",
                "default_workload_trust": "untrusted",
            }
        }
    )
    node.use_loopback_network()
    pod = node.cri.run_pod(node.pod(host_network=False))
    assert node.cri.pod_status(pod).runtime_handler == "crun"
    pod = node.cri.run_pod(node.pod(host_network=False, annotations={TRUSTED: "true"}))
    assert node.cri.pod_status(pod).runtime_handler == "runc"
    # Host-network pods are in the host's namespaces: trusted even by default.
    pod = node.cri.run_pod(node.pod())
    assert node.cri.pod_status(pod).runtime_handler == "runc"


def test_unknown_handler_is_refused_by_name(node: Node) -> None:
    error = rpc_error(node.cri.run_pod, node.pod(), runtime_handler="kata-qemu")
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "runtime_handler 'kata-qemu'" in error.details()
    assert "runc" in error.details() and "crun" in error.details()
    assert node.cri.pods() == []
