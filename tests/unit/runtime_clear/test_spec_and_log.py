"""The guest's config.json from core's, and CRI log records (pure)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from crio_plugins.runtime_clear._crilog import encode_chunk, rfc3339_nano
from crio_plugins.runtime_clear._spec import HostBind, guest_spec, propagation_of

GUEST_DIR = "/run/vm/share/ctr/c1"


def _core_spec() -> dict[str, Any]:
    """The shape core's build_spec gives a container of a pod with pinned namespaces."""
    return {
        "ociVersion": "1.0.2",
        "process": {"args": ["sh"], "terminal": False},
        "root": {"path": "/var/lib/containers/storage/overlay/abc/merged", "readonly": True},
        "hostname": "pod1",
        "hooks": {"prestart": [{"path": "/usr/bin/hook"}]},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev/shm", "type": "bind", "source": "/dev/shm",
             "options": ["rbind", "nosuid"]},
            {"destination": "/etc/hosts", "type": "bind", "source": "/run/pods/p1/hosts",
             "options": ["bind", "ro"]},
            {"destination": "/data", "source": "/srv/vol", "options": ["rbind", "rw"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"},
        ],
        "linux": {
            "namespaces": [
                {"type": "mount"},
                {"type": "network", "path": "/run/crio/ns/netns/p1"},
                {"type": "uts"},
                {"type": "ipc"},
                {"type": "pid", "path": "/proc/42/ns/pid"},
                {"type": "cgroup"},
            ],
            "cgroupsPath": "/crio/pod-p1/crio-c1",
            "devices": [{"path": "/dev/kvm", "type": "c", "major": 10, "minor": 232}],
            "resources": {"memory": {"limit": 1 << 28}},
        },
    }  # fmt: skip


def test_root_and_bind_sources_move_into_the_share() -> None:
    made = guest_spec(_core_spec(), GUEST_DIR)
    spec = made.spec
    assert spec["root"] == {"path": f"{GUEST_DIR}/rootfs", "readonly": True}
    by_destination = {m["destination"]: m for m in spec["mounts"]}
    assert by_destination["/etc/hosts"]["source"] == f"{GUEST_DIR}/mounts/0"
    assert by_destination["/etc/hosts"]["options"] == ["bind", "ro"]
    assert by_destination["/data"]["source"] == f"{GUEST_DIR}/mounts/1"
    assert made.binds == (
        HostBind("/run/pods/p1/hosts", "mounts/0"),
        HostBind("/srv/vol", "mounts/1"),
    )
    # The pod's /dev/shm is the guest's own; kernel file systems stay as they are.
    assert by_destination["/dev/shm"]["source"] == "/dev/shm"
    assert by_destination["/proc"] == {"destination": "/proc", "type": "proc", "source": "proc"}


def test_pod_namespaces_are_the_guests_and_host_things_go() -> None:
    spec = guest_spec(_core_spec(), GUEST_DIR).spec
    assert spec["linux"]["namespaces"] == [
        {"type": "mount"},
        {"type": "pid", "path": "/proc/42/ns/pid"},  # a guest PID already
        {"type": "cgroup"},
    ]
    assert "hostname" not in spec and "hooks" not in spec
    assert spec["linux"]["cgroupsPath"] == "/crio/pod-p1/crio-c1"
    assert spec["linux"]["resources"] == {"memory": {"limit": 1 << 28}}


def test_containers_get_a_cgroup_namespace_in_the_cgroup_v2_guest() -> None:
    core = _core_spec()
    core["linux"]["namespaces"] = [{"type": "mount"}, {"type": "network", "path": "/x"}]
    assert guest_spec(core, GUEST_DIR).spec["linux"]["namespaces"] == [
        {"type": "mount"},
        {"type": "cgroup"},
    ]


def test_requested_devices_stay_for_the_agent_to_check() -> None:
    made = guest_spec(_core_spec(), GUEST_DIR)
    assert made.spec["linux"]["devices"] == [
        {"path": "/dev/kvm", "type": "c", "major": 10, "minor": 232}
    ]
    assert not made.all_guest_devices


