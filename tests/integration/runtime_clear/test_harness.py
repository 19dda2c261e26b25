"""The VM harness with a real qemu, virtiofsd and Debian kernel: one VM for this module.

Boots a guest on the host's root, runs commands and a container (crun from
the host's root, inside the guest) through the agent, and checks that
killing the VM leaves nothing behind on the host.
"""

from __future__ import annotations

import json
import platform
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crio.errors import NotFoundError, OCIRuntimeError, WrongStateError
from crio_plugins.runtime_clear import _wire
from crio_plugins.runtime_clear._initramfs import GUEST_SHARE
from crio_plugins.runtime_clear.accel import choose_accel, host_facts
from crio_plugins.runtime_clear.vm import VM, VMSpec
from support.vm import LoopThread, busybox_rootfs, vm_assets_or_skip

pytestmark = pytest.mark.slow

DISK_BYTES = 8 << 20


class Booted:
    def __init__(self, loop: LoopThread, vm: VM, base: Path) -> None:
        self.loop, self.vm, self.base = loop, vm, base

    def run(self, argv: list[str], **kwargs: Any) -> Any:
        return self.loop.run(self.vm.run(argv, timeout=120, **kwargs))

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        return self.loop.run(self.vm.call(op, **args))


@pytest.fixture(scope="module")
def booted() -> Iterator[Booted]:
    assets = vm_assets_or_skip()
    base = Path(tempfile.mkdtemp(prefix="crio-vm-", dir="/tmp"))
    loop = LoopThread()
    disk = base / "disk.img"
    with open(disk, "wb") as handle:
        handle.truncate(DISK_BYTES)
    spec = VMSpec(
        run_dir=base / "vm",
        kernel=assets.kernel,
        initrd=assets.initrd,
        hostname="podvm",
        qemu_args=(
            "-drive", f"file={disk},if=none,id=d0,format=raw",
            "-device", "virtio-blk-device,drive=d0",
        ),
    )  # fmt: skip
    vm = loop.run(VM.boot(spec, timeout=240))
    print(f"\nVM booted to ready in {vm.boot_seconds:.2f}s with {vm.accel}")
    try:
        yield Booted(loop, vm, base)
    finally:
        loop.run(vm.kill())
        loop.run(vm.release())
        loop.close()
        shutil.rmtree(base, ignore_errors=True)


def test_the_guest_runs_its_own_kernel_with_the_chosen_accelerator(booted: Booted) -> None:
    result = booted.run(["uname", "-r"])
    assert result.exit_code == 0
    assert result.stdout.decode().strip() == booted.vm.ready["kernel"]
    assert result.stdout.decode().strip() != platform.release()
    assert booted.vm.accel == choose_accel("auto", host_facts())
    assert booted.vm.ready["pid"] == 1
    assert booted.run(["cat", "/proc/sys/kernel/hostname"]).stdout == b"podvm\n"


def test_exit_codes_and_streams_are_kept_apart(booted: Booted) -> None:
    result = booted.run(["sh", "-c", "echo out; echo err >&2; exit 7"])
    assert (result.exit_code, result.stdout, result.stderr) == (7, b"out\n", b"err\n")
    assert booted.run(["cat"], stdin=b"through stdin\n").stdout == b"through stdin\n"
    with pytest.raises(OCIRuntimeError, match="/no/such/program"):
        booted.run(["/no/such/program"])


def test_host_root_is_read_only_and_the_share_is_writable(booted: Booted) -> None:
    assert booted.run(["touch", "/usr/crio-must-not-exist"]).exit_code != 0
    assert not Path("/usr/crio-must-not-exist").exists()
    name = f"hello-{uuid.uuid4().hex[:8]}"
    assert booted.run(["sh", "-c", f"echo from-guest > {GUEST_SHARE}/{name}"]).exit_code == 0
    assert (booted.vm.spec.share / name).read_text() == "from-guest\n"
    # The guest's python3 is the host's.
    version = booted.run(["/usr/bin/python3", "-c", "import sys; print(sys.version)"])
    assert version.exit_code == 0 and version.stdout.strip()


def _bundle(booted: Booted, cid: str, args: list[str], terminal: bool = False) -> str:
    bundle = booted.vm.spec.share / cid
    busybox_rootfs(bundle / "rootfs", ("touch", "stty", "tty", "test"))
    (bundle / "config.json").unlink(missing_ok=True)
    subprocess.run(["crun", "spec", "-b", str(bundle)], check=True, capture_output=True)
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"]["args"] = args
    spec["process"]["terminal"] = terminal
    spec["root"] = {"path": "rootfs", "readonly": False}
    spec["hostname"] = cid[:16]
    spec["linux"]["cgroupsPath"] = f"/crio-test/{cid}"
    (bundle / "config.json").write_text(json.dumps(spec))
    return f"{GUEST_SHARE}/{cid}"


