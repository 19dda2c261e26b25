"""Clear pods through a real crio on a CNI bridge: one pod VM for this module, next to runc pods.

What only a VM pod has: the guest kernel seen from inside, the pod IP on the
bridge reached from a runc pod and back, the guest's interfaces in the pod
stats, and a teardown that leaves no VM process or mount. The CRI cases a VM
pod shares with runc and crun pods (exec, attach, logs, port forward,
resources ...) are in ../conformance, run on all three.
"""

from __future__ import annotations

import ipaddress
import json
import platform
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from crio.api import api_pb2 as api
from support.cni import CNIEnv
from support.cri import container_config, rpc_error
from support.node import Node, start_node, stop_node
from support.vm import vm_assets_or_skip

pytestmark = pytest.mark.slow


class ClearNode:
    def __init__(self, node: Node, cni: CNIEnv, vm_root: Path, release: str) -> None:
        self.node, self.cni, self.vm_root, self.release = node, cni, vm_root, release
        self.pod_id = ""

    @property
    def cri(self) -> Any:
        return self.node.cri


@pytest.fixture(scope="module")
def clear() -> Iterator[ClearNode]:
    assets = vm_assets_or_skip()
    if shutil.which("iptables") is None or not Path("/usr/lib/cni/bridge").exists():
        pytest.skip("needs iptables and the CNI plugins in /usr/lib/cni")
    vm_root = Path(tempfile.mkdtemp(prefix="crio-vmr-", dir="/tmp"))
    node = start_node(
        {
            "crio.runtime.runtimes.clear": {
                "runtime_type": "vm",
                "runtime_root": str(vm_root),
                "kernel": str(assets.kernel),
                "initrd": str(assets.initrd),
                "boot_timeout": 300,
            }
        }
    )
    cni = CNIEnv(node.base / "cni")
    cni.net_dir = node.base / "net.d"
    cni.write(cni.conflist(portmap=False))
    clear = ClearNode(node, cni, vm_root, assets.kernel_release)
    try:
        started = time.monotonic()
        clear.pod_id = node.cri.run_pod(
            node.pod(host_network=False, hostname="clearpod"), runtime_handler="clear"
        )
        cni.container_ids.append(clear.pod_id)
        print(f"\nclear pod up (VM booted) in {time.monotonic() - started:.1f}s")
        yield clear
    finally:
        try:
            stop_node(node)
        finally:
            cni.cleanup()
            leftovers = [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
                         if str(vm_root) in line]  # fmt: skip
            shutil.rmtree(vm_root, ignore_errors=True)
            assert not leftovers, leftovers
            assert not list(vm_root.glob("*")), "a VM directory was left"


def _log_text(path: str) -> str:
    return Path(path).read_text() if Path(path).exists() else ""


