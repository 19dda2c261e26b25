"""The runc handler's clean-up takes only what this crio provably made.

The paths below are the node's defaults: ``/run/crio`` is the attach
directory and holds ``exits/``, ``ns/`` and ``version`` too; ``/run/runc`` and
``/run/crun`` are shared with podman, whose bundles live in the same store.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from crio.config import Config, configured_paths
from crio_plugins.runtime_runc.garbage import (
    HandlerPaths,
    collect,
    crio_attach_links,
    crio_exit_files,
    crio_pins,
    is_crio_monitor,
    is_crio_state,
)

CID = "c" * 64
RUNROOT = "/run/containers/storage"
DEFAULTS = HandlerPaths(
    handler_name="runc",
    runtime_root="/run/runc",
    exits_dir="/run/crio/exits",
    attach_dir="/run/crio",
    namespaces_dir="/run/crio/ns",
    bundle_root=RUNROOT,
)
BUNDLE = f"{RUNROOT}/overlay-containers/{CID}/userdata"


def _crio_conmon(*extra: str, root: str = "/run/runc", bundle: str = BUNDLE) -> list[str]:
    return [
        "/usr/bin/conmon", "--api-version", "1", "-c", CID, "-u", CID, "-n", "k8s_c",
        "-r", "/usr/bin/runc", "-b", bundle, "--socket-dir-path", "/run/crio",
        "--runtime-arg", f"--root={root}", "--log-level", "info", *extra,
    ]  # fmt: skip


# podman 4.3's conmon for a crun container, as /proc/PID/cmdline shows it.
PODMAN_CONMON = [
    "/usr/bin/conmon", "--api-version", "1", "-c", CID, "-u", CID, "-r", "/usr/bin/crun",
    "-b", f"/var/lib/containers/storage/overlay-containers/{CID}/userdata",
    "-p", f"/run/containers/storage/overlay-containers/{CID}/userdata/pidfile",
    "-n", "web", "--exit-dir", "/run/libpod/exits", "--full-attach", "-s",
    "-l", "k8s-file:/var/lib/containers/storage/ctr.log", "--log-level", "warning",
    "--runtime-arg", "--log-format=json", "--runtime-arg", "--log",
    "--runtime-arg=/run/containers/storage/overlay-containers/x/userdata/oci-log",
    "--conmon-pidfile", "/run/containers/storage/overlay-containers/x/userdata/conmon.pid",
    "--exit-command", "/usr/bin/podman", "--socket-dir-path", "/run/libpod/socket",
]  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (_crio_conmon("--exit-dir", "/run/crio/exits", "-p", f"{BUNDLE}/pidfile"), True),
        (_crio_conmon("-e", "--exec-process-spec", f"{BUNDLE}/exec-1/process.json"), True),
        (PODMAN_CONMON, False),
        # A conmon for another crio's runtime root, or one whose exits go elsewhere.
        (_crio_conmon("--exit-dir", "/run/crio/exits", root="/run/crun"), False),
        (_crio_conmon("--exit-dir", "/run/libpod/exits"), False),
        (_crio_conmon(), False),
        # The right directories, but a bundle outside crio's run root.
        (_crio_conmon("--exit-dir", "/run/crio/exits", bundle="/srv/bundle"), False),
        (["/usr/bin/sleep", "600"], False),
    ],
)
def test_a_conmon_is_crios_only_when_its_command_line_names_crios_paths(
    argv: list[str], expected: bool
) -> None:
    assert is_crio_monitor(argv, DEFAULTS) is expected


def test_runtime_state_is_crios_only_with_its_bundle_and_its_annotation() -> None:
    ours = {"id": CID, "bundle": BUNDLE, "annotations": {"io.kubernetes.cri-o.ContainerID": CID}}
    assert is_crio_state(CID, ours, RUNROOT)
    podman = {
        "id": CID,
        "bundle": f"/var/lib/containers/storage/overlay-containers/{CID}/userdata",
        "annotations": {"io.container.manager": "libpod"},
    }
    assert not is_crio_state(CID, podman, RUNROOT)
    # A bundle in the shared run root without crio's annotation is podman's or another's.
    assert not is_crio_state(CID, {**podman, "bundle": BUNDLE}, RUNROOT)
    assert not is_crio_state("d" * 64, ours, RUNROOT)  # the annotation names another id
    assert not is_crio_state(CID, {**ours, "bundle": RUNROOT}, RUNROOT)
    assert not is_crio_state(CID, {"id": CID}, RUNROOT)
    assert not is_crio_state(CID, ours, "")


def _defaults_under(base: Path) -> tuple[HandlerPaths, Path]:
    """The default layout below ``base``: exits/, ns/ and version inside the attach dir."""
    attach = base / "run" / "crio"
    config = Config.model_validate(
        {
            "crio": {
                "state_dir": str(base / "lib"),
                "runroot": str(base / "storage"),
                "version_file": str(attach / "version"),
                "runtime": {
                    "container_exits_dir": str(attach / "exits"),
                    "container_attach_socket_dir": str(attach),
                    "namespaces_dir": str(attach / "ns"),
                },
            }
        }
    )
    paths = HandlerPaths(
        handler_name="runc",
        runtime_root=str(base / "runc"),
        exits_dir=str(attach / "exits"),
        attach_dir=str(attach),
        namespaces_dir=str(attach / "ns"),
        bundle_root=str(base / "storage"),
        reserved=configured_paths(config),
    )
    for kind in ("netns", "ipcns", "utsns"):
        (attach / "ns" / kind).mkdir(parents=True)
    (attach / "exits").mkdir()
    (base / "runc").mkdir()
    (attach / "version").write_text("1.0\n")
    return paths, attach


def test_nested_default_directories_are_never_taken_for_attach_links(tmp_path: Path) -> None:
    paths, attach = _defaults_under(tmp_path)
    exec_id, lost, kept = secrets.token_hex(8), "a" * 64, "b" * 64
    for name in (lost, kept, exec_id):
        os.symlink(tmp_path / "storage" / name, attach / name)
    (attach / ("e" * 64)).mkdir()  # a directory is never an attach link
    (attach / "crio.sock").write_text("")
    (attach / "runtimes").mkdir()
    (attach / "exits" / lost).write_text("0")
    (attach / "exits" / "not-an-id").write_text("0")
    (attach / "exits" / ("f" * 64)).mkdir()
    (attach / "ns" / "netns" / lost).write_text("")
    (attach / "ns" / "netns" / "cni-1234").write_text("")
    assert crio_attach_links(paths) == sorted([lost, kept, exec_id])
    assert crio_exit_files(paths) == [lost]
    assert crio_pins(paths, "netns") == [lost]

    async def no_state(container_id: str) -> Mapping[str, Any] | None:
        return None

    async def no_delete(container_id: str) -> str:
        raise AssertionError(f"deleted {container_id}")

    found = asyncio.run(collect(paths, no_state, no_delete, [], [kept], dry_run=False))
    assert len(found) == 4, found
    assert sorted(os.listdir(attach)) == sorted(
        ["exits", "ns", "version", "crio.sock", "runtimes", "e" * 64, kept]
    )
    assert sorted(os.listdir(attach / "exits")) == ["f" * 64, "not-an-id"]
    assert os.listdir(attach / "ns" / "netns") == ["cni-1234"]


def test_a_foreign_container_in_the_runtime_root_is_left_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    paths, _ = _defaults_under(tmp_path)
    ours, podmans = "a" * 64, "b" * 64
    for name in (ours, podmans):
        (tmp_path / "runc" / name).mkdir()
    states = {
        ours: {
            "bundle": str(tmp_path / "storage" / "overlay-containers" / ours / "userdata"),
            "annotations": {"io.kubernetes.cri-o.ContainerID": ours},
        },
        podmans: {"bundle": "/var/lib/containers/storage/x/userdata", "annotations": {}},
    }
    deleted: list[str] = []

    async def state(container_id: str) -> Mapping[str, Any] | None:
        return states[container_id]

    async def delete(container_id: str) -> str:
        deleted.append(container_id)
        return ""

    foreign: set[str] = set()
    caplog.set_level("DEBUG", logger="crio.runtime.runc")
    for _ in range(2):
        found = asyncio.run(collect(paths, state, delete, [], [], dry_run=True, foreign=foreign))
        assert found == [
            f"runtime state {paths.runtime_root}/{ours}: container {ours} has no record "
            "(left by a crash)"
        ]
    asyncio.run(collect(paths, state, delete, [], [], dry_run=False, foreign=foreign))
    assert deleted == [ours]
    mentions = [r for r in caplog.records if podmans in r.getMessage()]
    assert len(mentions) == 1 and mentions[0].levelname == "DEBUG", mentions
