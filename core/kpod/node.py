"""crio's pods and containers as kpod sees them, and how kpod changes them.

Reading: the records under ``state_dir`` (each one replaced by an atomic
rename, so read whole without a lock), the store (under its own lock files)
and, for what happened since crio last looked (an exit while crio was down,
a paused container), the runtime plugin of each container's handler, loaded
through ``crio.plugins`` and restored from its on-disk state exactly as a
restarting crio restores it.

Changing a record (``start``, ``stop``, ``rm``) goes through
:func:`changer`: while a crio runs it holds ``STATE_DIR/owner.lock`` and
kpod sends it the CRI call (StartContainer, StopContainer, RemoveContainer)
over its socket, so crio's memory and disk change together; while none
runs, kpod takes that lock itself (a crio starting meanwhile waits for it)
and runs crio's own handlers in-process on the records, the store and the
runtime, so a crio started later reads the change back from disk.
Signals, pause and exec never change a record: they go straight to the
runtime (:class:`crio.oci.runtime.ProcessControl`), and crio sees their
effects the way it sees any exit.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from crio.errors import (
    CrioError,
    InvalidRequestError,
    NotFoundError,
    UnavailableError,
    UnsupportedError,
)

if TYPE_CHECKING:
    from crio.kpod.common import Context
    from crio.oci.runtime import (
        ContainerState,
        ContainerStats,
        ProcessControl,
        Runtime,
        SandboxStats,
    )
    from crio.state.records import ContainerRecord, SandboxRecord
    from crio.state.store import StateStore

__all__ = ["Changer", "CrioView", "Node", "changer"]

log = logging.getLogger("crio.kpod")


def _cri_states() -> dict[int, Any]:
    from crio.oci.runtime import State

    # CRI's ContainerState numbers (api.proto): CREATED 0, RUNNING 1, EXITED 2, UNKNOWN 3.
    return {0: State.CREATED, 1: State.RUNNING, 2: State.STOPPED, 3: State.UNKNOWN}


class Node:
    """The records, the store and the runtimes of one crio configuration, opened lazily."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._state: StateStore | None = None
        self._runtimes: dict[str, Runtime] = {}
        self._live: dict[str, ContainerState] = {}
        self._pods_restored: set[str] = set()
        self._crio: CrioView | None = None

    @property
    def state_dir(self) -> Path:
        return Path(self.ctx.config().crio.state_dir)

    async def state(self) -> StateStore:
        """crio's records, read-only (re-read from disk on each kpod invocation)."""
        if self._state is None:
            from crio.state.store import StateStore

            self._state = StateStore(self.state_dir)
            for problem in await self._state.open(readonly=True):
                log.debug("%s", problem)
        return self._state

    # -- finding objects -------------------------------------------------------

    async def container(self, wanted: str) -> ContainerRecord:
        """The container ``wanted`` names: its id, id prefix, name (``k8s_...``) or CRI name.

        :raises NotFoundError: Docker's "No such container" wording.
        """
        state = await self.state()
        found = _match(
            wanted,
            [(c.container_id, (self.display_name(c), c.name)) for c in state.containers()],
            "container",
        )
        return state.container(found)

    async def pod(self, wanted: str) -> SandboxRecord:
        """The pod sandbox ``wanted`` names: its id, id prefix or name."""
        state = await self.state()
        found = _match(
            wanted, [(p.pod_sandbox_id, (p.name, p.name_key)) for p in state.sandboxes()], "pod"
        )
        return state.sandbox(found)

    def display_name(self, ctr: ContainerRecord) -> str:
        """``k8s_NAME_POD_NAMESPACE_UID_ATTEMPT``, the name crio reserved for the container."""
        from crio.state.records import container_name_key

        assert self._state is not None
        try:
            pod = self._state.sandbox(ctr.pod_sandbox_id)
            return container_name_key(ctr.name, ctr.attempt, pod)
        except NotFoundError:
            return f"k8s_{ctr.name}_{ctr.attempt}"

    # -- runtimes ----------------------------------------------------------------

    async def runtime(self, handler: str) -> Runtime:
        """The runtime of ``handler``, built by its plugin and started (no container yet)."""
        runtime = self._runtimes.get(handler)
        if runtime is None:
            config = self.ctx.config()
            table = config.crio.runtime.runtimes.get(handler)
            if table is None:
                raise UnavailableError(f"runtime handler {handler!r} is not configured")
            plugins = self.ctx.plugins()
            runtime = plugins.runtime(handler, table, config)
            await runtime.start()
            self._runtimes[handler] = runtime
        return runtime

    async def observable(self, ctr: ContainerRecord) -> bool:
        """Whether kpod may restore ``ctr``'s runtime in its own process now.

        A :class:`ProcessControl` runtime (runc, crun) is watched through files and
        ``/proc``, which any number of processes may read. Another runtime may hold
        one connection per object (a pod VM's agent answers crio's alone), so while
        a crio serves, kpod asks that crio over CRI instead of restoring it.
        """
        from crio.oci.runtime import ProcessControl

        runtime = await self.runtime(ctr.runtime_handler)
        return isinstance(runtime, ProcessControl) or not self.crio_serves()

    def crio_serves(self) -> bool:
        """Whether a crio holds the records now (see :mod:`crio.state.owner`)."""
        from crio.state.owner import StateOwner

        return StateOwner.held(self.state_dir) and StateOwner.holder(self.state_dir).startswith(
            "crio "
        )

    async def crio(self) -> CrioView:
        """The running crio's CRI, for what kpod cannot observe itself."""
        if self._crio is None:
            self._crio = await CrioView.connect(self.ctx.config().crio.api.listen)
        return self._crio

    async def stats(self, ctr: ContainerRecord) -> tuple[ContainerStats, SandboxStats | None]:
        """The container's stats and its pod's (None where the runtime cannot tell)."""
        await self.live(ctr)
        if not await self.observable(ctr):
            view = await self.crio()
            return await view.container_stats(ctr.container_id), await view.sandbox_stats(
                ctr.pod_sandbox_id
            )
        runtime = await self.runtime(ctr.runtime_handler)
        stats = await runtime.container_stats(ctr.container_id)
        try:
            pod = await runtime.sandbox_stats(ctr.pod_sandbox_id)
        except CrioError:
            pod = None
        return stats, pod

    async def live(self, ctr: ContainerRecord) -> ContainerState:
        """What the runtime says of ``ctr`` now (restored from its state, as crio restores;
        asked of the running crio where kpod cannot observe the runtime itself)."""
        state = self._live.get(ctr.container_id)
        if state is None and not await self.observable(ctr):
            state = await (await self.crio()).container_state(ctr.container_id)
            self._live[ctr.container_id] = state
        if state is None:
            from crio.server._restore import container_spec, sandbox_spec

            runtime = await self.runtime(ctr.runtime_handler)
            if ctr.pod_sandbox_id not in self._pods_restored:
                self._pods_restored.add(ctr.pod_sandbox_id)
                pods = await self.state()
                try:
                    pod = pods.sandbox(ctr.pod_sandbox_id)
                    await runtime.restore_sandbox(sandbox_spec(pod))
                except CrioError as exc:
                    log.debug("pod %s: %s", ctr.pod_sandbox_id, exc)
            state = await runtime.restore_container(container_spec(ctr))
            self._live[ctr.container_id] = state
        return state

    async def control(self, ctr: ContainerRecord) -> ProcessControl:
        """The container's runtime as a :class:`ProcessControl`, restored with ``ctr``.

        :raises UnsupportedError: the handler's runtime cannot do it.
        """
        from crio.oci.runtime import ProcessControl

        await self.live(ctr)
        runtime = await self.runtime(ctr.runtime_handler)
        if not isinstance(runtime, ProcessControl):
            raise UnsupportedError(
                f"container {ctr.container_id}: runtime handler {ctr.runtime_handler} "
                "cannot signal, pause or exec with settings"
            )
        return runtime

    async def close(self) -> None:
        if self._crio is not None:
            await self._crio.close()
            self._crio = None
        for runtime in self._runtimes.values():
            try:
                await runtime.close()
            except CrioError as exc:
                log.debug("closing a runtime: %s", exc)
        self._runtimes.clear()