def _wait(predicate: Any, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_the_clear_pod_is_ready_with_an_ip_on_the_bridge(clear: ClearNode) -> None:
    status = clear.cri.pod_status(clear.pod_id)
    assert status.state == api.SANDBOX_READY
    assert status.runtime_handler == "clear"
    assert ipaddress.ip_address(status.network.ip) in ipaddress.ip_network(clear.cni.subnet)
    ready, = [c for c in clear.cri.rt.Status(api.StatusRequest()).status.conditions
              if c.type == "RuntimeReady"]  # fmt: skip
    assert ready.status, ready.message


def test_container_lifecycle_logs_exec_and_the_guest_kernel(clear: ClearNode) -> None:
    script = "echo hello from $(uname -r); echo oops >&2; exec sleep 3600"
    cid = clear.cri.create(clear.pod_id, container_config("life", ["sh", "-c", script]), start=True)
    status = clear.cri.status(cid)
    assert status.state == api.CONTAINER_RUNNING
    _wait(lambda: "oops" in _log_text(status.log_path), "the container's log")
    lines = _log_text(status.log_path).splitlines()
    assert any(f" stdout F hello from {clear.release}" in line for line in lines), lines
    assert any(line.endswith(" stderr F oops") for line in lines), lines
    stamp = lines[0].split(" ")[0]
    assert stamp[10] == "T" and len(stamp.split(".")[1]) >= 9 + 6  # RFC 3339, 9 digits, offset

    result = clear.cri.exec(cid, ["uname", "-r"])
    assert result.exit_code == 0 and result.stdout.decode().strip() == clear.release
    assert clear.release != platform.release()
    result = clear.cri.exec(cid, ["sh", "-c", "echo to-err >&2; exit 9"])
    assert (result.exit_code, result.stderr) == (9, b"to-err\n")
    assert clear.cri.exec(cid, ["hostname"]).stdout == b"clearpod\n"

    stats = clear.cri.rt.ContainerStats(api.ContainerStatsRequest(container_id=cid)).stats
    assert stats.memory.working_set_bytes.value > 0 and stats.cpu.usage_core_nano_seconds.value > 0

    clear.cri.stop(cid, timeout=1)  # sh is PID 1: SIGTERM is ignored, SIGKILL after 1s
    status = clear.cri.status(cid)
    assert status.state == api.CONTAINER_EXITED
    assert (status.exit_code, status.reason) == (137, "Error")
    clear.cri.remove(cid)
    error = rpc_error(clear.cri.status, cid)
    assert error.code() is grpc.StatusCode.NOT_FOUND


def test_runc_crun_and_clear_pods_side_by_side(clear: ClearNode) -> None:
    kernels = {}
    for handler in ("runc", "crun"):
        pod = clear.cri.run_pod(clear.node.pod(host_network=False), runtime_handler=handler)
        clear.cni.container_ids.append(pod)
        cid = clear.cri.create(pod, container_config("k"), start=True)
        kernels[handler] = clear.cri.exec(cid, ["uname", "-r"]).stdout.decode().strip()
        assert clear.cri.pod_status(pod).runtime_handler == handler
    cid = clear.cri.create(clear.pod_id, container_config("k"), start=True)
    kernels["clear"] = clear.cri.exec(cid, ["uname", "-r"]).stdout.decode().strip()
    assert kernels == {
        "runc": platform.release(),
        "crun": platform.release(),
        "clear": clear.release,
    }


WEB = (
    "mkdir -p /www && echo served-from-{} > /www/index.html && "
    "exec busybox httpd -f -p 8080 -h /www"
)


def _fetch(clear: ClearNode, cid: str, ip: str) -> bytes:
    result = None
    for _ in range(150):  # until httpd listens
        result = clear.cri.exec(cid, ["wget", "-q", "-O", "-", f"http://{ip}:8080/"])
        if result.exit_code == 0:
            return bytes(result.stdout)
        time.sleep(0.2)
    raise AssertionError(f"no answer from {ip}:8080: {result}")


def test_the_clear_pod_ip_is_reachable_from_a_runc_pod_and_back(clear: ClearNode) -> None:
    in_vm = clear.cri.create(
        clear.pod_id, container_config("web", ["sh", "-c", WEB.format("vm")]), start=True
    )
    runc_pod = clear.cri.run_pod(clear.node.pod(host_network=False), runtime_handler="runc")
    clear.cni.container_ids.append(runc_pod)
    on_host = clear.cri.create(
        runc_pod, container_config("web", ["sh", "-c", WEB.format("runc")]), start=True
    )
    vm_ip = clear.cri.pod_status(clear.pod_id).network.ip
    runc_ip = clear.cri.pod_status(runc_pod).network.ip
    assert _fetch(clear, on_host, vm_ip) == b"served-from-vm\n"
    assert _fetch(clear, in_vm, runc_ip) == b"served-from-runc\n"


def test_resources_are_updated_in_the_guest_and_pod_stats_come_from_it(clear: ClearNode) -> None:
    cid = clear.cri.create(clear.pod_id, container_config("res"), start=True)
    limit = 96 * 1024 * 1024
    clear.cri.rt.UpdateContainerResources(
        api.UpdateContainerResourcesRequest(
            container_id=cid, linux=api.LinuxContainerResources(memory_limit_in_bytes=limit)
        )
    )
    # cgroup v2 in the guest: crun turned the v1-style limit into memory.max,
    # which the container sees at the root of its cgroup namespace.
    assert clear.cri.exec(cid, ["cat", "/proc/self/cgroup"]).stdout == b"0::/\n"
    inside = clear.cri.exec(cid, ["cat", "/sys/fs/cgroup/memory.max"]).stdout.decode().strip()
    assert inside == str(limit)
    stats = clear.cri.rt.PodSandboxStats(
        api.PodSandboxStatsRequest(pod_sandbox_id=clear.pod_id)
    ).stats
    assert stats.linux.cpu.usage_core_nano_seconds.value > 0
    assert stats.linux.memory.working_set_bytes.value > 0
    names = [i.name for i in stats.linux.network.interfaces] or [
        stats.linux.network.default_interface.name
    ]
    assert "eth0" in names, stats.linux.network
    clear.cri.stop(cid)
    clear.cri.remove(cid)


def test_zz_stopping_and_removing_the_pod_leaves_nothing(clear: ClearNode) -> None:
    cid = clear.cri.create(clear.pod_id, container_config("last"), start=True)
    run_dir = next(clear.vm_root.iterdir())
    supervisor = json.loads((run_dir / "supervisor.json").read_text())
    clear.cri.stop_pod(clear.pod_id)
    assert clear.cri.status(cid).state == api.CONTAINER_EXITED
    assert clear.cri.pod_status(clear.pod_id).state == api.SANDBOX_NOTREADY
    for pid in (
        supervisor["supervisor_pid"],
        supervisor["qemu_pid"],
        *supervisor["virtiofsd_pids"],
    ):
        assert not Path(f"/proc/{pid}").exists(), f"VM process {pid} outlived StopPodSandbox"
    clear.cri.remove_pod(clear.pod_id)
    assert not list(clear.vm_root.iterdir())
    assert str(clear.vm_root) not in Path("/proc/self/mountinfo").read_text()
