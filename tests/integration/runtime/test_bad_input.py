"""Every bad request gets the right status code and a message naming the field; nothing stays."""

from __future__ import annotations

import json
from collections.abc import Callable

import grpc
import pytest

from crio.api import api_pb2 as api
from support.chaos_env import conmons_of
from support.cri import container_config, rpc_error
from support.node import Node

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
EXISTS = grpc.StatusCode.ALREADY_EXISTS
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


def _stored_containers(node: Node) -> list[str]:
    path = node.base / "root" / "overlay-containers" / "containers.json"
    return [c["id"] for c in json.loads(path.read_text())] if path.exists() else []


def _pod_cases(node: Node) -> list[tuple[str, api.PodSandboxConfig, str, grpc.StatusCode, str]]:
    def pod(**kw: object) -> api.PodSandboxConfig:
        return node.pod(**kw)  # type: ignore[arg-type]

    no_meta = pod()
    no_meta.ClearField("metadata")
    no_name = pod()
    no_name.metadata.name = ""
    no_uid = pod()
    no_uid.metadata.uid = ""
    target = pod()
    target.linux.security_context.namespace_options.pid = api.TARGET
    bad_cgroup = pod()
    bad_cgroup.linux.cgroup_parent = "relative/path"
    bad_logdir = pod()
    bad_logdir.log_directory = "logs"
    bad_port = pod(port_mappings=[api.PortMapping(container_port=0, host_port=80)])
    return [
        ("missing metadata", no_meta, "", INVALID, "config.metadata is missing"),
        ("empty name", no_name, "", INVALID, "config.metadata.name is empty"),
        ("empty uid", no_uid, "", INVALID, "config.metadata.uid is empty"),
        ("pid TARGET", target, "", INVALID, "namespace_options.pid"),
        ("relative cgroup parent", bad_cgroup, "", INVALID, "config.linux.cgroup_parent"),
        ("relative log directory", bad_logdir, "", INVALID, "config.log_directory"),
        (
            "node-wide sysctl",
            pod(sysctls={"vm.swappiness": "1"}),
            "",
            INVALID,
            "linux.sysctls[vm.swappiness]",
        ),
        (
            "net sysctl on host network",
            pod(sysctls={"net.ipv4.ip_forward": "1"}),
            "",
            INVALID,
            "linux.sysctls[net.ipv4.ip_forward]",
        ),
        ("bad hostname", pod(hostname="bad_host!"), "", INVALID, "config.hostname"),
        ("container port 0", bad_port, "", INVALID, "config.port_mappings[0].container_port"),
        (
            "bad dns server",
            pod(dns=api.DNSConfig(servers=["1.2.3.4 5"])),
            "",
            INVALID,
            "dns_config.servers[0]",
        ),
        ("unknown handler", pod(), "nope", INVALID, "runtime_handler 'nope'"),
    ]


def test_bad_pod_requests(node: Node) -> None:
    for what, config, handler, code, text in _pod_cases(node):
        error = rpc_error(node.cri.run_pod, config, runtime_handler=handler)
        assert (error.code(), text in error.details()) == (code, True), (what, error.details())
    assert node.cri.pods() == []


def _container_cases(node: Node) -> list[tuple[str, api.ContainerConfig, grpc.StatusCode, str]]:
    sec = api.LinuxContainerSecurityContext
    res = api.LinuxContainerResources
    no_meta = container_config("x")
    no_meta.ClearField("metadata")
    no_image = container_config("x", image="")
    return [
        ("missing metadata", no_meta, INVALID, "config.metadata is missing"),
        ("empty image", no_image, INVALID, "config.image.image is empty"),
        (
            "unknown image",
            container_config("x", image="localhost/nope:1"),
            NOT_FOUND,
            "config.image.image",
        ),
        (
            "missing mount source",
            container_config(
                "x", mounts=[api.Mount(container_path="/data", host_path="/no/such/dir")]
            ),
            INVALID,
            "mounts[0].host_path",
        ),
        (
            "relative mount target",
            container_config("x", mounts=[api.Mount(container_path="data", host_path="/tmp")]),
            INVALID,
            "mounts[0].container_path",
        ),
        (
            "negative memory",
            container_config("x", resources=res(memory_limit_in_bytes=-1)),
            INVALID,
            "memory_limit_in_bytes",
        ),
        (
            "negative cpu shares",
            container_config("x", resources=res(cpu_shares=-2)),
            INVALID,
            "cpu_shares",
        ),
        (
            "cpu period too small",
            container_config("x", resources=res(cpu_period=10)),
            INVALID,
            "cpu_period",
        ),
        (
            "bad cpuset",
            container_config("x", resources=res(cpuset_cpus="0-a")),
            INVALID,
            "cpuset_cpus",
        ),
        (
            "unified on cgroup v1",
            container_config("x", resources=res(unified={"memory.max": "1"})),
            INVALID,
            "unified",
        ),
        (
            "unknown capability",
            container_config(
                "x", security=sec(capabilities=api.Capability(add_capabilities=["FLY"]))
            ),
            INVALID,
            "add_capabilities[0]",
        ),
        (
            "unknown user",
            container_config("x", security=sec(run_as_username="ghost")),
            INVALID,
            "run_as_username",
        ),
        (
            "group without user",
            container_config("x", security=sec(run_as_group=api.Int64Value(value=1))),
            INVALID,
            "run_as_group",
        ),
        (
            "privileged in a plain pod",
            container_config("x", security=sec(privileged=True)),
            INVALID,
            "privileged",
        ),
        (
            "missing seccomp profile",
            container_config(
                "x",
                security=sec(
                    seccomp=api.SecurityProfile(
                        profile_type=api.SecurityProfile.Localhost, localhost_ref="/no/profile.json"
                    )
                ),
            ),
            INVALID,
            "seccomp.localhost_ref",
        ),
        (
            "missing device",
            container_config(
                "x", devices=[api.Device(container_path="/dev/x", host_path="/dev/nope")]
            ),
            INVALID,
            "devices[0].host_path",
        ),
        (
            "log path escaping",
            container_config("x", log_path="../../x.log"),
            INVALID,
            "config.log_path",
        ),
        ("empty command", container_config("x", command=[""]), INVALID, "command"),
        (
            "userns mappings",
            container_config(
                "x",
                security=sec(
                    namespace_options=api.NamespaceOption(
                        userns_options=api.UserNamespace(
                            mode=api.POD, uids=[api.IDMapping(host_id=1, container_id=0, length=1)]
                        )
                    )
                ),
            ),
            INVALID,
            "userns_options",
        ),
    ]