def _match(wanted: str, items: list[tuple[str, tuple[str, ...]]], what: str) -> str:
    if not wanted:
        raise InvalidRequestError(f"{what} name or id is empty")
    for ident, _ in items:
        if ident == wanted:
            return ident
    by_name = [ident for ident, names in items if wanted in names]
    if len(by_name) == 1:
        return by_name[0]
    prefixed = [ident for ident, _ in items if ident.startswith(wanted)]
    if len(by_name) > 1 or (not by_name and len(prefixed) > 1):
        raise InvalidRequestError(f"{what} {wanted!r} is ambiguous: use its id")
    if prefixed:
        return prefixed[0]
    raise NotFoundError(f"No such {what}: {wanted}")


# -- changing records ------------------------------------------------------------


class Changer(Protocol):
    """Who changes crio's records for kpod: the running crio, or kpod in-process."""

    #: "crio" (over its socket) or "kpod" (crio not running).
    via: str

    async def start_container(self, container_id: str) -> None: ...

    async def stop_container(self, container_id: str, timeout: int) -> None: ...

    async def remove_container(self, container_id: str) -> None: ...

    async def close(self) -> None: ...


async def changer(node: Node) -> Changer:
    """The running crio's CRI, or kpod itself holding the owner lock (see the module doc)."""
    from crio.state.owner import StateOwner

    config = node.ctx.config()
    owner = StateOwner.try_take(node.state_dir, "kpod")
    if owner is not None:
        return _Local(node, owner)
    holder = StateOwner.holder(node.state_dir)
    if holder.startswith("crio "):
        return await CrioView.connect(config.crio.api.listen)
    # Another kpod or crio check --repair: wait for it to finish.
    owner = await StateOwner.take(node.state_dir, "kpod")
    return _Local(node, owner)


