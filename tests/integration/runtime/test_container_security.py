"""Security settings seen from inside real containers: capabilities, seccomp, rootfs, PID ns."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from crio.api import api_pb2 as api
from crio.oci.caps import ALL_CAPABILITIES, capabilities_from_mask
from support.cri import container_config
from support.node import Node

#: What crio can give: its own bounding set (this host lacks CAP_SYS_RESOURCE).
AVAILABLE = tuple(
    c[4:]
    for c in capabilities_from_mask(
        int(
            next(
                line
                for line in Path("/proc/self/status").read_text().splitlines()
                if line.startswith("CapBnd")
            ).split()[1],
            16,
        )
    )
)
DEFAULT_CAPS = ("CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "SETGID", "SETUID", "SETPCAP",
                "NET_BIND_SERVICE", "KILL")  # fmt: skip


def _mask(names: tuple[str, ...]) -> int:
    return sum(1 << ALL_CAPABILITIES.index(f"CAP_{n}") for n in names)


def _status_field(node: Node, cid: str, name: str) -> str:
    text = node.cri.exec(cid, ["cat", "/proc/self/status"]).stdout.decode()
    return next(
        line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith(name)
    )


def _run(
    node: Node, handler: str, security: api.LinuxContainerSecurityContext, **pod: object
) -> str:
    pod_id = node.cri.run_pod(node.pod(**pod), runtime_handler=handler)  # type: ignore[arg-type]
    return node.cri.create(pod_id, container_config("c", security=security), start=True)


@pytest.mark.parametrize(
    ("add", "drop", "expected"),
    [
        ((), (), DEFAULT_CAPS),
        (
            ("NET_ADMIN", "sys_time"),
            ("KILL",),
            (*(c for c in DEFAULT_CAPS if c != "KILL"), "NET_ADMIN", "SYS_TIME"),
        ),
        ((), ("ALL",), ()),
        (("ALL",), ("CHOWN",), tuple(c for c in AVAILABLE if c != "CHOWN")),
    ],
)
def test_capabilities(node: Node, handler: str, add: tuple, drop: tuple, expected: tuple) -> None:
    security = api.LinuxContainerSecurityContext(
        capabilities=api.Capability(add_capabilities=add, drop_capabilities=drop)
    )
    cid = _run(node, handler, security)
    assert int(_status_field(node, cid, "CapEff"), 16) == _mask(expected)
    assert int(_status_field(node, cid, "CapBnd"), 16) == _mask(expected)
    assert int(_status_field(node, cid, "CapInh"), 16) == 0


def test_privileged_container_has_every_capability_and_host_devices(
    node: Node, handler: str
) -> None:
    security = api.LinuxContainerSecurityContext(privileged=True)
    cid = _run(node, handler, security, privileged=True)
    assert int(_status_field(node, cid, "CapEff"), 16) == _mask(AVAILABLE)
    assert _status_field(node, cid, "Seccomp") == "0"
    devices = node.cri.exec(cid, ["ls", "/dev"]).stdout.decode().split()
    assert set(os.listdir("/dev")) & {"vda", "kmsg", "mem"} <= set(devices)
    assert "kmsg" in devices


def test_runtime_default_seccomp_blocks_namespaces_without_sys_admin(
    node: Node, handler: str
) -> None:
    cid = _run(node, handler, api.LinuxContainerSecurityContext())
    assert _status_field(node, cid, "Seccomp") == "2"
    reply = node.cri.exec(cid, ["busybox", "unshare", "-U", "true"])
    assert reply.exit_code != 0 and b"Operation not permitted" in reply.stderr
    # With CAP_SYS_ADMIN the profile lets unshare through.
    admin = api.LinuxContainerSecurityContext(
        capabilities=api.Capability(add_capabilities=["SYS_ADMIN"])
    )
    cid2 = _run(node, handler, admin)
    assert node.cri.exec(cid2, ["busybox", "unshare", "-U", "true"]).exit_code == 0


def test_unconfined_and_localhost_seccomp(node: Node, handler: str) -> None:
    unconfined = api.LinuxContainerSecurityContext(
        seccomp=api.SecurityProfile(profile_type=api.SecurityProfile.Unconfined)
    )
    cid = _run(node, handler, unconfined)
    assert _status_field(node, cid, "Seccomp") == "0"
    profile = node.base / "no-mkdir.json"
    profile.write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}],
    }))  # fmt: skip
    localhost = api.LinuxContainerSecurityContext(
        seccomp=api.SecurityProfile(
            profile_type=api.SecurityProfile.Localhost, localhost_ref=str(profile)
        )
    )
    cid = _run(node, handler, localhost)
    reply = node.cri.exec(cid, ["mkdir", "/tmp/x"])
    assert reply.exit_code != 0 and b"Operation not permitted" in reply.stderr
    assert node.cri.exec(cid, ["touch", "/tmp/y"]).exit_code == 0


def test_readonly_rootfs_masked_paths_and_no_new_privs(node: Node, handler: str) -> None:
    security = api.LinuxContainerSecurityContext(readonly_rootfs=True, no_new_privs=True)
    cid = _run(node, handler, security)
    reply = node.cri.exec(cid, ["touch", "/etc/x"])
    assert reply.exit_code != 0 and b"Read-only file system" in reply.stderr
    assert node.cri.exec(cid, ["touch", "/dev/shm/x"]).exit_code == 0
    assert node.cri.exec(cid, ["cat", "/proc/kcore"]).stdout == b""
    assert (
        b"Read-only" in node.cri.exec(cid, ["sh", "-c", "echo 1 > /proc/sys/kernel/ostype"]).stderr
    )
    assert _status_field(node, cid, "NoNewPrivs") == "1"


def test_user_group_and_supplemental_groups(node: Node, handler: str) -> None:
    security = api.LinuxContainerSecurityContext(
        run_as_username="user1", run_as_group=api.Int64Value(value=1), supplemental_groups=[4242]
    )
    cid = _run(node, handler, security)
    ids = node.cri.exec(cid, ["id"]).stdout.decode()
    assert ids.startswith("uid=1000(user1) gid=1(daemon)")
    assert "4242" in ids
    assert node.cri.exec(cid, ["sh", "-c", "echo $HOME"]).stdout == b"/home/user1\n"
    uid_only = api.LinuxContainerSecurityContext(run_as_user=api.Int64Value(value=65534))
    cid = _run(node, handler, uid_only)
    assert node.cri.exec(cid, ["id", "-u"]).stdout == b"65534\n"
    assert node.cri.exec(cid, ["id", "-g"]).stdout == b"65534\n"  # from the image's passwd


def test_host_and_pod_pid_namespaces(node: Node, handler: str) -> None:
    host = _run(node, handler, api.LinuxContainerSecurityContext(
        namespace_options=api.NamespaceOption(pid=api.NODE)), pid=api.NODE)  # fmt: skip
    assert node.cri.exec(host, ["readlink", "/proc/self/ns/pid"]).stdout.decode().strip() == \
        os.readlink("/proc/self/ns/pid")  # fmt: skip
    own = _run(node, handler, api.LinuxContainerSecurityContext())
    assert node.cri.exec(own, ["cat", "/proc/1/cmdline"]).stdout.startswith(b"sleep")
    # A shared PID namespace: the infra (pause) process is PID 1 for every container.
    pod_id = node.cri.run_pod(node.pod(pid=api.POD), runtime_handler=handler)
    shared = api.LinuxContainerSecurityContext(namespace_options=api.NamespaceOption(pid=api.POD))
    a = node.cri.create(pod_id, container_config("a", security=shared), start=True)
    b = node.cri.create(
        pod_id, container_config("b", ["sh", "-c", "sleep 3601"], security=shared), start=True
    )
    assert node.cri.exec(a, ["cat", "/proc/1/cmdline"]).stdout.startswith(b"/bin/sh\0/pause")
    seen = node.cri.exec(a, ["ps", "-o", "args"]).stdout.decode()
    assert "sleep 3601" in seen  # b's process, seen from a
    assert [c.id for c in node.cri.containers(pod_sandbox_id=pod_id)] == [a, b]  # no infra
    assert node.cri.pod_status(pod_id).linux.namespaces.options.pid == api.POD