def test_a_privileged_containers_copy_of_the_host_dev_gives_way_to_the_guests() -> None:
    core = _core_spec()
    host = [{"path": "/dev/null", "type": "c", "major": 1, "minor": 3},
            {"path": "/dev/vda", "type": "b", "major": 254, "minor": 0}]  # fmt: skip
    asked = {"path": "/dev/myfuse", "type": "c", "major": 10, "minor": 229}
    core["linux"]["devices"] = [*host, asked]
    made = guest_spec(core, GUEST_DIR, host_nodes=host)
    assert made.all_guest_devices
    assert made.spec["linux"]["devices"] == [asked]
    core["linux"]["devices"] = list(host)
    assert "devices" not in guest_spec(core, GUEST_DIR, host_nodes=host).spec["linux"]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["rbind", "rprivate", "rw"], "private"),
        (["rbind", "rslave", "ro"], "slave"),
        (["rbind", "rshared", "rw"], "shared"),
        (["bind", "slave"], "slave"),
        (["bind", "ro"], "private"),
    ],
)
def test_propagation_of_a_bind(options: list[str], expected: str) -> None:
    assert propagation_of({"options": options}) == expected


def test_binds_carry_their_propagation() -> None:
    core = _core_spec()
    core["mounts"][3]["options"] = ["rbind", "rslave", "rw"]
    assert guest_spec(core, GUEST_DIR).binds[1] == HostBind("/srv/vol", "mounts/1", "slave")


def test_the_input_is_not_changed() -> None:
    original = _core_spec()
    guest_spec(original, GUEST_DIR)
    assert original == _core_spec()


UTC = 0


def test_timestamps_have_nine_digits_and_an_offset() -> None:
    ns = 1_700_000_000_123_456_789
    assert rfc3339_nano(ns, UTC) == b"2023-11-14T22:13:20.123456789+00:00"
    assert rfc3339_nano(ns, 2 * 3600) == b"2023-11-15T00:13:20.123456789+02:00"
    assert rfc3339_nano(ns, -(5 * 3600 + 30 * 60)) == b"2023-11-14T16:43:20.123456789-05:30"


def test_full_lines_and_a_partial_tail() -> None:
    ns = 1_700_000_000_000_000_001
    out = encode_chunk("stdout", b"one\ntwo\nthr", ns, UTC).split(b"\n")
    stamp = b"2023-11-14T22:13:20.000000001+00:00"
    assert out == [
        stamp + b" stdout F one",
        stamp + b" stdout F two",
        stamp + b" stdout P thr",
        b"",
    ]
    assert encode_chunk("stderr", b"\n", ns, UTC) == stamp + b" stderr F \n"
    assert encode_chunk("stdout", b"", ns, UTC) == b""


def test_records_parse_back_to_the_bytes_written() -> None:
    chunks = [(b"par", "stdout"), (b"tial\nnext\n", "stdout"), (b"err\n", "stderr")]
    log = b"".join(encode_chunk(stream, data, 1, UTC) for data, stream in chunks)
    streams = {"stdout": b"", "stderr": b""}
    for line in log.splitlines():
        _, stream, tag, content = line.split(b" ", 3)
        streams[stream.decode()] += content + (b"\n" if tag == b"F" else b"")
    assert streams == {"stdout": b"partial\nnext\n", "stderr": b"err\n"}


def test_only_the_two_streams_are_allowed() -> None:
    with pytest.raises(ValueError, match="stdout or stderr"):
        encode_chunk("stdin", b"x", 0, UTC)


def test_log_size_max_starts_the_log_over_as_conmon_does(tmp_path: Path) -> None:
    from crio_plugins.runtime_clear.pods import VMContainer

    log_path = tmp_path / "0.log"
    ctr = VMContainer("c", "p", "c", tmp_path, tmp_path, "/g", str(log_path), log_size_max=200)
    ctr.open_log()
    try:
        for _ in range(5):
            ctr._log("stdout", b"x" * 60 + b"\n")  # ~100 bytes a record
        # Never past the limit, and the newest records are the ones kept.
        assert 0 < log_path.stat().st_size <= 200
        assert log_path.read_bytes().endswith(b"x" * 60 + b"\n")
    finally:
        ctr.close_log()
    unlimited = VMContainer("d", "p", "d", tmp_path, tmp_path, "/g", str(tmp_path / "1.log"))
    unlimited.open_log()
    for _ in range(5):
        unlimited._log("stdout", b"x" * 60 + b"\n")
    unlimited.close_log()
    assert (tmp_path / "1.log").stat().st_size > 400