def test_bad_container_requests_leave_nothing(node: Node) -> None:
    pod_id = node.cri.run_pod(node.pod())
    for what, config, code, text in _container_cases(node):
        error = rpc_error(node.cri.create, pod_id, config)
        assert (error.code(), text in error.details()) == (code, True), (what, error.details())
    assert node.cri.containers() == []
    assert _stored_containers(node) == []
    # No conmon and no bundle directory outlives a failed create.
    assert conmons_of(node.base) == []
    assert not any((node.base / "runroot" / "overlay-containers").glob("*/userdata"))
    # The name of a failed create is free again.
    cid = node.cri.create(pod_id, container_config("x"))
    assert node.cri.status(cid).metadata.name == "x"


def test_duplicate_names_and_wrong_pods(node: Node) -> None:
    config = node.pod()
    pod_id = node.cri.run_pod(config)
    error = rpc_error(node.cri.run_pod, config)
    assert error.code() is EXISTS and pod_id in error.details()
    node.cri.create(pod_id, container_config("c"))
    error = rpc_error(node.cri.create, pod_id, container_config("c"))
    assert error.code() is EXISTS and "k8s_c_" in error.details()
    second = container_config("c")
    second.metadata.attempt = 1
    node.cri.create(pod_id, second)  # another attempt is another name
    error = rpc_error(node.cri.create, "f" * 64, container_config("d"))
    assert error.code() is NOT_FOUND and "pod sandbox" in error.details()
    node.cri.stop_pod(pod_id)
    error = rpc_error(node.cri.create, pod_id, container_config("d"))
    assert error.code() is PRECONDITION and "not ready" in error.details()
    assert len(_stored_containers(node)) == 2


@pytest.mark.parametrize(
    ("call", "code", "text"),
    [
        (lambda c, cid: c.start(cid), PRECONDITION, "is running, not created"),
        (lambda c, cid: c.exec(cid, []), INVALID, "cmd is empty"),
        (
            lambda c, cid: c.rt.ExecSync(
                api.ExecSyncRequest(container_id=cid, cmd=["true"], timeout=-1)
            ),
            INVALID,
            "timeout -1",
        ),
        (lambda c, cid: c.stop(cid, timeout=-5), INVALID, "timeout -5"),
        (lambda c, cid: c.start(""), INVALID, "container_id is empty"),
        (lambda c, cid: c.status("0" * 64), NOT_FOUND, "0" * 64),
        (
            lambda c, cid: c.rt.UpdateContainerResources(
                api.UpdateContainerResourcesRequest(
                    container_id=cid, linux=api.LinuxContainerResources(cpu_quota=-3)
                )
            ),
            INVALID,
            "linux.cpu_quota",
        ),
        (
            lambda c, cid: c.rt.ReopenContainerLog(
                api.ReopenContainerLogRequest(container_id="9" * 64)
            ),
            NOT_FOUND,
            "9" * 64,
        ),
    ],
)
def test_bad_container_calls(node: Node, call: Callable, code: grpc.StatusCode, text: str) -> None:  # type: ignore[type-arg]
    pod_id = node.cri.run_pod(node.pod())
    cid = node.cri.create(pod_id, container_config("c"), start=True)
    error = rpc_error(call, node.cri, cid)
    assert error.code() is code and text in error.details(), error.details()


def test_exec_in_an_exited_container(node: Node) -> None:
    pod_id = node.cri.run_pod(node.pod())
    cid = node.cri.create(pod_id, container_config("c"), start=True)
    node.cri.stop(cid)
    error = rpc_error(node.cri.exec, cid, ["true"])
    assert error.code() is PRECONDITION and "exited, not running" in error.details()


def test_runtime_errors_reach_the_caller_and_leave_nothing(node: Node, handler: str) -> None:
    pod_id = node.cri.run_pod(node.pod(), runtime_handler=handler)
    config = container_config("broken", ["/no/such/program"])
    try:
        cid = node.cri.create(pod_id, config)
    except grpc.RpcError as error:  # runc finds out at create
        assert error.code() is grpc.StatusCode.INTERNAL
        assert "/no/such/program" in error.details()
    else:  # crun at start
        error = rpc_error(node.cri.start, cid)
        assert error.code() is grpc.StatusCode.INTERNAL
        assert "/no/such/program" in error.details()
        assert node.cri.status(cid).state == api.CONTAINER_EXITED
        node.cri.remove(cid)
    assert node.cri.containers() == []
    assert _stored_containers(node) == []
    assert list((node.base / f"rt-{handler}").iterdir()) == []
    assert conmons_of(node.base) == []
