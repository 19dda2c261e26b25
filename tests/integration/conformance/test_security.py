"""Security settings seen from inside containers, on runc, crun and in a pod VM.

Capabilities, privileged containers, seccomp, a read-only rootfs, masked
paths, no_new_privs, users and groups from the image's files, PID namespaces.
Everything is looked at through CRI (ExecSync): an exec runs as the
container's process does, so what it sees is what the container has.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import grpc
import pytest

from crio.api import api_pb2 as api
from crio.oci.caps import ALL_CAPABILITIES, capabilities_from_mask
from support.conformance import USER_IMAGE, Case
from support.cri import container_config, rpc_error

pytestmark = pytest.mark.slow

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


def _status(case: Case, cid: str) -> dict[str, str]:
    """/proc/self/status of an exec in the container, as a dict."""
    text = case.exec(cid, ["cat", "/proc/self/status"]).stdout.decode()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


def _status_field(case: Case, cid: str, name: str) -> str:
    return _status(case, cid)[name]


def _mount_options(case: Case, cid: str, point: str) -> list[str]:
    """The per-mount options of ``point`` (mountinfo's, not its superblock's: a pod's
    sysfs superblock is shared by its containers and read-only if the first was)."""
    for line in case.exec(cid, ["cat", "/proc/self/mountinfo"]).stdout.decode().splitlines():
        fields = line.split()
        if fields[4] == point:
            return fields[5].split(",")
    raise AssertionError(f"{point} is not mounted in {cid}")


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
def test_capabilities(case: Case, add: tuple, drop: tuple, expected: tuple) -> None:
    security = api.LinuxContainerSecurityContext(
        capabilities=api.Capability(add_capabilities=add, drop_capabilities=drop)
    )
    status = _status(case, case.run(security))
    assert int(status["CapEff"], 16) == _mask(expected)
    assert int(status["CapBnd"], 16) == _mask(expected)
    assert int(status["CapInh"], 16) == 0


def test_an_added_capability_works(case: Case) -> None:
    admin = api.LinuxContainerSecurityContext(
        capabilities=api.Capability(add_capabilities=["NET_ADMIN"])
    )
    plain = case.run(name="plain")
    reply = case.exec(plain, ["busybox", "ip", "link", "set", "lo", "mtu", "1500"])
    assert reply.exit_code != 0 and b"not permitted" in reply.stderr
    cid = case.run(admin, name="admin")
    assert case.exec(cid, ["busybox", "ip", "link", "set", "lo", "mtu", "1500"]).exit_code == 0


def test_privileged_container(case: Case) -> None:
    cid = case.run(api.LinuxContainerSecurityContext(privileged=True))
    status = _status(case, cid)
    assert int(status["CapEff"], 16) == _mask(AVAILABLE)
    assert status["Seccomp"] == "0"
    devices = case.exec(cid, ["ls", "/dev"]).stdout.decode().split()
    assert {"kmsg", "null", "tty0"} <= set(devices)
    if case.in_vm:
        # The node of a VM pod is the guest: its devices (the agent's virtio port) are there.
        assert any(d.startswith("vport") for d in devices), devices
    else:
        assert set(os.listdir("/dev")) & {"vda", "kmsg", "mem"} <= set(devices)
        assert not any(d.startswith("vport") for d in devices)
    # sysfs and procfs as the node's: writable, /proc/sys not remounted read-only.
    assert "rw" in _mount_options(case, cid, "/sys")
    assert not _mounted(case, cid, "/proc/sys")
    # Not privileged: sysfs is read-only and so is /proc/sys.
    plain = case.run(name="plain")
    assert "ro" in _mount_options(case, plain, "/sys")
    assert "ro" in _mount_options(case, plain, "/proc/sys")


def _mounted(case: Case, cid: str, point: str) -> bool:
    mounts = case.exec(cid, ["cat", "/proc/self/mounts"]).stdout.decode()
    return any(line.split()[1] == point for line in mounts.splitlines())


def test_runtime_default_seccomp_blocks_namespaces_without_sys_admin(case: Case) -> None:
    cid = case.run(api.LinuxContainerSecurityContext(), name="plain")
    assert _status_field(case, cid, "Seccomp") == "2"
    reply = case.exec(cid, ["busybox", "unshare", "-U", "true"])
    assert reply.exit_code != 0 and b"Operation not permitted" in reply.stderr
    # With CAP_SYS_ADMIN the profile lets unshare through.
    admin = api.LinuxContainerSecurityContext(
        capabilities=api.Capability(add_capabilities=["SYS_ADMIN"])
    )
    cid2 = case.run(admin, name="admin")
    assert case.exec(cid2, ["busybox", "unshare", "-U", "true"]).exit_code == 0


def test_unconfined_and_localhost_seccomp(case: Case) -> None:
    unconfined = api.LinuxContainerSecurityContext(
        seccomp=api.SecurityProfile(profile_type=api.SecurityProfile.Unconfined)
    )
    cid = case.run(unconfined, name="unconfined")
    assert _status_field(case, cid, "Seccomp") == "0"
    profile = case.node.base / "no-mkdir.json"
    profile.write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}],
    }))  # fmt: skip
    localhost = api.LinuxContainerSecurityContext(
        seccomp=api.SecurityProfile(
            profile_type=api.SecurityProfile.Localhost, localhost_ref=str(profile)
        )
    )
    cid = case.run(localhost, name="localhost")
    reply = case.exec(cid, ["mkdir", "/tmp/x"])
    assert reply.exit_code != 0 and b"Operation not permitted" in reply.stderr
    assert case.exec(cid, ["touch", "/tmp/y"]).exit_code == 0


def test_process_labels_are_the_nodes(case: Case) -> None:
    # crio sets no AppArmor or SELinux label: the container has what the node gives a
    # process by default, and on a node without such a module, no label at all (a pod
    # VM's kernel must not bring a module the node does not have).
    try:
        Path("/proc/self/attr/current").read_bytes()
    except OSError:
        labelled = False
    else:
        labelled = True
    reply = case.exec(case.run(), ["cat", "/proc/self/attr/current"])
    if labelled:
        assert reply.exit_code == 0 and reply.stdout.strip(), reply
    else:
        assert reply.exit_code != 0 and b"Invalid argument" in reply.stderr, reply


def test_readonly_rootfs_masked_paths_and_no_new_privs(case: Case) -> None:
    security = api.LinuxContainerSecurityContext(readonly_rootfs=True, no_new_privs=True)
    cid = case.run(security)
    reply = case.exec(cid, ["touch", "/etc/x"])
    assert reply.exit_code != 0 and b"Read-only file system" in reply.stderr
    assert case.exec(cid, ["touch", "/dev/shm/x"]).exit_code == 0
    assert case.exec(cid, ["cat", "/proc/kcore"]).stdout == b""
    assert b"Read-only" in case.exec(cid, ["sh", "-c", "echo 1 > /proc/sys/kernel/ostype"]).stderr
    assert _status_field(case, cid, "NoNewPrivs") == "1"


def test_user_group_and_supplemental_groups(case: Case) -> None:
    security = api.LinuxContainerSecurityContext(
        run_as_username="user1", run_as_group=api.Int64Value(value=1), supplemental_groups=[4242]
    )
    cid = case.run(security, name="named")
    ids = case.exec(cid, ["id"]).stdout.decode()
    assert ids.startswith("uid=1000(user1) gid=1(daemon)")
    assert "4242" in ids
    assert case.exec(cid, ["sh", "-c", "echo $HOME"]).stdout == b"/home/user1\n"
    # The process itself, not only execs, runs as the user.
    assert case.exec(cid, ["stat", "-c", "%u", "/proc/1"]).stdout == b"1000\n"
    uid_only = api.LinuxContainerSecurityContext(run_as_user=api.Int64Value(value=65534))
    cid = case.run(uid_only, name="uid")
    assert case.exec(cid, ["id", "-u"]).stdout == b"65534\n"
    assert case.exec(cid, ["id", "-g"]).stdout == b"65534\n"  # from the image's passwd


def test_the_image_user_and_its_groups(case: Case) -> None:
    pod = case.pod()
    cid = case.create(pod, container_config("img", image=USER_IMAGE), start=True)
    assert case.exec(cid, ["id"]).stdout == b"uid=1000(user1) gid=1000(user1) groups=50(staff)\n"
    # run_as_user overrides the image's user; the groups still come from the image's file.
    by_uid = api.LinuxContainerSecurityContext(run_as_user=api.Int64Value(value=1000))
    cid = case.create(pod, container_config("uid", image=USER_IMAGE, security=by_uid), start=True)
    assert case.exec(cid, ["id", "-G"]).stdout.split() == [b"1000", b"50"]


def test_unknown_user_name_is_refused_by_field(case: Case) -> None:
    security = api.LinuxContainerSecurityContext(run_as_username="nobody-here")
    config = container_config("u", security=security)
    error = rpc_error(case.create, case.pod(), config)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "run_as_username" in error.details() and "nobody-here" in error.details()


def test_container_and_pod_pid_namespaces(case: Case) -> None:
    own = case.run()
    assert case.exec(own, ["cat", "/proc/1/cmdline"]).stdout.startswith(b"sleep")
    # A shared PID namespace: a pause process is PID 1 for every container.
    pod_id = case.pod()
    shared = api.LinuxContainerSecurityContext(namespace_options=api.NamespaceOption(pid=api.POD))
    a = case.create(pod_id, container_config("a", security=shared), start=True)
    b = case.create(
        pod_id, container_config("b", ["sh", "-c", "sleep 3601"], security=shared), start=True
    )
    init = case.exec(a, ["cat", "/proc/1/cmdline"]).stdout
    if case.in_vm:
        assert init.startswith(b"/bin/sh\0/pause")  # the infra container, in the pod's VM
    else:
        assert init == b"/pause\0-P\0"  # a pause process crio started (no infra container)
    seen = case.exec(a, ["ps", "-o", "args"]).stdout.decode()
    assert "sleep 3601" in seen  # b's process, seen from a
    listed = {c.id for c in case.cri.containers(pod_sandbox_id=pod_id)}
    assert listed == {own, a, b}  # not the infra container
    assert case.cri.pod_status(pod_id).linux.namespaces.options.pid == api.POD


def test_host_pid_namespace(case: Case) -> None:
    host = api.LinuxContainerSecurityContext(namespace_options=api.NamespaceOption(pid=api.NODE))
    if case.in_vm:
        # A VM has no way into the node's PID namespace: refused, not silently different.
        error = rpc_error(case.pod, fresh=True, pid=api.NODE)
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "namespace_options.pid" in error.details()
        return
    pod_id = case.pod(fresh=True, pid=api.NODE)
    cid = case.create(pod_id, container_config("host", security=host), start=True)
    assert case.exec(cid, ["readlink", "/proc/self/ns/pid"]).stdout.decode().strip() == \
        os.readlink("/proc/self/ns/pid")  # fmt: skip
