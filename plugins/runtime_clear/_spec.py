"""Turn core's host-side config.json into the one the guest runs (pure).

Core builds the OCI spec as if the container ran on the host. In a pod VM:

- ``root.path`` becomes the rootfs's place in the share (the host binds the
  mounted rootfs there);
- every bind mount's host source becomes a bind in the share as well (the
  host makes those binds; :class:`HostBind` lists them), except the pod's
  ``/dev/shm``, which is the guest's own (one VM, one pod: shared by its
  containers);
- the network, UTS and IPC namespaces are the guest's own, which are the
  pod's: their entries (and ``hostname``, which needs a UTS namespace of the
  container's own) are dropped, so containers join the guest's;
- the guest is cgroup v2 only: containers get a cgroup namespace;
- PID namespace paths (``/proc/PID/ns/pid`` of the infra or target
  container) already name guest PIDs, because the runtime reports guest PIDs;
- OCI hooks are host programs: dropped (the runtime refuses them before it
  gets here);
- device nodes are the guest's: a privileged container's copy of the host's
  /dev gives way to the guest's own (:attr:`GuestSpec.all_guest_devices`),
  and the agent checks that the guest has each requested device.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["GuestSpec", "HostBind", "guest_spec", "propagation_of"]

#: Namespaces a pod VM's containers share with the guest (= the pod).
SHARED_WITH_GUEST = ("network", "uts", "ipc")


@dataclass(frozen=True, slots=True)
class HostBind:
    """A host path to bind at ``relative`` under the container's directory in the share.

    ``propagation`` is what the mount asked for: "slave" (rslave: host mounts
    made later under ``source`` reach the container) or "private" (they never do).
    """

    source: str
    relative: str
    propagation: str = "private"


def propagation_of(mount: Mapping[str, Any]) -> str:
    """The propagation a bind mount's options ask for: "shared", "slave" or "private"."""
    options = set(mount.get("options") or [])
    for kind in ("shared", "slave"):
        if kind in options or f"r{kind}" in options:
            return kind
    return "private"


@dataclass(frozen=True, slots=True)
class GuestSpec:
    spec: dict[str, Any]
    binds: tuple[HostBind, ...]
    #: The container gets every device node of the guest (privileged).
    all_guest_devices: bool = False


def _device_key(entry: Mapping[str, Any]) -> tuple[Any, ...]:
    return (entry.get("path"), entry.get("type"), entry.get("major"), entry.get("minor"))


def _is_bind(mount: Mapping[str, Any]) -> bool:
    options = mount.get("options") or []
    return mount.get("type") == "bind" or "bind" in options or "rbind" in options


def guest_spec(
    oci_spec: Mapping[str, Any],
    host_dir_in_guest: str,
    shm_sources: tuple[str, ...] = (),
    host_nodes: Sequence[Mapping[str, Any]] | None = None,
) -> GuestSpec:
    """The guest's config.json and the binds the host must make first.

    :param host_dir_in_guest: where the container's directory of the share
        appears in the guest (``GUEST_SHARE/ctr/ID``); the rootfs goes to
        ``rootfs`` under it, bind number N to ``mounts/N``.
    :param shm_sources: host paths that mean "the pod's /dev/shm".
    :param host_nodes: for a privileged container given the node's devices,
        the host's /dev as core listed it: those entries are dropped, and the
        guest's own take their place.
    """
    spec = copy.deepcopy(dict(oci_spec))
    root = dict(spec.get("root") or {})
    root["path"] = f"{host_dir_in_guest}/rootfs"
    spec["root"] = root
    binds: list[HostBind] = []
    mounts = []
    for mount in spec.get("mounts") or []:
        mount = dict(mount)
        source = str(mount.get("source", ""))
        if _is_bind(mount) and source.startswith("/"):
            if source in shm_sources or mount.get("destination") == "/dev/shm":
                mount["source"] = "/dev/shm"
            else:
                relative = f"mounts/{len(binds)}"
                binds.append(HostBind(source, relative, propagation_of(mount)))
                mount["source"] = f"{host_dir_in_guest}/{relative}"
        mounts.append(mount)
    spec["mounts"] = mounts
    linux = dict(spec.get("linux") or {})
    namespaces = [
        dict(ns) for ns in linux.get("namespaces") or [] if ns.get("type") not in SHARED_WITH_GUEST
    ]
    if not any(ns.get("type") == "cgroup" for ns in namespaces):
        # The guest is cgroup v2 only (whatever the host is): give the container
        # its own view of it, as runc pods get on a cgroup v2 host.
        namespaces.append({"type": "cgroup"})
    linux["namespaces"] = namespaces
    if host_nodes is not None:
        copies = {_device_key(entry) for entry in host_nodes}
        devices = [d for d in linux.get("devices") or [] if _device_key(d) not in copies]
        if devices:
            linux["devices"] = devices
        else:
            linux.pop("devices", None)
    spec["linux"] = linux
    spec.pop("hostname", None)
    spec.pop("hooks", None)
    return GuestSpec(spec, tuple(binds), all_guest_devices=host_nodes is not None)
