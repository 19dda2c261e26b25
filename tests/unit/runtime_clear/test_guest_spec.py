"""The agent's changes to a container's config.json: the guest's devices, an exec's process."""

from __future__ import annotations

import os
from typing import Any

import pytest

from crio_plugins.runtime_clear._guest_spec import (
    MissingDeviceError,
    exec_process,
    guest_devices,
    with_guest_devices,
)

NULL = {"path": "/dev/null", "type": "c", "major": 1, "minor": 3, "fileMode": 0o666,
        "uid": 0, "gid": 0}  # fmt: skip
FUSE = {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 0o666,
        "uid": 0, "gid": 0}  # fmt: skip


def _spec(devices: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    linux: dict[str, Any] = {"resources": {}}
    if devices is not None:
        linux["devices"] = devices
    return {"linux": linux}


def test_this_machines_dev_is_read_as_oci_entries() -> None:
    found = {entry["path"]: entry for entry in guest_devices()}
    null = found["/dev/null"]
    assert (null["type"], null["major"], null["minor"]) == ("c", 1, 3)
    assert not any(path.startswith(("/dev/pts/", "/dev/shm/")) for path in found)
    assert "/dev/console" not in found


def test_a_tree_elsewhere_keeps_dev_paths(tmp_path: Any) -> None:
    if os.geteuid() != 0:
        pytest.skip("mknod needs root")
    os.mknod(tmp_path / "null", 0o20666, os.makedev(1, 3))
    (tmp_path / "pts").mkdir()
    os.mknod(tmp_path / "pts" / "ptmx", 0o20666, os.makedev(5, 2))
    assert [e["path"] for e in guest_devices(str(tmp_path))] == ["/dev/null"]


def test_requested_devices_must_exist_in_the_guest() -> None:
    asked = {"path": "/dev/myfuse", "type": "c", "major": 10, "minor": 229}
    spec = with_guest_devices(_spec([asked]), False, [NULL, FUSE])
    assert spec["linux"]["devices"] == [asked]
    disk = {"path": "/dev/disk0", "type": "b", "major": 254, "minor": 0}
    with pytest.raises(MissingDeviceError, match=r"/dev/disk0 \(b 254:0\) does not exist"):
        with_guest_devices(_spec([asked, disk]), False, [NULL, FUSE])


def test_a_privileged_container_gets_every_guest_node_then_its_own() -> None:
    mine = {"path": "/dev/null", "type": "c", "major": 10, "minor": 229}
    spec = with_guest_devices(_spec([mine]), True, [NULL, FUSE])
    assert spec["linux"]["devices"] == [FUSE, mine]  # its /dev/null replaces the guest's
    assert with_guest_devices(_spec(), True, [NULL])["linux"]["devices"] == [NULL]
    assert "devices" not in with_guest_devices(_spec([]), False, [NULL])["linux"]


def test_an_exec_runs_as_the_containers_process() -> None:
    base = {
        "terminal": True,
        "consoleSize": {"height": 1, "width": 2},
        "user": {"uid": 1000, "gid": 1, "additionalGids": [4242]},
        "args": ["sleep", "3600"],
        "env": ["PATH=/bin", "HOME=/home/user1"],
        "cwd": "/work",
        "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"]},
        "noNewPrivileges": True,
    }
    process = exec_process(base, ["id"], False, [], None)
    assert process["args"] == ["id"] and process["terminal"] is False
    assert process["user"] == base["user"] and process["capabilities"] == base["capabilities"]
    assert process["noNewPrivileges"] and process["cwd"] == "/work"
    assert "consoleSize" not in process
    process = exec_process(base, ["sh"], True, ["HOME=/tmp", "X=1"], "/")
    assert process["env"] == ["PATH=/bin", "HOME=/tmp", "X=1"]
    assert process["cwd"] == "/" and process["terminal"] is True
    assert base["args"] == ["sleep", "3600"]  # the container's own is not changed