class CrioView:
    """CRI calls to the running crio over its socket: the changes kpod asks of it, and
    what kpod reads from it where it cannot observe a runtime itself."""

    via = "crio"

    def __init__(self, channel: Any, stub: Any) -> None:
        self._channel = channel
        self._stub = stub

    @classmethod
    async def connect(cls, socket: str) -> CrioView:
        import grpc

        from crio.api import api_pb2_grpc

        channel = grpc.aio.insecure_channel(f"unix://{socket}")
        try:
            await asyncio.wait_for(channel.channel_ready(), 30)
        except TimeoutError:
            await channel.close()
            raise UnavailableError(
                f"crio holds its state directory but does not answer on {socket}"
            ) from None
        return cls(channel, api_pb2_grpc.RuntimeServiceStub(channel))

    async def _call(self, method: str, request: Any) -> Any:
        import grpc

        try:
            return await getattr(self._stub, method)(request, timeout=600)
        except grpc.aio.AioRpcError as exc:
            raise _error_of(exc.code(), exc.details() or "") from None

    async def container_state(self, container_id: str) -> ContainerState:
        """ContainerStatus, as a runtime would report it (crio keeps no paused state:
        only ProcessControl runtimes pause, and kpod observes those itself)."""
        import json

        from crio.api import api_pb2 as api
        from crio.oci.runtime import ContainerState, State

        reply = await self._call(
            "ContainerStatus", api.ContainerStatusRequest(container_id=container_id, verbose=True)
        )
        status = reply.status
        try:
            pid = int(json.loads(reply.info.get("info", "{}")).get("pid") or 0)
        except (ValueError, TypeError, AttributeError):
            pid = 0
        return ContainerState(
            state=_cri_states().get(status.state, State.UNKNOWN),
            pid=pid,
            started_at=status.started_at,
            finished_at=status.finished_at,
            exit_code=status.exit_code,
            reason=status.reason,
            message=status.message,
        )

    async def container_stats(self, container_id: str) -> ContainerStats:
        from crio.api import api_pb2 as api

        reply = await self._call(
            "ContainerStats", api.ContainerStatsRequest(container_id=container_id)
        )
        return _usage(reply.stats.cpu, reply.stats.memory, reply.stats.cpu.timestamp)

    async def sandbox_stats(self, pod_sandbox_id: str) -> SandboxStats | None:
        from crio.api import api_pb2 as api
        from crio.oci.runtime import InterfaceStats, SandboxStats

        try:
            reply = await self._call(
                "PodSandboxStats", api.PodSandboxStatsRequest(pod_sandbox_id=pod_sandbox_id)
            )
        except CrioError:
            return None
        linux = reply.stats.linux
        interfaces = [
            InterfaceStats(
                name=i.name,
                rx_bytes=i.rx_bytes.value,
                rx_errors=i.rx_errors.value,
                tx_bytes=i.tx_bytes.value,
                tx_errors=i.tx_errors.value,
            )
            for i in linux.network.interfaces
        ]
        usage = _usage(linux.cpu, linux.memory, linux.cpu.timestamp)
        return SandboxStats(usage=usage, interfaces=interfaces)

    async def start_container(self, container_id: str) -> None:
        from crio.api import api_pb2 as api

        await self._call("StartContainer", api.StartContainerRequest(container_id=container_id))

    async def stop_container(self, container_id: str, timeout: int) -> None:
        from crio.api import api_pb2 as api

        await self._call(
            "StopContainer", api.StopContainerRequest(container_id=container_id, timeout=timeout)
        )

    async def remove_container(self, container_id: str) -> None:
        from crio.api import api_pb2 as api

        await self._call("RemoveContainer", api.RemoveContainerRequest(container_id=container_id))

    async def close(self) -> None:
        await self._channel.close()


