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
    from crio.oci.runtime import ContainerState, ProcessControl, Runtime
    from crio.state.records import ContainerRecord, SandboxRecord
    from crio.state.store import StateStore

__all__ = ["Changer", "Node", "changer"]

log = logging.getLogger("crio.kpod")


class Node:
    """The records, the store and the runtimes of one crio configuration, opened lazily."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._state: StateStore | None = None
        self._runtimes: dict[str, Runtime] = {}
        self._live: dict[str, ContainerState] = {}
        self._pods_restored: set[str] = set()

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

    async def live(self, ctr: ContainerRecord) -> ContainerState:
        """What the runtime says of ``ctr`` now (restored from its state, as crio restores)."""
        state = self._live.get(ctr.container_id)
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
        return await _Remote.connect(config.crio.api.listen)
    # Another kpod or crio check --repair: wait for it to finish.
    owner = await StateOwner.take(node.state_dir, "kpod")
    return _Local(node, owner)


class _Remote:
    """CRI calls to the running crio over its socket."""

    via = "crio"

    def __init__(self, channel: Any, stub: Any) -> None:
        self._channel = channel
        self._stub = stub

    @classmethod
    async def connect(cls, socket: str) -> _Remote:
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

    async def _call(self, method: str, request: Any) -> None:
        import grpc

        try:
            await getattr(self._stub, method)(request, timeout=600)
        except grpc.aio.AioRpcError as exc:
            raise _error_of(exc.code(), exc.details() or "") from None

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
