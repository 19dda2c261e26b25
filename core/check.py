"""``crio check``: is the store consistent, do the records agree with it, what did crashes leave?

Without ``repair`` nothing is changed: the store and the state store are
opened read-only, and what a restart of crio would finish or release is
listed (the same findings :mod:`crio.server._reconcile` acts on at start-up).
With ``repair`` crio's start-up work is done without serving: interrupted
operations are finished, orphans released, the store repaired; then the
check runs again and what is left is reported. Repairing while a crio
serves on the configured socket is refused: the objects are its to change.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from crio.errors import WrongStateError
from crio.server._reconcile import reconcile
from crio.server._restore import restore
from crio.server.deps import Deps
from crio.state.owner import LOCK_NAME, StateOwner

if TYPE_CHECKING:
    from crio.config import Config
    from crio.daemon import Components
    from crio.plugins import Plugins
    from crio.state.store import StateStore
    from crio.storage import Store

__all__ = ["Report", "check", "record_problems", "store_problems"]

log = logging.getLogger("crio.check")


@dataclass(slots=True)
class Report:
    """What ``crio check`` found (``problems``) and, with ``--repair``, fixed (``repaired``)."""

    problems: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps({"problems": self.problems, "repaired": self.repaired}, indent=2)


def serving(path: Path) -> bool:
    """Whether a process answers on the unix socket ``path``."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT, errno.ENOTSOCK):
            return False
        raise
    finally:
        probe.close()
    return True


async def store_problems(store: Store) -> list[str]:
    """Inconsistencies of the image and layer store, found without changing it."""
    found = [
        f"store file {path} was left half-written by a crashed writer"
        for path in await asyncio.to_thread(store.unfinished_writes)
    ]
    layers = {layer.id: layer for layer in await store.layers()}
    on_disk = set(await store.driver.layers())
    for layer in layers.values():
        if layer.incomplete:
            found.append(f"store layer {layer.id} was left incomplete by a crashed writer")
        if layer.parent and layer.parent not in layers:
            found.append(f"store layer {layer.id}: its parent layer {layer.parent} is missing")
        if layer.id not in on_disk:
            found.append(f"store layer {layer.id} is recorded, but the driver does not have it")
    for layer_id in sorted(on_disk - set(layers)):
        found.append(f"driver layer {layer_id} has no record (left half-applied by a crash)")
    images = {image.id: image for image in await store.images()}
    for image in images.values():
        if image.top_layer and image.top_layer not in layers:
            found.append(f"store image {image.id}: its top layer {image.top_layer} is missing")
    for container in await store.containers():
        if container.layer and container.layer not in layers:
            found.append(f"store container {container.id}: its layer {container.layer} is missing")
        if container.image and container.image not in images:
            found.append(f"store container {container.id}: its image {container.image} is missing")
    return found


async def record_problems(state: StateStore, store: Store | None) -> list[str]:
    """Records that disagree with the store (a container whose root filesystem is gone)."""
    if store is None:
        return []
    stored = {c.id for c in await store.containers()}
    pending = {i.object_id for i in state.pending()}
    return [
        f"container {ctr.container_id} ({ctr.state.value}): its store container is gone"
        for ctr in state.containers()
        if ctr.container_id not in stored and ctr.container_id not in pending
    ]


async def check(config: Config, plugins: Plugins, repair: bool = False) -> Report:
    """Run the check (and with ``repair`` the repair, then the check again).

    :raises WrongStateError: ``repair`` while a crio serves on the configured socket.
    """
    from crio import daemon  # grpc loads only here

    listen = Path(config.crio.api.listen)
    if repair and serving(listen):
        raise WrongStateError(
            f"crio is serving on {listen}: stop it before --repair (a start of crio "
            "does the same repairs), or run crio check without --repair"
        )
    report = Report()
    if repair:
        owner = StateOwner.try_take(Path(config.crio.state_dir), "crio check")
        if owner is None:
            raise WrongStateError(
                f"{StateOwner.holder(Path(config.crio.state_dir)) or 'another process'} "
                f"holds {Path(config.crio.state_dir) / LOCK_NAME}: run --repair when it is done"
            )
        try:
            await _repair(config, plugins, report)
        finally:
            owner.release()
    parts = await daemon.start_components(config, plugins, readonly=True)
    try:
        deps = _deps(config, plugins, parts)
        assert parts.state is not None
        report.problems += await store_problems(parts.store)
        report.problems += await record_problems(parts.state, parts.store)
        report.problems += await reconcile(deps, repair=False)
    finally:
        with contextlib.suppress(Exception):
            await daemon.close_components(parts)
    return report


async def _repair(config: Config, plugins: Plugins, report: Report) -> None:
    from crio import daemon

    parts = await daemon.start_components(config, plugins)
    try:
        removed = await parts.store.repair()
        report.repaired += [f"store layer {i} (left by a crashed writer)" for i in removed]
        deps = _deps(config, plugins, parts)
        await restore(deps)
        report.repaired += await reconcile(deps, repair=True)
        await deps.tasks.close()
    finally:
        await daemon.close_components(parts)


def _deps(config: Config, plugins: Plugins, parts: Components) -> Deps:
    return Deps(
        config=config,
        plugins=plugins,
        runtimes=parts.runtimes,
        network=parts.network,
        network_error=parts.network_error,
        store=parts.store,
        state=parts.state,
    )
