"""Start-up reconciliation: finish what a crash interrupted, release what no record names.

Runs after :func:`crio.server._restore.restore`, before the socket is served
(and from ``crio check``, with ``repair=False`` to only report):

1. Interrupted operations (intent records, :mod:`crio.state.intents`): a
   RunPodSandbox or CreateContainer that never reached its record is rolled
   back, a RemovePodSandbox or RemoveContainer is rolled forward.
2. Container records whose pod has no record (the infra container of a pod
   whose RunPodSandbox was cut short) are removed.
3. What is left of objects no record names is released: store containers
   crio made, CNI attachments, the runtimes' processes, state, exit files and
   pinned namespaces, and pod run directories (mounts below them first).

Every finding is one line naming the object; with ``repair`` it is logged as
done. Acknowledged pods and containers are never touched.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from crio.errors import CrioError, NotFoundError
from crio.oci.runtime import GarbageCollector
from crio.server._common import publish, state_of
from crio.server._containers import delete_layer, made_by_this_crio
from crio.server._lifecycle import remove_container_locked, stop_container_locked
from crio.server._restore import sandbox_spec
from crio.server.sandbox_remove import remove_pod_locked
from crio.server.sandbox_run import HANDLER_FILE, pod_network, sandbox_run_dir
from crio.state.hub import EventKind
from crio.state.intents import Intent, Operation
from crio.state.records import ContainerRecord, ContainerState, SandboxRecord
from crio.storage.mount import unmount

if TYPE_CHECKING:
    from crio.server.deps import Deps

__all__ = ["reconcile"]

log = logging.getLogger("crio.server")

#: crio's pod ids (``new_id``): the names of its pod run directories.
_POD_ID = re.compile(r"[0-9a-f]{64}")


async def reconcile(deps: Deps, repair: bool = True) -> list[str]:
    """Find (and with ``repair`` fix) what a crash left; one line per finding."""
    state = state_of(deps)
    found, unmade_pods = await _intents(deps, repair)
    found += await _orphan_records(deps, repair)
    pods = {p.pod_sandbox_id for p in state.sandboxes()}
    ctrs = {c.container_id for c in state.containers()}
    if not repair:
        # Not rolled back in a dry run: reported above, and not again below.
        for intent in state.pending():
            (pods if intent.sandbox is not None else ctrs).add(intent.object_id)
    # A container whose create was cut short is not restored: its runtime's garbage
    # collection kills its monitor and deletes it by id, whatever stage it reached.
    for name, runtime in deps.runtimes.items():
        if not isinstance(runtime, GarbageCollector):
            continue
        try:
            found += await runtime.collect_garbage(pods, ctrs, dry_run=not repair)
        except CrioError as exc:
            log.error("runtime handler %s: collecting garbage failed: %s", name, exc)
    for intent in unmade_pods:
        # After the runtime's garbage collection: the pod's cgroups are free by now.
        try:
            await _release_unrecorded_pod(deps, intent)
        except CrioError as exc:
            log.error("%s: rolling back RunPodSandbox failed: %s", intent.subject, exc)
            continue
        state.end(intent.object_id)
    found += await _store_containers(deps, ctrs, repair)
    if deps.network is not None:
        try:
            found += await deps.network.gc(pods, dry_run=not repair)
        except CrioError as exc:
            log.error("cleaning up the network of lost pods failed: %s", exc)
    found += await _run_dirs(deps, pods, repair)
    return found


# ---------------------------------------------------------------------------
# interrupted operations


async def _intents(deps: Deps, repair: bool) -> tuple[list[str], list[Intent]]:
    """Report each interrupted operation; with ``repair`` finish removals, undo creates.

    :returns: the findings, and the RunPodSandbox intents whose pods are released
        once the runtimes collected their garbage (see :func:`reconcile`).
    """
    state = state_of(deps)
    found: list[str] = []
    unmade_pods: list[Intent] = []
    # Containers before pods: a pod is rolled back after the containers made in it.
    for intent in sorted(state.pending(), key=lambda i: i.sandbox is not None):
        exists = _recorded(deps, intent)
        if exists == intent.operation.creates:
            if repair:
                state.end(intent.object_id)  # it finished; only the intent was left
            continue
        verb = "rolled back" if intent.operation.creates else "finished"
        line = f"{intent.subject}: {intent.operation.value} was interrupted by a crash"
        found.append(f"{line}; {verb}" if repair else f"{line}; to be {verb}")
        if not repair:
            continue
        log.warning("%s", found[-1])
        try:
            if intent.operation is Operation.RUN_POD_SANDBOX:
                await _unmake_pod_first(deps, intent)
                unmade_pods.append(intent)
                continue
            await _finish(deps, intent)
        except CrioError as exc:
            log.error("%s: finishing the interrupted %s failed: %s",
                      intent.subject, intent.operation.value, exc)  # fmt: skip
            continue
        state.end(intent.object_id)
    return found, unmade_pods


def _recorded(deps: Deps, intent: Intent) -> bool:
    state = state_of(deps)
    try:
        if intent.sandbox is not None:
            state.sandbox(intent.object_id)
        else:
            state.container(intent.object_id)
    except NotFoundError:
        return False
    return True


async def _finish(deps: Deps, intent: Intent) -> None:
    state = state_of(deps)
    if intent.operation is Operation.CREATE_CONTAINER:
        # Nothing to do now: with no record, its id is unknown, so the runtimes'
        # garbage collection kills its monitor and deletes it whatever stage it
        # reached, and then its store container goes with the store's orphans.
        return
    if intent.operation is Operation.REMOVE_CONTAINER:
        await _remove_record(deps, state.container(intent.object_id))
    else:
        async with state.pod_lock(intent.object_id).exclusive():
            await remove_pod_locked(deps, state.sandbox(intent.object_id))


async def _unmake_pod_first(deps: Deps, intent: Intent) -> None:
    """The part of a RunPodSandbox roll-back that needs the pod's namespaces still pinned:
    its recorded containers (the infra container) and its network."""
    pod = intent.sandbox
    assert pod is not None
    for ctr in state_of(deps).containers(pod.pod_sandbox_id):
        await _remove_record(deps, ctr)
    runtime = deps.runtimes.get(pod.runtime_handler)
    if runtime is not None:
        pod = dataclasses.replace(pod, namespaces=await runtime.restore_sandbox(sandbox_spec(pod)))
    if deps.network is not None and not pod.host_network:
        await deps.network.teardown(pod_network(pod))


async def _release_unrecorded_pod(deps: Deps, intent: Intent) -> None:
    """The rest of a RunPodSandbox roll-back: what the runtime holds, the run dir."""
    pod = intent.sandbox
    assert pod is not None
    runtime = deps.runtimes.get(pod.runtime_handler)
    if runtime is not None:
        await runtime.stop_sandbox(pod.pod_sandbox_id)
        await runtime.remove_sandbox(pod.pod_sandbox_id)
    await asyncio.to_thread(_remove_tree, Path(pod.run_dir))


async def _remove_record(deps: Deps, ctr: ContainerRecord) -> None:
    """Stop and remove a recorded container, record last (as RemoveContainer does)."""
    state = state_of(deps)
    async with state.lock(ctr.container_id):
        try:
            ctr = state.container(ctr.container_id)
        except NotFoundError:
            return
        if ctr.state is not ContainerState.EXITED:
            ctr = await stop_container_locked(deps, ctr, 0) or state.container(ctr.container_id)
        await remove_container_locked(deps, ctr)
    publish(deps, EventKind.DELETED, ctr)


# ---------------------------------------------------------------------------
# what no record names


async def _orphan_records(deps: Deps, repair: bool) -> list[str]:
    state = state_of(deps)
    pods = {p.pod_sandbox_id for p in state.sandboxes()}
    found = []
    for ctr in state.containers():
        if ctr.pod_sandbox_id in pods:
            continue
        verb = "removed" if repair else "to be removed"
        found.append(
            f"container {ctr.container_id}: its pod sandbox {ctr.pod_sandbox_id} has no "
            f"record (crio was killed while making it); {verb}"
        )
        if repair:
            try:
                await _remove_record(deps, ctr)
            except CrioError as exc:
                log.error("container %s: removing it failed: %s", ctr.container_id, exc)
                continue
            log.warning("%s", found[-1])
    return found


async def _store_containers(deps: Deps, known: set[str], repair: bool) -> list[str]:
    """Store containers this crio made (their metadata names its state directory) that no
    record names; the store is shared with podman and others."""
    store = deps.store
    if store is None:
        return []
    state_dir = deps.config.crio.state_dir
    found = []
    for container in await store.containers():
        if container.id in known or not made_by_this_crio(container.metadata, state_dir):
            continue
        names = ", ".join(container.names)
        found.append(f"store container {container.id} ({names}): no container record names it "
                     "(left by a crash)")  # fmt: skip
        if repair:
            log.warning("%s; removing it", found[-1])
            await delete_layer(deps, container.id)
    return found


async def _run_dirs(deps: Deps, pods: set[str], repair: bool) -> list[str]:
    parent = sandbox_run_dir(deps, "x").parent
    names = await asyncio.to_thread(lambda: sorted(os.listdir(parent)) if parent.is_dir() else [])
    found = []
    for name in names:
        # Only crio's own form of entry: a directory named by a pod id.
        if name in pods or not _POD_ID.fullmatch(name) or not (parent / name).is_dir():
            continue
        found.append(f"pod run directory {parent / name}: pod sandbox {name} has no record "
                     "(left by a crash)")  # fmt: skip
        if repair:
            log.warning("%s; removing it", found[-1])
            await _release_lost_pod(deps, parent / name)
            await asyncio.to_thread(_remove_tree, parent / name)
    return found


async def _release_lost_pod(deps: Deps, run_dir: Path) -> None:
    """Let the pod's runtime release it (cgroups, namespaces) from what it kept in run_dir."""
    try:
        handler = (run_dir / HANDLER_FILE).read_text().strip()
    except OSError:
        return
    runtime = deps.runtimes.get(handler)
    if runtime is None:
        return
    pod = SandboxRecord(
        pod_sandbox_id=run_dir.name,
        name="",
        namespace="",
        uid="",
        attempt=0,
        runtime_handler=handler,
        created_at=0,
        run_dir=str(run_dir),
    )
    try:
        await runtime.restore_sandbox(sandbox_spec(pod))
        await runtime.stop_sandbox(pod.pod_sandbox_id)
        await runtime.remove_sandbox(pod.pod_sandbox_id)
    except CrioError as exc:
        log.error("pod sandbox %s: its runtime could not release it: %s", run_dir.name, exc)


def _mounts_below(path: Path) -> list[str]:
    prefix = str(path).rstrip("/") + "/"
    with open("/proc/self/mountinfo") as handle:
        points = [line.split()[4] for line in handle]
    return [p for p in points if p == str(path) or p.startswith(prefix)]


def _remove_tree(path: Path) -> None:
    """Unmount whatever is mounted below ``path`` (deepest first), then remove it."""
    for point in sorted(_mounts_below(path), key=len, reverse=True):
        unmount(point)
    shutil.rmtree(path, ignore_errors=True)
