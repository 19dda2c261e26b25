"""Where the kill-restart harness runs: a private crio, bridge network, registry and cgroup root.

:func:`chaos_env` sets them up and tears them down; :func:`leftovers` looks
for everything the run may have left on the host, only among its own
objects (its directory tree, its bridge and network name, its cgroup root).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from support.chaos import PULL_IMAGE, Chaos
from support.cni import CNIEnv
from support.cri import PAUSE_IMAGE
from support.daemon import CrioProcess
from support.images import layer_tar, write_oci_layout
from support.node import pause_processes
from support.registry import Registry, skopeo_push

__all__ = ["chaos_env", "conmons_of", "crio_check", "leftovers", "store_container_ids"]


@contextlib.contextmanager
def chaos_env(
    *, max_pods: int = 50, workers: int = 6, seed: int | None = None, check_every: int = 0,
    pull: bool = True,
) -> Iterator[Chaos]:  # fmt: skip
    """A started :class:`Chaos` (crio serving); everything it made is removed after."""
    files = Path(tempfile.mkdtemp(prefix="crio-chaos-"))
    registry = Registry(base=files / "registry") if pull else None
    image: dict[str, object] = {"pause_image": PAUSE_IMAGE, "pause_command": "/pause"}
    if registry is not None:
        registry.start()
        layout = files / "layout"
        write_oci_layout(layout, [layer_tar({"chaos": secrets.token_hex(8)})])
        skopeo_push(f"oci:{layout}:latest", registry, PULL_IMAGE)
        (files / "policy.json").write_text('{"default": [{"type": "insecureAcceptAnything"}]}')
        (files / "registries.conf").write_text(
            f'[[registry]]\nlocation = "{registry.host}"\ninsecure = true\n'
        )
        image.update(
            signature_policy=str(files / "policy.json"),
            registries_conf=str(files / "registries.conf"),
            registries_d=str(files),
        )
    crio = CrioProcess({"crio.image": image})
    cni = CNIEnv(crio.base)
    cgroup_root = f"/crio-chaos-{secrets.token_hex(4)}"
    chaos = Chaos(
        crio, cni, cgroup_root, max_pods=max_pods, workers=workers, seed=seed,
        registry_host=registry.host if registry is not None else "", check_every=check_every,
        check=lambda: crio_check(crio),
    )  # fmt: skip
    try:
        chaos.start()
        yield chaos
    finally:
        with contextlib.suppress(Exception):
            chaos.stop()
        crio.cleanup()
        cni.cleanup()
        _remove_cgroups(cgroup_root)
        if registry is not None:
            registry.cleanup()
        shutil.rmtree(files, ignore_errors=True)


def crio_check(crio: CrioProcess) -> tuple[int, str]:
    """``crio check`` (read-only) against this crio's configuration."""
    result = subprocess.run(crio.command("check"), capture_output=True, text=True, timeout=120)
    return result.returncode, result.stdout + result.stderr


def leftovers(chaos: Chaos) -> dict[str, list[str]]:
    """What this run left on the host (crio stopped, everything removed through CRI before)."""
    base = chaos.crio.base
    with open("/proc/self/mountinfo") as handle:
        mounts = [line.split()[4] for line in handle if line.split()[4].startswith(str(base))]
    cgroups = [
        str(path)
        for hierarchy in Path("/sys/fs/cgroup").iterdir()
        for path in [hierarchy / chaos.cgroup_root.lstrip("/")]
        if path.is_dir() and any(p.is_dir() for p in path.iterdir())
    ]
    found = {
        "mounts": mounts,
        "namespace pins": _files(base / "ns"),
        "cgroups": cgroups,
        "conmon processes": [f"{pid} ({cid})" for cid, pid in conmons_of(base)],
        "pause processes": [f"{pid} ({pin})" for pid, pin in pause_processes(base).items()],
        "runtime state": _files(base / "rt-runc") + _files(base / "rt-crun"),
        "exit files": _files(base / "exits"),
        "attach links": _files(base / "attach"),
        # owner.lock stays with the state directory, as the store's lock files do.
        "records": [f for f in _files(base / "state") if not f.endswith("/owner.lock")],
        "pod run dirs": _files(base / "runroot" / "crio-sandboxes"),
        "CNI records": _files(base / "runroot" / "crio-net" / "results"),
        "store containers": sorted(store_container_ids(base)),
        "incomplete-layer locks": _files(base / "runroot" / "overlay-layers" / "incomplete"),
        "veths": chaos.cni.veths(),
        "host-local leases": chaos.cni.leases(),
        "iptables rules": _iptables(chaos.cni.name),
    }
    return {key: value for key, value in found.items() if value}


def conmons_of(base: Path) -> list[tuple[str, int]]:
    """(container id, pid) of the live conmon processes of the crio under ``base``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            if argv and argv[0].endswith(b"conmon") and str(base).encode() in b" ".join(argv):
                found.append((argv[argv.index(b"-c") + 1].decode(), int(entry)))
    return sorted(found)


def store_container_ids(base: Path) -> set[str]:
    """Ids in the store's containers.json under ``base`` (overlay driver)."""
    path = base / "root" / "overlay-containers" / "containers.json"
    if not path.exists():
        return set()
    return {c["id"] for c in json.loads(path.read_text() or "[]")}


def _files(directory: Path) -> list[str]:
    if not directory.is_dir():
        return []
    return sorted(str(p) for p in directory.rglob("*") if not p.is_dir())


def _iptables(network: str) -> list[str]:
    rules = []
    for binary in ("iptables", "ip6tables"):
        text = subprocess.run([binary, "-t", "nat", "-S"], capture_output=True, text=True).stdout
        rules += [line for line in text.splitlines() if f'name: \\"{network}\\"' in line]
    return rules


def _remove_cgroups(root: str) -> None:
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        top = hierarchy / root.lstrip("/")
        if not top.is_dir():
            continue
        for sub in sorted(top.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if sub.is_dir():
                with contextlib.suppress(OSError):
                    sub.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()
