"""The defaults a container gets, checked from inside it (both handlers).

What tests/integration/conformance/test_security.py already covers
(capability sets per request, unshare of a user namespace refused without
CAP_SYS_ADMIN, the Unconfined and Localhost profiles, a read-only rootfs,
/proc/kcore and no_new_privs) is not repeated; here: the kernel keyring and
other calls RuntimeDefault refuses even to root, every masked and read-only
path, the device nodes and device cgroup, and that nothing of crio (its
socket, its store, its state, its processes) is reachable from a container.
A small static C probe makes the system calls busybox cannot; it is built
here with gcc and bind-mounted read-only into the containers.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from crio.api import api_pb2 as api
from crio.oci.mounts import DEFAULT_MASKED_PATHS, DEFAULT_READONLY_PATHS
from support.cri import container_config
from support.node import Node

PROBE_SOURCE = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

/* Prints "ok" or "errno N" for one system call named by argv[1]. */
static int report(long result) {
    if (result < 0) printf("errno %d\n", errno); else printf("ok\n");
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    const char *what = argv[1];
    if (!strcmp(what, "keyctl"))  /* KEYCTL_GET_KEYRING_ID of the session keyring */
        return report(syscall(SYS_keyctl, 0, -3, 1));
    if (!strcmp(what, "add_key"))
        return report(syscall(SYS_add_key, "user", "crio", "x", 1, -3));
    if (!strcmp(what, "userns"))
        return report(unshare(CLONE_NEWUSER));
    if (!strcmp(what, "mount"))
        return report(mount("none", "/mnt", "tmpfs", 0, ""));
    if (!strcmp(what, "mknod"))  /* the host's first SCSI disk */
        return report(mknod("/tmp/disk", S_IFBLK | 0600, makedev(8, 0)));
    if (!strcmp(what, "connect") && argc > 2) {
        struct sockaddr_un addr = {.sun_family = AF_UNIX};
        strncpy(addr.sun_path, argv[2], sizeof(addr.sun_path) - 1);
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        return report(connect(fd, (struct sockaddr *)&addr, sizeof(addr)));
    }
    return 2;
}
"""

EPERM, ENOENT = 1, 2
#: The nodes a container's /dev may hold (runc and crun defaults, the pod's shm, pts).
DEV_ALLOWED = {
    *("null", "zero", "full", "random", "urandom", "tty", "console", "ptmx", "pts", "shm"),
    *("mqueue", "fd", "stdin", "stdout", "stderr", "core", "termination-log"),
}


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed (it builds the system-call probe)")
    work = tmp_path_factory.mktemp("probe")
    (work / "probe.c").write_text(PROBE_SOURCE)
    subprocess.run(
        ["gcc", "-static", "-O1", "-o", str(work / "probe"), str(work / "probe.c")],
        check=True, capture_output=True,
    )  # fmt: skip
    work.chmod(0o755)
    return work / "probe"


def _container(node: Node, handler: str, probe: Path) -> str:
    pod_id = node.cri.run_pod(node.pod(), runtime_handler=handler)
    mount = api.Mount(container_path="/probe", host_path=str(probe), readonly=True)
    return node.cri.create(pod_id, container_config("c", mounts=[mount]), start=True)


def _run(node: Node, cid: str, *args: str) -> str:
    return node.cri.exec(cid, ["/probe", *args]).stdout.decode().strip()


def test_runtime_default_refuses_the_keyring_namespaces_and_mounts(
    node: Node, handler: str, probe: Path
) -> None:
    cid = _container(node, handler, probe)
    for call in ("keyctl", "add_key", "userns", "mount"):
        assert _run(node, cid, call) == f"errno {EPERM}", call
    status = node.cri.exec(cid, ["cat", "/proc/self/status"]).stdout.decode()
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert fields["Seccomp"].strip() == "2"
    # Nothing beyond the default set, and nothing in the ambient or inheritable sets.
    assert fields["CapInh"].strip() == fields["CapAmb"].strip() == "0000000000000000"
    assert int(fields["CapPrm"], 16) == int(fields["CapEff"], 16) == int(fields["CapBnd"], 16)
    assert int(fields["CapEff"], 16) & (1 << 21) == 0  # no CAP_SYS_ADMIN


def test_masked_paths_are_empty_and_read_only_paths_refuse_writes(
    node: Node, handler: str, probe: Path
) -> None:
    cid = _container(node, handler, probe)
    for path in DEFAULT_MASKED_PATHS:
        shown = f"if [ -d {path} ]; then ls -A {path}; else cat {path}; fi 2>/dev/null"
        listing = node.cri.exec(cid, ["sh", "-c", shown])
        assert listing.stdout.strip() == b"", path
    for path in DEFAULT_READONLY_PATHS:
        mounted = node.cri.exec(cid, ["sh", "-c", f"grep ' {path} ' /proc/self/mountinfo"])
        if mounted.exit_code == 0:  # a path the host kernel lacks is not mounted at all
            assert b" ro," in mounted.stdout or b" ro " in mounted.stdout, path
    for target in ("/proc/sys/vm/drop_caches", "/proc/sys/kernel/hostname"):
        wrote = node.cri.exec(cid, ["sh", "-c", f"echo 1 > {target}"])
        assert wrote.exit_code != 0 and b"Read-only file system" in wrote.stderr, target


def test_no_host_device_is_visible_or_usable(node: Node, handler: str, probe: Path) -> None:
    cid = _container(node, handler, probe)
    devices = set(node.cri.exec(cid, ["ls", "-A", "/dev"]).stdout.decode().split())
    assert devices <= DEV_ALLOWED, devices - DEV_ALLOWED
    # Making a node of the host's first disk is refused (no CAP_MKNOD by default, and the
    # device cgroup would not let it be opened either).
    assert _run(node, cid, "mknod") == f"errno {EPERM}"
    assert node.cri.exec(cid, ["test", "-e", "/tmp/disk"]).exit_code != 0


def test_nothing_of_crio_is_reachable(node: Node, handler: str, probe: Path) -> None:
    cid = _container(node, handler, probe)
    socket_path = str(node.crio.socket)
    assert _run(node, cid, "connect", socket_path) == f"errno {ENOENT}"
    for path in (node.base, node.base / "root", node.base / "state", Path("/var/run/crio")):
        assert node.cri.exec(cid, ["test", "-e", str(path)]).exit_code != 0, path
    # Its own PID namespace: no host process (crio, conmon, runc) to reach through /proc.
    seen = node.cri.exec(cid, ["sh", "-c", "cat /proc/[0-9]*/comm"]).stdout.decode().split()
    assert not {"crio", "conmon", "runc", "crun", "python3"} & set(seen), seen
    mounts = node.cri.exec(cid, ["cat", "/proc/self/mountinfo"]).stdout.decode()
    assert "crio.sock" not in mounts
