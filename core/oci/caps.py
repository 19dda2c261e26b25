"""Linux capabilities: names, and the CRI add/drop rules."""

from __future__ import annotations

from collections.abc import Iterable

from crio.errors import InvalidRequestError

__all__ = [
    "ALL_CAPABILITIES",
    "capabilities_from_mask",
    "capability_name",
    "resolve_capabilities",
]

#: Every capability the kernel knows, in bit order (CAP_CHOWN = 0).
ALL_CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)
_KNOWN = frozenset(ALL_CAPABILITIES)


def capability_name(name: str, field_name: str) -> str:
    """``"chown"``, ``"CHOWN"`` or ``"CAP_CHOWN"`` as ``"CAP_CHOWN"``.

    :raises InvalidRequestError: naming ``field_name`` for an unknown capability.
    """
    upper = name.strip().upper()
    full = upper if upper.startswith("CAP_") else f"CAP_{upper}"
    if full not in _KNOWN:
        raise InvalidRequestError(f"{field_name}: unknown capability {name!r}")
    return full


def capabilities_from_mask(mask: int) -> tuple[str, ...]:
    """The capabilities of a bit mask such as /proc/self/status's CapBnd."""
    return tuple(name for bit, name in enumerate(ALL_CAPABILITIES) if mask >> bit & 1)


def resolve_capabilities(
    defaults: Iterable[str],
    add: Iterable[str],
    drop: Iterable[str],
    field_prefix: str,
    available: Iterable[str] = ALL_CAPABILITIES,
) -> list[str]:
    """The capability set after CRI's rules, in bit order.

    "ALL" in ``add`` starts from every capability crio can give (``available``:
    its own bounding set), "ALL" in ``drop`` from none; the other names are
    then added and dropped one by one, so that add ALL + drop CHOWN means
    "everything but CAP_CHOWN" (kubernetes#51980).

    :raises InvalidRequestError: naming an unknown capability, or one crio
        itself lacks and so cannot give.
    """
    add = list(add)
    drop = list(drop)
    available = set(available)
    caps = {capability_name(c, "default_capabilities") for c in defaults} & available
    if any(c.strip().upper() == "ALL" for c in add):
        caps = set(available)
    if any(c.strip().upper() == "ALL" for c in drop):
        caps = set()
    for i, name in enumerate(add):
        if name.strip().upper() != "ALL":
            field_name = f"{field_prefix}.add_capabilities[{i}]"
            cap = capability_name(name, field_name)
            if cap not in available:
                raise InvalidRequestError(
                    f"{field_name}: {cap} is not available on this node (crio itself lacks it)"
                )
            caps.add(cap)
    for i, name in enumerate(drop):
        if name.strip().upper() != "ALL":
            caps.discard(capability_name(name, f"{field_prefix}.drop_capabilities[{i}]"))
    return [c for c in ALL_CAPABILITIES if c in caps]