def _usage(cpu: Any, memory: Any, timestamp: int) -> ContainerStats:
    """CRI's CpuUsage and MemoryUsage messages as the runtime contract's stats."""
    from crio.oci.runtime import ContainerStats

    return ContainerStats(
        timestamp=timestamp,
        cpu_usage_core_nanoseconds=cpu.usage_core_nano_seconds.value,
        memory_working_set_bytes=memory.working_set_bytes.value,
        memory_usage_bytes=memory.usage_bytes.value,
        memory_rss_bytes=memory.rss_bytes.value,
        page_faults=memory.page_faults.value,
        major_page_faults=memory.major_page_faults.value,
    )


def _error_of(code: Any, details: str) -> CrioError:
    """crio's error class back from a status code (the inverse of crio.server.status)."""
    from crio import errors
    from crio.server.status import _CODES

    for cls, known in _CODES:
        if known == code and cls is not errors.ConfigError:
            return cls(details)
    return errors.CrioError(f"{code.name}: {details}")


class _Local:
    """crio's own handlers run by kpod on the records while no crio runs."""

    via = "kpod"

    def __init__(self, node: Node, owner: Any) -> None:
        self.node = node
        self._owner = owner
        self._deps: Any = None

    async def _ready(self, container_id: str) -> Any:
        from crio.server.deps import Deps
        from crio.state.store import StateStore

        if self._deps is None:
            state = StateStore(self.node.state_dir)
            await state.open()
            ctx = self.node.ctx
            self._deps = Deps(
                config=ctx.config(),
                plugins=ctx.plugins(),
                runtimes={},
                network=None,
                store=await ctx.store(),
                state=state,
            )
        ctr = self._deps.state.container(container_id)
        if ctr.container_id in {i.object_id for i in self._deps.state.pending()}:
            raise UnavailableError(
                f"container {ctr.container_id} has an unfinished operation from a crio that "
                "stopped; start crio (or run crio check --repair) first"
            )
        runtime = await self.node.runtime(ctr.runtime_handler)
        await self.node.live(ctr)
        self._deps = dataclasses.replace(
            self._deps, runtimes={**self._deps.runtimes, ctr.runtime_handler: runtime}
        )
        return self._deps

    async def start_container(self, container_id: str) -> None:
        from crio.api import api_pb2 as api
        from crio.server.container_start import start_container

        deps = await self._ready(container_id)
        await start_container(deps, api.StartContainerRequest(container_id=container_id))

    async def stop_container(self, container_id: str, timeout: int) -> None:
        from crio.api import api_pb2 as api
        from crio.server.container_stop import stop_container

        deps = await self._ready(container_id)
        await stop_container(
            deps, api.StopContainerRequest(container_id=container_id, timeout=timeout)
        )

    async def remove_container(self, container_id: str) -> None:
        from crio.api import api_pb2 as api
        from crio.server.container_remove import remove_container

        deps = await self._ready(container_id)
        await remove_container(deps, api.RemoveContainerRequest(container_id=container_id))

    async def close(self) -> None:
        if self._deps is not None:
            await self._deps.tasks.close()
        self._owner.release()
