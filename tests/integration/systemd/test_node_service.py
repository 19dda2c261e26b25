"""crio as a systemd service on a Debian 12 node: one guest (systemd as PID 1) for the module.

The guest is built from Debian's packages (tests/support/systemd_guest.py)
and boots under the VM harness. crio comes from this checkout, installed in
the guest with ``make install`` (its dependencies from the wheels in the
image: the guest has no network), and runs from the unit ``make install``
placed. A container image is pulled from an OCI layout in the VM's share.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support import systemd_guest
from support.images import busybox_rootfs_tar, write_oci_layout
from support.vm import LoopThread, vm_assets_or_skip

# One guest boot and one make install for the module: the first test carries them.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

REPO = Path(__file__).resolve().parents[3]
SHARE = systemd_guest.GUEST_SHARE
PYTHON = "/usr/local/lib/crio/bin/python"
CLIENT = f"{SHARE}/guest_cri.py"
IMAGE = f"oci:{SHARE}/busybox:latest"
#: The drop-in the tests run crio with (make install's crio.conf is all comments).
DROP_IN = """\
[crio.runtime]
cgroup_manager = "systemd"
log_to_journald = true
"""
#: What Debian's containers-common would install; the guest image has no such file.
POLICY = '{"default": [{"type": "insecureAcceptAnything"}]}\n'
ENV_FILE = 'CRIO_FLAGS="--log-format json"\n'


class Node:
    """The booted guest: run commands in it, talk CRI to its crio."""

    def __init__(self, loop: LoopThread, vm: Any, base: Path) -> None:
        self.loop, self.vm, self.base = loop, vm, base
        self._image = ""

    @property
    def image(self) -> str:
        """The busybox image id, pulled from the OCI layout in the share on first use."""
        if not self._image:
            self._image = self.cri("pull", IMAGE)["image_ref"]
        return self._image

    def run(self, *argv: str, timeout: float = 180, check: bool = True) -> str:
        result = self.loop.run(self.vm.run(list(argv), timeout=timeout), timeout=timeout + 30)
        out = result.stdout.decode(errors="replace")
        if check and result.exit_code != 0:
            err = result.stderr.decode(errors="replace")
            raise AssertionError(f"{argv} exited {result.exit_code}:\n{out}\n{err}")
        return out

    def sh(self, script: str, timeout: float = 180, check: bool = True) -> str:
        return self.run("sh", "-c", script, timeout=timeout, check=check)

    def cri(self, *args: str) -> dict[str, Any]:
        """One CRI call through the guest's client; a failed call fails the test, saying why."""
        # -S: the stdlib-only client of the client server the fixture started (no grpc).
        argv = [PYTHON, "-S", CLIENT, "call", *args]
        result = self.loop.run(self.vm.run(argv, timeout=300), timeout=330)
        out = result.stdout.decode(errors="replace").strip()
        reply = json.loads(out.splitlines()[-1]) if out else {}
        if result.exit_code != 0 or "error" in reply:
            err = result.stderr.decode(errors="replace")[-2000:]
            journal = self.run("journalctl", "-u", "crio", "-n", "30", "--no-pager", check=False)
            raise AssertionError(f"CRI {args}: {reply or err}\n--- crio's journal:\n{journal}")
        return dict(reply)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.run("systemctl", "show", unit, "-p", ",".join(props))
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def _checkout_tar(target: Path) -> None:
    """This checkout's files (tracked and new, not ignored), as make install will see them."""
    names = subprocess.run(
        ["git", "ls-files", "-z", "-co", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.split(b"\0")  # fmt: skip
    with tarfile.open(target, "w") as tar:
        for name in filter(None, names):
            path = REPO / name.decode()
            if path.exists():
                tar.add(path, arcname=name.decode(), recursive=False)


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    assets = vm_assets_or_skip()
    if shutil.which("mmdebstrap") is None:
        pytest.skip("mmdebstrap is not installed (make prepare installs it)")
    try:
        image = systemd_guest.ensure(assets, say=lambda line: None)
    except systemd_guest.GuestImageError as exc:
        pytest.skip(f"the systemd guest image cannot be built here: {exc}")
    from crio_plugins.runtime_clear.vm import VM

    base = Path(tempfile.mkdtemp(prefix="crio-sd-", dir="/tmp"))
    spec = systemd_guest.vm_spec(image, base / "vm")
    share = spec.share
    share.mkdir(parents=True)
    _checkout_tar(share / "crio-src.tar")
    shutil.copy(REPO / "tests/support/guest_cri.py", share / "guest_cri.py")
    write_oci_layout(share / "busybox", [busybox_rootfs_tar()])
    loop = LoopThread()
    vm = loop.run(VM.boot(spec, timeout=600), timeout=660)
    booted = Node(loop, vm, base)
    try:
        booted.run("systemctl", "is-system-running", "--wait", timeout=300, check=False)
        started = time.monotonic()
        booted.sh(
            f"mkdir -p /root/crio && tar -xf {SHARE}/crio-src.tar -C /root/crio && "
            f"make -C /root/crio install PIP_INSTALL_FLAGS='{systemd_guest.PIP_INSTALL_FLAGS}'",
            timeout=900,
        )
        print(f"\nguest booted in {vm.boot_seconds:.1f}s; make install took "
              f"{time.monotonic() - started:.1f}s")  # fmt: skip
        booted.sh(
            f"cat > /etc/crio/crio.conf.d/10-node-test.conf <<'EOF'\n{DROP_IN}EOF\n"
            f"printf '%s' '{ENV_FILE.strip()}' > /etc/default/crio\n"
            f"mkdir -p /etc/containers && cat > /etc/containers/policy.json <<'EOF'\n{POLICY}EOF\n"
        )
        # The CRI client, started once (grpc's import costs seconds under TCG); it needs
        # the crio that make install placed, and outlives crio's restarts.
        booted.sh(
            f"setsid -f {PYTHON} {CLIENT} serve >/run/guest-cri.log 2>&1; "
            "for i in $(seq 1200); do test -S /run/guest-cri.sock && exit 0; sleep 0.1; done; "
            "cat /run/guest-cri.log; exit 1",
            timeout=200,
        )
        yield booted
    finally:
        loop.run(vm.kill())
        loop.run(vm.release())
        loop.close()
        shutil.rmtree(base, ignore_errors=True)


def test_make_install_places_crio_its_config_and_unit(node: Node) -> None:
    assert node.run("/usr/local/bin/crio", "version").startswith("crio version ")
    conf = node.run("cat", "/etc/crio/crio.conf")
    assert all(not line or line.startswith("#") for line in conf.splitlines())
    assert "# [crio.api]" in conf and '# listen = "/var/run/crio/crio.sock"' in conf
    unit = node.run("systemctl", "cat", "crio.service")
    assert "ExecStart=/usr/local/bin/crio $CRIO_FLAGS" in unit and "Type=notify" in unit
    assert node.run("ls", "/etc/cni/net.d").split() == ["10-crio-bridge.conflist"]


def test_unit_reports_ready_once_the_socket_serves(node: Node) -> None:
    node.run("systemctl", "start", "crio")  # returns once crio sent READY=1
    # No retry: the socket answers the moment systemctl start returns.
    assert node.cri("version")["runtimeName"] == "crio"
    props = node.show("crio", "Type", "ActiveState", "SubState", "StatusText", "MainPID")
    assert props["Type"] == "notify" and props["ActiveState"] == "active"
    assert props["StatusText"] == "serving CRI on /var/run/crio/crio.sock"
    assert len(node.image) == 64


def test_restart_and_stop_keep_containers_running(node: Node) -> None:
    node.run("systemctl", "start", "crio")
    pod = node.cri("runp", "keep", "")["id"]
    ctr = node.cri("create", pod, "sleeper", node.image, "0", "sleep", "3600")["id"]
    status = node.cri("status", ctr)
    assert status["state"] == "CONTAINER_RUNNING", status
    conmon = node.run("pgrep", "-f", f"conmon .*-c {ctr}").split()
    assert conmon
    node.run("systemctl", "restart", "crio")
    assert node.cri("status", ctr)["state"] == "CONTAINER_RUNNING"
    node.run("systemctl", "stop", "crio")
    assert node.run("pgrep", "-f", f"conmon .*-c {ctr}").split() == conmon
    node.run("systemctl", "start", "crio")
    assert node.cri("status", ctr)["state"] == "CONTAINER_RUNNING"
    node.cri("stop", ctr)
    node.cri("rm", ctr)
    node.cri("stopp", pod)
    node.cri("rmp", pod)


def test_systemd_cgroups_pod_slice_container_and_conmon_scopes(node: Node) -> None:
    node.run("systemctl", "start", "crio")
    uid = os.urandom(4).hex()
    pod_slice = f"kubepods-besteffort-pod{uid}.slice"
    pod = node.cri("runp", "cg", pod_slice)["id"]
    assert node.show(pod_slice, "ActiveState")["ActiveState"] == "active"
    ctr = node.cri("create", pod, "limited", node.image, str(64 << 20), "sleep", "3600")["id"]
    scope, conmon = f"crio-{ctr}.scope", f"crio-conmon-{ctr}.scope"
    shown = node.show(scope, "ActiveState", "Slice", "MemoryMax", "ControlGroup")
    assert shown["ActiveState"] == "active" and shown["Slice"] == pod_slice
    assert shown["MemoryMax"] == str(64 << 20)
    assert shown["ControlGroup"] == (
        f"/kubepods.slice/kubepods-besteffort.slice/{pod_slice}/{scope}"
    )  # fmt: skip
    assert node.show(conmon, "ActiveState", "Slice") == {
        "ActiveState": "active",
        "Slice": pod_slice,
    }
    node.cri("update", ctr, str(128 << 20), "512")
    assert node.show(scope, "MemoryMax")["MemoryMax"] == str(128 << 20)
    assert node.run("cat", f"/sys/fs/cgroup{shown['ControlGroup']}/memory.max").strip() == str(
        128 << 20
    )
    node.cri("stop", ctr)
    node.cri("rm", ctr)
    node.cri("stopp", pod)
    node.cri("rmp", pod)
    left = node.run(
        "systemctl", "list-units", "--all", "--plain", "--no-legend", "crio-*.scope", pod_slice
    )
    assert left.strip() == "", left  # the pod's slice, the container's and conmon's scopes


def test_container_output_goes_to_journald(node: Node) -> None:
    node.run("systemctl", "start", "crio")
    pod = node.cri("runp", "talk", "")["id"]
    ctr = node.cri(
        "create", pod, "talker", node.image, "0", "sh", "-c", "echo hello-journal; sleep 600"
    )["id"]
    deadline = time.monotonic() + 120
    found = ""
    while "hello-journal" not in found and time.monotonic() < deadline:
        found = node.run("journalctl", f"CONTAINER_ID_FULL={ctr}", "-o", "cat", check=False)
    assert "hello-journal" in found
    status = node.cri("status", ctr)
    assert "hello-journal" in node.run("cat", status["log_path"])  # the CRI log as well
    node.cri("stop", ctr)
    node.cri("rm", ctr)
    node.cri("stopp", pod)
    node.cri("rmp", pod)


def test_journal_holds_crio_structured_lines(node: Node) -> None:
    node.run("systemctl", "start", "crio")
    missing = "f" * 64
    out = node.run(PYTHON, "-S", CLIENT, "call", "status", missing, check=False)
    assert '"error": "NOT_FOUND"' in out
    lines = node.run("journalctl", "-u", "crio", "-o", "cat", "--no-pager").splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert any(r["msg"].startswith("crio 0.1.0 serving CRI v1") for r in records)
    failed = [r for r in records if r.get("rpc") == "ContainerStatus"]
    assert failed and failed[-1]["code"] == "NOT_FOUND" and failed[-1]["container"] == missing
    assert failed[-1]["level"] == "info" and failed[-1]["time"].endswith("Z")


def test_make_uninstall_removes_what_install_placed(node: Node) -> None:
    """Last in the module: crio is gone afterwards."""
    node.run("systemctl", "stop", "crio")
    node.run("make", "-C", "/root/crio", "uninstall")
    for path in (
        "/usr/local/bin/crio", "/usr/local/bin/kpod", "/usr/local/lib/crio",
        "/usr/local/lib/systemd/system/crio.service", "/etc/default/crio",
        "/etc/cni/net.d/10-crio-bridge.conflist",
    ):  # fmt: skip
        assert node.sh(f"test -e {path} && echo present || echo absent").strip() == "absent", path
    # The admin's drop-in stays, and so does the directory holding it.
    assert node.sh("ls /etc/crio/crio.conf.d").split() == ["10-node-test.conf"]
    assert "crio.service" not in node.run("systemctl", "list-unit-files", "--no-pager")
