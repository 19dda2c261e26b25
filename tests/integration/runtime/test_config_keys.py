"""Configuration keys seen from real containers: each one changes what it says it changes."""

from __future__ import annotations

import os
import signal
from typing import Any

import grpc
import pytest

from crio.api import api_pb2 as api
from support.chaos_env import conmons_of
from support.cri import container_config, rpc_error
from support.node import HANDLERS


def _status_field(node: Any, cid: str, name: str) -> str:
    text = node.cri.exec(cid, ["cat", "/proc/self/status"]).stdout.decode()
    return next(line.split(":", 1)[1].strip() for line in text.splitlines()
                if line.startswith(f"{name}:"))  # fmt: skip


def test_ctr_stop_timeout_bounds_the_wait_for_the_exit_after_sigkill(make_node: Any) -> None:
    node = make_node({"crio.runtime": {"ctr_stop_timeout": 2}})
    for handler in HANDLERS:
        pod_id = node.cri.run_pod(node.pod(), runtime_handler=handler)
        cid = node.cri.create(pod_id, container_config("c"), start=True)
        monitor = dict(conmons_of(node.base))[cid]
        # A stopped conmon reaps nothing and writes no exit file: the stop must give up
        # after ctr_stop_timeout and record the exit without a code.
        os.kill(monitor, signal.SIGSTOP)
        try:
            node.cri.stop(cid, timeout=0)
        finally:
            os.kill(monitor, signal.SIGCONT)
        status = node.cri.status(cid)
        assert (status.state, status.reason) == (api.CONTAINER_EXITED, "Error")
        assert "2s after SIGKILL (crio.runtime.ctr_stop_timeout)" in status.message, status


def test_seccomp_use_default_when_empty(make_node: Any) -> None:
    """True (the default): no profile named is RuntimeDefault; false: unconfined (CRI's text)."""
    named = api.LinuxContainerSecurityContext(
        seccomp=api.SecurityProfile(profile_type=api.SecurityProfile.RuntimeDefault)
    )
    for use_default, mode in ((True, "2"), (False, "0")):
        node = make_node({"crio.runtime": {"seccomp_use_default_when_empty": use_default}})
        for handler in HANDLERS:
            pod_id = node.cri.run_pod(node.pod(), runtime_handler=handler)
            cid = node.cri.create(pod_id, container_config("c"), start=True)
            assert _status_field(node, cid, "Seccomp") == mode, (handler, use_default)
            cid = node.cri.create(pod_id, container_config("named", security=named), start=True)
            assert _status_field(node, cid, "Seccomp") == "2", (handler, use_default)


def test_allowed_annotations_are_honoured_only_by_the_handler_that_lists_them(
    make_node: Any,
) -> None:
    shm, devices = "io.kubernetes.cri-o.ShmSize", "io.kubernetes.cri-o.Devices"
    node = make_node({"crio.runtime.runtimes.runc": {"allowed_annotations": [shm, devices]}})
    annotations = {shm: "16Mi", devices: "/dev/fuse:/dev/fuse:rw"}
    seen = {}
    for handler in HANDLERS:
        pod_id = node.cri.run_pod(node.pod(annotations=annotations), runtime_handler=handler)
        cid = node.cri.create(pod_id, container_config("c"), start=True)
        mounts = node.cri.exec(cid, ["cat", "/proc/mounts"]).stdout.decode()
        size = next(line for line in mounts.splitlines() if " /dev/shm " in line)
        fuse = node.cri.exec(cid, ["ls", "/dev/fuse"]).exit_code == 0
        seen[handler] = ("size=16384k" in size, fuse)
    assert seen == {"runc": (True, True), "crun": (False, False)}
    # A value the handler would honour is checked before anything is made.
    for bad, field in (({shm: "lots"}, shm), ({devices: "/dev/nothing-here"}, devices)):
        error = rpc_error(node.cri.run_pod, node.pod(annotations=bad), runtime_handler="runc")
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
        assert f"annotations[{field}]" in error.details(), error.details()


def test_systemd_cgroup_manager_without_systemd_is_reported_not_ready(make_node: Any) -> None:
    if os.path.isdir("/run/systemd/system"):
        pytest.skip("systemd runs here: tests/integration/systemd covers this manager")
    node = make_node({"crio.runtime": {"cgroup_manager": "systemd"}})
    conditions = {c.type: c for c in node.cri.rt.Status(api.StatusRequest()).status.conditions}
    ready = conditions["RuntimeReady"]
    assert not ready.status and ready.reason == "CgroupManagerUnavailable"
    assert "systemd is not running as PID 1" in ready.message
    config = node.cri.rt.RuntimeConfig(api.RuntimeConfigRequest())
    assert config.linux.cgroup_driver == api.SYSTEMD
    # A pod's parent must then be a slice name, and the field is named when it is not.
    pod = node.pod()
    pod.linux.cgroup_parent = "/kubepods/pod1"
    error = rpc_error(node.cri.run_pod, pod)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "config.linux.cgroup_parent" in error.details()
