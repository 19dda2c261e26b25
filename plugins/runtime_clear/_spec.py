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
- host devices do not exist in the guest: dropped (so are OCI hooks, which the
  runtime refuses before it gets here: they are host programs).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["GuestSpec", "HostBind", "guest_spec"]

#: Namespaces a pod VM's containers share with the guest (= the pod).
SHARED_WITH_GUEST = ("network", "uts", "ipc")


@dataclass(frozen=True, slots=True)
class HostBind:
    """A host path to bind at ``relative`` under the container's directory in the share."""

    source: str
    relative: str


@dataclass(frozen=True, slots=True)
class GuestSpec:
    spec: dict[str, Any]
    binds: tuple[HostBind, ...]


def _is_bind(mount: Mapping[str, Any]) -> bool:
    options = mount.get("options") or []
    return mount.get("type") == "bind" or "bind" in options or "rbind" in options


def guest_spec(
    oci_spec: Mapping[str, Any], host_dir_in_guest: str, shm_sources: tuple[str, ...] = ()
) -> GuestSpec:
    """The guest's config.json and the binds the host must make first.

    :param host_dir_in_guest: where the container's directory of the share
        appears in the guest (``GUEST_SHARE/ctr/ID``); the rootfs goes to
        ``rootfs`` under it, bind number N to ``mounts/N``.
    :param shm_sources: host paths that mean "the pod's /dev/shm".
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
                binds.append(HostBind(source, relative))
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
    linux.pop("devices", None)
    spec["linux"] = linux
    spec.pop("hostname", None)
    spec.pop("hooks", None)
    return GuestSpec(spec, tuple(binds))
