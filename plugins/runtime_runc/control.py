"""What runc and crun do for kpod beyond CRI: signals, the freezer, exec with settings.

:class:`RuncProcessControl` is the :class:`crio.oci.runtime.ProcessControl`
half of :class:`~crio_plugins.runtime_runc.runtime.RuncRuntime`; it uses the
runtime's container table, signalling and cgroup hierarchies.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from crio.errors import OCIRuntimeError, WrongStateError
from crio.oci.runtime import StreamIO
from crio_plugins.runtime_runc import exec_session

if TYPE_CHECKING:
    from crio_plugins.runtime_runc._container import RuncContainer
    from crio_plugins.runtime_runc.cgroups import Hierarchies

__all__ = ["RuncProcessControl"]

log = logging.getLogger("crio.runtime.runc")


class RuncProcessControl:
    """kill, pause, resume and exec with process settings (``runc pause``/``resume``)."""

    hierarchies: Hierarchies
    runtime_path: str
    runtime_root: str
    handler_name: str

    def _running(self, container_id: str) -> RuncContainer:
        raise NotImplementedError

    def _signal(self, ctr: RuncContainer, signum: int, everything: bool) -> None:
        raise NotImplementedError

    async def _run(self, *args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
        raise NotImplementedError

    def _unpaused(self, container_id: str) -> RuncContainer:
        ctr = self._running(container_id)
        if self.hierarchies.frozen(ctr.cgroups_path):
            raise WrongStateError(f"container {container_id} is paused; unpause it first")
        return ctr

    async def kill_container(self, container_id: str, signum: int) -> None:
        self._signal(self._unpaused(container_id), signum, everything=False)

    async def pause_container(self, container_id: str) -> None:
        self._unpaused(container_id)
        await self._freezer("pause", container_id)

    async def resume_container(self, container_id: str) -> None:
        ctr = self._running(container_id)
        if not self.hierarchies.frozen(ctr.cgroups_path):
            raise WrongStateError(f"container {container_id} is not paused")
        await self._freezer("resume", container_id)

    async def _freezer(self, verb: str, container_id: str) -> None:
        rc, out, err = await self._run(verb, container_id)
        if rc != 0:
            raise OCIRuntimeError(
                f"container {container_id}: {self.handler_name} {verb} failed: "
                f"{(err or out).strip() or f'exit status {rc}'}"
            )

    async def _thaw(self, ctr: RuncContainer) -> None:
        if self.hierarchies.frozen(ctr.cgroups_path):
            rc, out, err = await self._run("resume", ctr.container_id)
            if rc != 0:
                log.warning("container %s: resume failed: %s", ctr.container_id, err or out)

    async def exec_process(
        self,
        container_id: str,
        command: Sequence[str],
        io: StreamIO,
        process: Mapping[str, Any],
    ) -> int:
        ctr = self._unpaused(container_id)
        return await exec_session.exec_in_container(
            self.runtime_path,
            self.runtime_root,
            container_id,
            command,
            io,
            process={**ctr.process, **process},
        )