def test_a_container_runs_inside_the_guest_through_crun(booted: Booted) -> None:
    if not shutil.which("crun"):
        pytest.skip("crun is not installed")
    cid = f"c{uuid.uuid4().hex[:10]}"
    bundle = _bundle(booted, cid, ["sh", "-c", "uname -r; echo to-stderr >&2; read x; exit 5"])
    output: dict[str, list[bytes]] = {"stdout": [], "stderr": []}
    events: list[str] = []

    def on_event(event: _wire.Event) -> None:
        events.append(event.name)
        if event.name == "output":
            output[event.data["stream"]].append(_wire.decode_data(event.data["data"]))

    booted.vm.agent.listen(("container_id", cid), on_event)  # type: ignore[union-attr]
    created = booted.call("create", container_id=cid, bundle=bundle, stdin=True)
    assert created["pid"] > 0
    assert booted.call("state", container_id=cid)["status"] == "created"
    with pytest.raises(WrongStateError, match="not running"):
        booted.call("exec", exec_id="early", container_id=cid, argv=["true"])
    booted.call("start", container_id=cid)
    assert booted.call("state", container_id=cid)["status"] == "running"

    inside = booted.run(["cat", "/proc/1/cmdline"], container_id=cid)
    assert inside.exit_code == 0 and inside.stdout.startswith(b"sh\x00")
    assert booted.run(["hostname"], container_id=cid).stdout == f"{cid[:16]}\n".encode()

    stats = booted.call("stats", container_id=cid)
    assert stats["memory_usage_bytes"] > 0 and stats["cpu_usage_ns"] > 0

    booted.call("stdin", container_id=cid, data=_wire.encode_data(b"go\n"))
    done = booted.call("wait", container_id=cid)
    assert done["exit_code"] == 5
    assert b"".join(output["stdout"]).strip() == booted.vm.ready["kernel"].encode()
    assert b"".join(output["stderr"]) == b"to-stderr\n"
    assert events[-1] == "exit"
    with pytest.raises(WrongStateError, match="not running"):
        booted.call("exec", exec_id="late", container_id=cid, argv=["true"])
    booted.call("delete", container_id=cid)
    booted.call("delete", container_id=cid)  # idempotent
    with pytest.raises(NotFoundError):
        booted.call("state", container_id=cid)


def test_a_container_is_killed_and_a_terminal_exec_works(booted: Booted) -> None:
    if not shutil.which("crun"):
        pytest.skip("crun is not installed")
    cid = f"c{uuid.uuid4().hex[:10]}"
    bundle = _bundle(booted, cid, ["sleep", "600"])
    booted.call("create", container_id=cid, bundle=bundle)
    booted.call("start", container_id=cid)
    out: list[bytes] = []

    def on_event(event: _wire.Event) -> None:
        if event.name == "output":
            out.append(_wire.decode_data(event.data["data"]))

    booted.vm.agent.listen(("exec_id", "tty1"), on_event)  # type: ignore[union-attr]
    script = "read x; tty; stty size"
    booted.call("exec", exec_id="tty1", container_id=cid, argv=["sh", "-c", script], tty=True)
    booted.call("resize", exec_id="tty1", width=120, height=33)
    booted.call("stdin", exec_id="tty1", data=_wire.encode_data(b"go\n"))
    assert booted.call("wait", exec_id="tty1")["exit_code"] == 0
    text = b"".join(out).replace(b"\r\n", b"\n")
    assert b"/dev/pts/" in text and b"33 120\n" in text
    # sleep is PID 1 of its namespace and ignores SIGTERM; SIGKILL ends it.
    booted.call("kill", container_id=cid, signal=int(signal.SIGKILL))
    assert booted.call("wait", container_id=cid)["exit_code"] == 128 + signal.SIGKILL
    booted.call("delete", container_id=cid)


def test_more_modules_load_from_the_stored_tree(booted: Booted) -> None:
    assets = vm_assets_or_skip()
    assert assets.modules_dir is not None
    loaded = booted.call("modprobe", names=["dm_mod"], modules_dir=str(assets.modules_dir))
    assert "dm_mod" in loaded["loaded"]
    assert booted.run(["test", "-d", "/sys/module/dm_mod"]).exit_code == 0
    with pytest.raises(NotFoundError, match="no module nonexistent_mod"):
        booted.call("modprobe", names=["nonexistent_mod"], modules_dir=str(assets.modules_dir))


def test_an_extra_disk_shows_up_once_its_driver_is_loaded(booted: Booted) -> None:
    assets = vm_assets_or_skip()
    booted.call("modprobe", names=["virtio_blk"], modules_dir=str(assets.modules_dir))
    size = booted.run(["sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do "
                                   "test -b /dev/vda && break; sleep 0.5; done; "
                                   "cat /sys/block/vda/size"])  # fmt: skip
    assert size.exit_code == 0, size.stderr
    assert int(size.stdout) * 512 == DISK_BYTES


def test_zz_killing_the_vm_reports_why_and_leaves_nothing(booted: Booted) -> None:
    supervisor = json.loads((booted.vm.spec.run_dir / "supervisor.json").read_text())
    ended = booted.loop.run(booted.vm.kill())
    assert ended.reason == "stopped on command"
    for pid in (
        supervisor["supervisor_pid"],
        supervisor["qemu_pid"],
        *supervisor["virtiofsd_pids"],
    ):
        assert not Path(f"/proc/{pid}").exists(), f"process {pid} outlived its VM"
    booted.loop.run(booted.vm.release())
    assert str(booted.base) not in Path("/proc/self/mountinfo").read_text()
    with pytest.raises(Exception, match="died: stopped on command"):
        booted.run(["true"])
