"""The systemd cgroup manager: unit names, their cgroup paths, and systemd's D-Bus API.

With ``cgroup_manager = "systemd"`` every cgroup crio's pods use is a systemd
unit: the pod's slice (``kubepods-besteffort-pod123.slice``, which the
kubelet usually creates, else crio does), each container's scope
(``crio-ID.scope``, which runc or crun create from the cgroups path
``SLICE:crio:ID`` under ``--systemd-cgroup``) and each conmon's scope
(``crio-conmon-ID.scope``, in the pod's slice, made here). Units are made
with ``StartTransientUnit`` on the system bus (``org.freedesktop.systemd1``)
and stopped with ``StopUnit``; a scope goes away on its own once its
processes are gone.

A slice name encodes its parents: ``a-b-c.slice`` lives in ``a-b.slice``,
which lives in ``a.slice``, so its cgroup is ``/a.slice/a-b.slice/a-b-c.slice``
(systemd.slice(5)). jeepney speaks the D-Bus wire protocol (pure Python, no
C library): building and parsing messages by hand would be more code to test
than the few calls crio makes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from crio.errors import OCIRuntimeError

__all__ = [
    "CONMON_SCOPE_PREFIX",
    "SCOPE_PREFIX",
    "SystemdManager",
    "cgroup_path",
    "scope_name",
]

SCOPE_PREFIX = "crio"
CONMON_SCOPE_PREFIX = "crio-conmon"
_DESTINATION = "org.freedesktop.systemd1"
_PATH = "/org/freedesktop/systemd1"
_MANAGER = "org.freedesktop.systemd1.Manager"


def slice_path(name: str) -> str:
    """The cgroup path of slice ``name``: ``a-b.slice`` -> ``/a.slice/a-b.slice``."""
    stem = name.removesuffix(".slice")
    if stem in ("", "-"):
        return "/"
    parts = stem.split("-")
    return "".join("/" + "-".join(parts[: i + 1]) + ".slice" for i in range(len(parts)))


def scope_name(prefix: str, container_id: str) -> str:
    return f"{prefix}-{container_id}.scope"


def cgroup_path(cgroups_path: str) -> str:
    """A cgroupfs path for an OCI ``cgroupsPath``, in either form.

    ``SLICE:PREFIX:NAME`` (systemd) is ``slice_path(SLICE)/PREFIX-NAME.scope``;
    a slice name is its slice's path; anything else already is a path.
    """
    if cgroups_path.endswith(".slice") and "/" not in cgroups_path:
        return slice_path(cgroups_path)
    if cgroups_path.count(":") != 2 or cgroups_path.startswith("/"):
        return cgroups_path
    parent, prefix, name = cgroups_path.split(":")
    base = slice_path(parent or "system.slice")
    return f"{base.rstrip('/')}/{scope_name(prefix, name)}"


class SystemdManager:
    """The few calls of systemd's manager API crio makes, one bus connection each."""

    def __init__(self, bus: str = "SYSTEM") -> None:
        self.bus = bus

    async def _call(self, method: str, signature: str, body: tuple[Any, ...]) -> tuple[Any, ...]:
        from jeepney import DBusAddress, new_method_call
        from jeepney.io.asyncio import open_dbus_router
        from jeepney.wrappers import DBusErrorResponse, unwrap_msg

        address = DBusAddress(_PATH, bus_name=_DESTINATION, interface=_MANAGER)
        message = new_method_call(address, method, signature, body)
        try:
            async with open_dbus_router(bus=self.bus) as router:
                reply = await asyncio.wait_for(router.send_and_get_reply(message), 60)
        except (OSError, TimeoutError) as exc:
            raise OCIRuntimeError(f"systemd D-Bus {method}: {exc}") from exc
        try:
            return tuple(unwrap_msg(reply))
        except DBusErrorResponse as exc:
            raise SystemdError(exc.name, f"systemd {method}: {exc.name}: {exc.data}") from None

    async def start_transient_unit(self, name: str, properties: Sequence[tuple[str, Any]]) -> None:
        """Create unit ``name`` (``properties``: ``(NAME, (SIGNATURE, VALUE))``)."""
        await self._call(
            "StartTransientUnit", "ssa(sv)a(sa(sv))", (name, "fail", list(properties), [])
        )

    async def stop_unit(self, name: str) -> None:
        """Stop ``name``; a unit that is not loaded counts as stopped."""
        try:
            await self._call("StopUnit", "ss", (name, "fail"))
        except SystemdError as exc:
            if exc.name != "org.freedesktop.systemd1.NoSuchUnit":
                raise

    async def unit_loaded(self, name: str) -> bool:
        try:
            await self._call("GetUnit", "s", (name,))
        except SystemdError as exc:
            if exc.name == "org.freedesktop.systemd1.NoSuchUnit":
                return False
            raise
        return True

    async def ensure_slice(self, name: str, description: str) -> bool:
        """Start slice ``name`` unless it is loaded; True when this call made it."""
        if name in ("-.slice",) or await self.unit_loaded(name):
            return False
        try:
            await self.start_transient_unit(name, [("Description", ("s", description))])
        except SystemdError as exc:
            if exc.name == "org.freedesktop.systemd1.UnitExists":
                return False  # made meanwhile, by the kubelet or another pod
            raise
        return True

    async def move_to_scope(self, name: str, slice_name: str, pid: int, description: str) -> None:
        """Put process ``pid`` in a new scope ``name`` in ``slice_name``; wait until it is there."""
        await self.start_transient_unit(
            name,
            [
                ("Description", ("s", description)),
                ("Slice", ("s", slice_name)),
                ("PIDs", ("au", [pid])),
                ("Delegate", ("b", True)),
            ],
        )
        target = f"/{name}"
        for _ in range(2000):
            try:
                with open(f"/proc/{pid}/cgroup") as handle:
                    if target in handle.read():
                        return
            except FileNotFoundError:
                return  # it ended already: nothing left to move
            await asyncio.sleep(0.005)
        raise OCIRuntimeError(f"systemd did not move process {pid} into {name}")


class SystemdError(OCIRuntimeError):
    """An error reply from systemd; ``name`` is the D-Bus error name."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name
