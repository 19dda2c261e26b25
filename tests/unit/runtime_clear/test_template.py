"""Pod VM templates, the pure and no-root parts: the ACPI table, the initramfs, the key,
the store's locks, the RAM copy, the QMP codec, the qemu command line, the options."""

from __future__ import annotations

import fcntl
import importlib
import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from crio_plugins.runtime_clear import _guest_rtnl, _qmp
from crio_plugins.runtime_clear import _template_store as store
from crio_plugins.runtime_clear._cpio import file
from crio_plugins.runtime_clear._initramfs import (
    AGENT_IN_INITRAMFS,
    BOOT_MODULES,
    INIT_SCRIPT,
    build_template_initramfs,
)
from crio_plugins.runtime_clear._template_files import collect_python, elf_interpreter
from crio_plugins.runtime_clear.options import parse_options
from crio_plugins.runtime_clear.qemu import (
    AGENT_TRANSPORT,
    QemuSettings,
    hotplug_commands,
    template_argv,
)
from crio_plugins.runtime_clear.template import templates_wanted

PLUGIN = Path(__file__).resolve().parents[3] / "plugins" / "runtime_clear"

# -- the template's initramfs ----------------------------------------------------------


def _newc(archive: bytes) -> list[tuple[list[tuple[str, int, bytes]], int]]:
    """Each concatenated newc archive: its entries (name, mode, data) and where it ends."""
    archives, entries, offset = [], [], 0
    while offset < len(archive):
        assert archive[offset : offset + 6] == b"070701", offset
        fields = [int(archive[offset + 6 + 8 * i : offset + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name_at = offset + 110
        name = archive[name_at : name_at + namesize - 1].decode()
        data_at = name_at + namesize + (-(110 + namesize) % 4)
        offset = data_at + size + (-size % 4)
        if name == "TRAILER!!!":
            archives.append((entries, offset))
            entries = []
        else:
            entries.append((name, mode, archive[data_at : data_at + size]))
    return archives


def test_template_initramfs_is_the_base_then_the_overlay() -> None:
    base = build_template_initramfs.__globals__["write_newc"]([file("init", b"base")])
    made = build_template_initramfs(
        base,
        [("virtio_pci", b"ko")],
        "/usr/bin/python3.11",
        [file("usr/bin/python3.11", b"elf", 0o755)],
        [("agent.py", b"print()")],
    )
    (base_entries, _), (overlay, end) = _newc(made)
    assert end == len(made)
    assert [name for name, _, _ in base_entries] == ["init"]
    names = {name: data for name, _, data in overlay}
    assert (
        b"exec /usr/bin/python3.11 -I -S -B /crio-agent/agent.py --mode template" in names["init"]
    )
    assert names["lib/modules/template-order"] == b"virtio_pci\n"
    assert names[f"{AGENT_IN_INITRAMFS}/agent.py"] == b"print()"
    assert names["usr/bin/python3.11"] == b"elf"
    positions = [name for name, _, _ in overlay]
    assert (
        positions.index("usr") < positions.index("usr/bin") < positions.index("usr/bin/python3.11")
    )


def test_the_guest_python_is_collected_with_what_it_maps_and_loads() -> None:
    if not os.access("/usr/bin/python3", os.X_OK):
        pytest.skip("no /usr/bin/python3 (the guest python)")
    python, entries = collect_python("/usr/bin/python3", PLUGIN)
    names = {entry.name for entry in entries}
    assert python == os.path.realpath("/usr/bin/python3")
    assert python.lstrip("/") in names
    version = re.search(r"python(3\.\d+)", python)
    assert version is not None
    stdlib = f"usr/lib/python{version.group(1)}"
    assert f"{stdlib}/os.py" in names and f"{stdlib}/encodings/__init__.py" in names
    assert f"{stdlib}/ctypes/__init__.py" in names  # imported lazily by the agent
    assert not any(name.endswith("/agent.py") or "_guest_" in name for name in names)
    with open(python, "rb") as handle:
        interpreter = elf_interpreter(handle.read(4096))
    assert interpreter.lstrip("/") in names  # the dynamic loader, by the path the binary names
    assert any(re.search(r"/libc\.so\.6$", name) for name in names)


# -- the restored guest's mounts match a booted guest's -----------------------------------


def test_a_restored_guest_mounts_what_a_booted_guests_init_mounts() -> None:
    booted = set(re.findall(r"mount -t (\S+)(?: -o (\S+))? (\S+) /newroot(\S*)", INIT_SCRIPT))
    source = (PLUGIN / "_guest_restore.py").read_text()
    restored = set()
    for src, target, fstype, data in re.findall(
        r'_must_mount\("(\w+)", f"\{new\}([^"]*)", "(\w+)", [^,]+, "([^"]*)"\)', source
    ):
        restored.add((fstype, data, src, target))
    for tag, target in (("root", ""), ("share", "@SHARE@")):
        restored.add(("virtiofs", "ro" if tag == "root" else "", tag, target))
    normalised = {
        (fstype, ",".join(o for o in opts.split(",") if o not in ("nosuid", "nodev")), src,
         target.replace("/run/vm/share", "@SHARE@"))
        for fstype, opts, src, target in booted
    }  # fmt: skip
    assert normalised == restored


# -- rtnetlink, byte for byte (the kernel itself is in tests/integration) ------------------


def test_netlink_requests_are_what_ip_sends() -> None:
    up = _guest_rtnl.set_link(3, "eth0", mtu=1400).encode(7)
    assert struct.unpack_from("=IHHII", up) == (len(up), 16, 0x5, 7, 0)
    assert struct.unpack_from("=BxHiII", up, 16) == (0, 0, 3, 1, 1)
    assert up[32:] == struct.pack("=HHI", 8, 4, 1400)
    addr = _guest_rtnl.add_address(3, "eth0", "10.88.0.5/16").encode(8)
    assert struct.unpack_from("=HH", addr, 4) == (20, 0x605)
    assert struct.unpack_from("=BBBBI", addr, 16) == (2, 16, 0, 0, 3)
    assert addr[24:] == struct.pack("=HH", 8, 2) + bytes([10, 88, 0, 5]) + struct.pack(
        "=HH", 8, 1
    ) + bytes([10, 88, 0, 5])
    route = _guest_rtnl.add_route("default", "10.88.0.1").encode(9)
    assert struct.unpack_from("=BBBBBBBBI", route, 16) == (2, 0, 0, 0, 254, 3, 0, 1, 0)
    assert route[28:] == struct.pack("=HH", 8, 5) + bytes([10, 88, 0, 1])  # no RTA_DST
    v6 = _guest_rtnl.add_route("fd00:1::/64", "fd00::1").encode(1)
    assert struct.unpack_from("=BB", v6, 16) == (10, 64)
    assert _guest_rtnl.add_route("10.1.0.0/16").what == "ip route add 10.1.0.0/16"


def test_netlink_acknowledgements_are_parsed_by_sequence() -> None:
    ok = struct.pack("=IHHII", 36, 2, 0, 4, 0) + struct.pack("=i", 0) + bytes(16)
    exists = struct.pack("=IHHII", 36, 2, 0, 5, 0) + struct.pack("=i", -17) + bytes(16)
    assert _guest_rtnl.acks(ok + exists) == [(4, 0), (5, 17)]


# -- QMP ---------------------------------------------------------------------------------


def test_qmp_commands_and_replies() -> None:
    assert _qmp.encode_command("stop") == b'{"execute": "stop"}\n'
    assert json.loads(_qmp.encode_command("migrate", {"uri": "exec:cat"})) == {
        "execute": "migrate",
        "arguments": {"uri": "exec:cat"},
    }
    assert _qmp.parse_line(b'{"return": {}}\n') == {"return": {}}
    with pytest.raises(_qmp.QMPError, match="not JSON"):
        _qmp.parse_line(b"garbage\n")


# -- the template machine ------------------------------------------------------------------


def _settings(tmp_path: Path) -> QemuSettings:
    return QemuSettings(
        qemu="/usr/bin/qemu-system-x86_64",
        kernel=Path("/k/vmlinux"),
        initrd=Path("/t/initrd.img"),
        run_dir=tmp_path / "vm",
        accel="tcg",
        tsc_khz=2000000,
    )


def test_template_machine_saved_and_restored(tmp_path: Path) -> None:
    saved = template_argv(_settings(tmp_path), "/t/memory")
    restored = template_argv(_settings(tmp_path), "@MEMORY@", incoming=True)
    assert "microvm,accel=tcg,acpi=on,rtc=on,pcie=on,memory-backend=mem" in saved
    assert "memory-backend-file,id=mem,size=512M,mem-path=/t/memory,share=on" in saved
    assert f"virtio-serial-device,bus=virtio-mmio-bus.{AGENT_TRANSPORT}" in saved
    assert "pcie_ports=native" in saved[saved.index("-append") + 1]
    assert not any("vhost-user-fs" in arg for arg in saved + restored)
    # Restored: no kernel (its RAM has one), the state comes later (-incoming defer).
    assert "-kernel" not in restored and restored[-2:] == ["-incoming", "defer"]
    without = [a for a in saved if a not in ("-kernel", "/k/vmlinux", "-initrd", "/t/initrd.img")]
    without = without[: without.index("-append")] + without[without.index("-append") + 2 :]
    assert [a.replace("/t/memory", "@MEMORY@") for a in without] == restored[:-2]
    commands = hotplug_commands(tmp_path / "vm")
    assert [name for name, _ in commands] == ["chardev-add", "device_add"] * 2
    assert commands[1][1] == {
        "driver": "vhost-user-fs-pci", "id": "fs-root", "chardev": "fs-root", "tag": "root",
        "bus": "crio-rp0",
    }  # fmt: skip


def test_vm_template_and_template_dir_are_validated() -> None:
    assert parse_options("clear", {}).vm_template == "auto"
    assert parse_options("clear", {"vm_template": False}).vm_template is False
    assert parse_options("clear", {"template_dir": "/x"}).template_dir == "/x"
    for key, value in (("vm_template", "yes"), ("template_dir", "rel")):
        with pytest.raises(Exception, match=f"runtimes.clear.{key}"):
            parse_options("clear", {key: value})


# -- the store -------------------------------------------------------------------------------

KEY = "a" * 64
OTHER = "b" * 64


def _complete(root: Path, key: str) -> None:
    work = store.build_dir(root, key)
    for name in ("initrd.img", "memory", "state"):
        (work / name).write_bytes(b"x")
    store.install(work, root, key, {"key": key})


def _hold_in_child(path: Path) -> subprocess.Popen[bytes]:
    code = (
        "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
        "fcntl.flock(fd, fcntl.LOCK_SH); print('held', flush=True); sys.stdin.read()"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert child.stdout is not None and child.stdout.readline() == b"held\n"
    return child


def test_templates_of_other_keys_go_only_when_nobody_uses_them(tmp_path: Path) -> None:
    _complete(tmp_path, KEY)
    _complete(tmp_path, OTHER)
    (tmp_path / "unrelated").mkdir()
    assert store.facts(tmp_path, KEY, ("memory",)) == {"key": KEY}
    user = _hold_in_child(tmp_path / f"{OTHER[:24]}.lock")
    try:
        assert store.clean(tmp_path, KEY) == []
    finally:
        user.communicate(b"")
    assert store.clean(tmp_path, KEY) == [f"VM template {tmp_path / OTHER[:24]}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [KEY[:24], "unrelated"]


def test_the_tests_prune_template_dirs_of_checkouts_that_are_gone(tmp_path: Path) -> None:
    from support.vm import CHECKOUT_RECORD, prune_template_dirs

    cache = tmp_path / "crio-test"
    own, live, gone, old, busy = (
        cache / f"vm-templates-{tag}" for tag in ("own", "live", "gone", "old", "busy")
    )
    checkout = tmp_path / "live-checkout"
    checkout.mkdir()
    for directory, names in (
        (own, None),
        (live, checkout),
        (gone, tmp_path / "removed-clone"),
        (old, None),  # made before the record existed
        (busy, tmp_path / "removed-clone"),
    ):
        directory.mkdir(parents=True)
        _complete(directory, KEY)
        if names is not None:
            (directory / CHECKOUT_RECORD).write_text(f"{names}\n")
    (cache / "systemd-guest").mkdir()  # another cache: not a template directory
    user = _hold_in_child(busy / f"{KEY[:24]}.lock")  # a crio still restores from it
    try:
        removed = prune_template_dirs(own)
    finally:
        user.communicate(b"")
    assert sorted(p for p in removed if not p.startswith("VM template")) == [str(gone), str(old)]
    assert sorted(p.name for p in cache.iterdir()) == [
        "systemd-guest", "vm-templates-busy", "vm-templates-live", "vm-templates-own"
    ]  # fmt: skip
    assert (live / KEY[:24] / store.MARKER).is_file() and (own / KEY[:24]).is_dir()
    assert (busy / KEY[:24]).is_dir()
    assert prune_template_dirs(own) == [f"VM template {busy / KEY[:24]}", str(busy)]


def test_a_killed_build_is_removed_once_nobody_builds(tmp_path: Path) -> None:
    stale = store.build_dir(tmp_path, KEY)
    builder = _hold_in_child(tmp_path / f"{KEY[:24]}.build.lock")  # shared, but held
    try:
        assert store.clean_builds(tmp_path, KEY) == []
    finally:
        builder.communicate(b"")
    assert store.clean_builds(tmp_path, KEY) == [f"VM template build {stale}"]
    fd = store.lock_build(tmp_path, KEY)
    try:
        with pytest.raises(BlockingIOError):  # one builder at a time
            fcntl.flock(
                os.open(tmp_path / f"{KEY[:24]}.build.lock", os.O_RDWR),
                fcntl.LOCK_EX | fcntl.LOCK_NB,
            )
    finally:
        os.close(fd)


# -- the RAM copy --------------------------------------------------------------------------------


def test_only_the_data_of_the_template_ram_is_copied(tmp_path: Path) -> None:
    sys.path.insert(0, str(PLUGIN))  # the supervisor imports its siblings by name
    try:
        restore = importlib.import_module("_restore")
    finally:
        sys.path.remove(str(PLUGIN))
    ram = tmp_path / "memory"
    with open(ram, "wb") as handle:
        handle.truncate(64 << 20)
        handle.seek(1 << 20)
        handle.write(b"kernel" * 1000)
        handle.seek(40 << 20)
        handle.write(b"\xff" * 8192)
    memfd = restore.new_memory(64 << 20)
    try:
        copied = restore.fill_memory(memfd, str(ram), 64 << 20)
        assert copied < 1 << 20  # the extents around the data, not 64 MiB
        assert os.pread(memfd, 6000, 1 << 20) == b"kernel" * 1000
        assert os.pread(memfd, 8192, 40 << 20) == b"\xff" * 8192
        assert os.pread(memfd, 16, 20 << 20) == bytes(16)
        assert os.fstat(memfd).st_size == 64 << 20
        assert os.get_inheritable(memfd)
    finally:
        os.close(memfd)


def test_boot_modules_are_not_loaded_twice_by_a_template() -> None:
    assert "virtio_pci" not in BOOT_MODULES


def test_vm_template_true_is_refused_without_the_kernels_module_tree(tmp_path: Path) -> None:
    from crio import config
    from crio.config import RuntimeHandler
    from crio.plugins import Plugins

    for tool in ("/usr/bin/qemu-system-x86_64", "/usr/lib/qemu/virtiofsd"):
        if not os.access(tool, os.X_OK):
            pytest.skip(f"{tool} is not installed")
    (tmp_path / "vmlinux").write_bytes(b"kernel")
    (tmp_path / "initrd.img").write_bytes(b"initrd")
    plugins = Plugins()
    plugins.load_entry_points()
    paths = {"kernel": str(tmp_path / "vmlinux"), "initrd": str(tmp_path / "initrd.img")}
    asked = plugins.runtime(
        "clear", RuntimeHandler(runtime_type="vm", vm_template=True, **paths), config.Config()
    )  # type: ignore[call-arg]
    reason, message = asked._check()
    assert reason == "VMTemplateUnsupported" and "module tree" in message
    unset = plugins.runtime("clear", RuntimeHandler(runtime_type="vm", **paths), config.Config())  # type: ignore[call-arg]
    assert unset._check() == ("", "")
    assert templates_wanted("auto", tmp_path / "vmlinux", "clear") is False  # it boots
