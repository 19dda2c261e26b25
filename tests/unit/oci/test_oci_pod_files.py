"""The pod's files, sysctl rules, mountinfo parsing and the seccomp profile's shape."""

from __future__ import annotations

import pytest

from crio.errors import InvalidRequestError
from crio.oci.mounts import mount_point_of, parse_mountinfo
from crio.oci.podfiles import render_hosts, render_resolv_conf, validate_hostname
from crio.oci.seccomp import runtime_default_profile
from crio.oci.sysctls import sysctl_namespace, validate_sysctls
from crio.oci.user import parse_group, parse_passwd


def test_resolv_conf_and_hosts() -> None:
    assert render_resolv_conf(["1.1.1.1", "::1"], ["a.svc", "svc"], ["ndots:5"]) == (
        b"nameserver 1.1.1.1\nnameserver ::1\nsearch a.svc svc\noptions ndots:5\n"
    )
    with pytest.raises(InvalidRequestError, match=r"dns_config.searches\[0\]"):
        render_resolv_conf([], ["a b"], [])
    hosts = render_hosts("web", ["10.1.2.3"]).decode()
    assert "127.0.0.1\tlocalhost" in hosts and hosts.endswith("10.1.2.3\tweb\n")


@pytest.mark.parametrize("name", ["web", "web-1.example", "a" * 63])
def test_good_hostnames(name: str) -> None:
    validate_hostname(name)


@pytest.mark.parametrize("name", ["-web", "web_1", "a" * 65, "we b", "x..y"])
def test_bad_hostnames(name: str) -> None:
    with pytest.raises(InvalidRequestError, match="hostname"):
        validate_hostname(name)


def test_sysctl_rules() -> None:
    assert sysctl_namespace("net.ipv4.ip_forward") == "network"
    assert sysctl_namespace("kernel.shmmax") == "ipc"
    assert sysctl_namespace("fs.mqueue.msg_max") == "ipc"
    assert sysctl_namespace("kernel.domainname") == "uts"
    assert sysctl_namespace("vm.swappiness") is None
    validate_sysctls({"net.core.somaxconn": "1024"}, host_network=False, host_ipc=False)
    with pytest.raises(InvalidRequestError, match=r"sysctls\[kernel.pid_max\]: not a namespaced"):
        validate_sysctls({"kernel.pid_max": "1"}, host_network=False, host_ipc=False)
    with pytest.raises(InvalidRequestError, match="host's IPC"):
        validate_sysctls({"kernel.shmmax": "1"}, host_network=False, host_ipc=True)
    with pytest.raises(InvalidRequestError, match="not a sysctl name"):
        validate_sysctls({"net/../x": "1"}, host_network=False, host_ipc=False)


MOUNTINFO = """\
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
40 27 0:50 / /var/lib/kubelet rw shared:5 - ext4 /dev/vdb rw
41 40 0:51 / /var/lib/kubelet/pods/x rw master:5 - tmpfs tmpfs rw
42 27 0:52 / /mnt/with\\040space rw - tmpfs tmpfs rw
"""


def test_mountinfo_propagation() -> None:
    points = parse_mountinfo(MOUNTINFO)
    assert [p.mount_point for p in points][-1] == "/mnt/with space"
    kubelet = mount_point_of("/var/lib/kubelet/plugins/a", points)
    assert kubelet is not None and kubelet.shared and not kubelet.slave
    pods = mount_point_of("/var/lib/kubelet/pods/x/volumes", points)
    assert pods is not None and pods.slave
    spaced = mount_point_of("/mnt/with space/f", points)
    assert spaced is not None and not spaced.shared
    assert mount_point_of("/var/lib/kubeletx", points).mount_point == "/"  # type: ignore[union-attr]


def test_passwd_and_group_parsers_skip_junk() -> None:
    passwd = parse_passwd("root:x:0:0::/root:/bin/sh\n# comment\nbad:line\nu:x:a:1::/:/bin/sh\n")
    assert [(e.name, e.uid, e.home) for e in passwd] == [("root", 0, "/root")]
    groups = parse_group("g:x:5:a,b\nh:x:nope:\n")
    assert [(g.name, g.gid, g.members) for g in groups] == [("g", 5, ("a", "b"))]


def test_seccomp_profile_by_architecture() -> None:
    arm = runtime_default_profile([], machine="aarch64")
    assert arm["architectures"] == ["SCMP_ARCH_AARCH64"]
    x86 = runtime_default_profile([], machine="x86_64")
    assert x86["architectures"] == ["SCMP_ARCH_X86_64"]
    names = {n for rule in x86["syscalls"] for n in rule["names"]}
    assert "read" in names and "fcntl64" not in names
    [clone] = [r for r in x86["syscalls"] if r["names"] == ["clone"]]
    assert (
        clone["args"][0]["op"] == "SCMP_CMP_MASKED_EQ" and clone["args"][0]["value"] == 0x7E020000
    )
    [clone3] = [r for r in x86["syscalls"] if r["names"] == ["clone3"]]
    assert (clone3["action"], clone3["errnoRet"]) == ("SCMP_ACT_ERRNO", 38)
    ptrace = runtime_default_profile(["CAP_SYS_PTRACE"], machine="x86_64")
    assert any(
        "ptrace" in r["names"] for r in ptrace["syscalls"] if r["action"] == "SCMP_ACT_ALLOW"
    )
