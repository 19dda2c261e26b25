"""Which sysctls a pod may set: only those of a namespace the pod has to itself."""

from __future__ import annotations

from collections.abc import Mapping

from crio.errors import InvalidRequestError

__all__ = ["sysctl_namespace", "validate_sysctls"]

_IPC_KEYS = {
    "kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
    "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced",
}  # fmt: skip
_UTS_KEYS = {"kernel.hostname", "kernel.domainname"}


def sysctl_namespace(key: str) -> str | None:
    """ "network", "ipc" or "uts" for a namespaced sysctl; None for a node-wide one."""
    if key.startswith("net."):
        return "network"
    if key in _IPC_KEYS or key.startswith("fs.mqueue."):
        return "ipc"
    if key in _UTS_KEYS:
        return "uts"
    return None


def validate_sysctls(sysctls: Mapping[str, str], *, host_network: bool, host_ipc: bool) -> None:
    """:raises InvalidRequestError: naming a sysctl that would change the node.

    Kubernetes decides which sysctls are safe; the runtime refuses any that is
    not namespaced, or whose namespace the pod shares with the host.
    """
    for key, value in sysctls.items():
        field_name = f"linux.sysctls[{key}]"
        if not key or "/" in key or ".." in key or key.startswith("."):
            raise InvalidRequestError(f"{field_name}: not a sysctl name")
        if "\n" in value:
            raise InvalidRequestError(f"{field_name}: value contains a newline")
        kind = sysctl_namespace(key)
        if kind is None:
            raise InvalidRequestError(
                f"{field_name}: not a namespaced sysctl; it would change the node"
            )
        if kind in ("network", "uts") and host_network:
            raise InvalidRequestError(f"{field_name}: the pod uses the host's network namespace")
        if kind == "ipc" and host_ipc:
            raise InvalidRequestError(f"{field_name}: the pod uses the host's IPC namespace")
