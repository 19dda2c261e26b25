"""Stats shared by ContainerStats, ListContainerStats and the pod stats RPCs."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from crio.api import api_pb2 as api
from crio.errors import CrioError
from crio.oci.runtime import ContainerStats, SandboxStats
from crio.server import _cri_out
from crio.server._common import runtime_of, state_of
from crio.state.records import ContainerRecord, ContainerState, SandboxRecord

if TYPE_CHECKING:
    from crio.server.deps import Deps

__all__ = ["fill_container_stats", "fill_sandbox_stats", "forget_gone"]

log = logging.getLogger("crio.server")


def _tree_usage(path: str) -> tuple[int, int]:
    """(bytes allocated, inodes) of everything under ``path``, hard links counted once.

    One ``scandir`` per directory and one ``lstat`` per entry (through the entry),
    without ``os.walk``'s path joins: the kubelet has every container's layer
    walked every few seconds.
    """
    used, inodes = 0, 0
    seen: set[tuple[int, int]] = set()
    pending = [path]
    while pending:
        try:
            entries = os.scandir(pending.pop())
        except OSError:
            continue
        with entries:
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    pending.append(entry.path)
                elif st.st_nlink > 1:
                    key = (st.st_dev, st.st_ino)
                    if key in seen:
                        continue
                    seen.add(key)
                used += st.st_blocks * 512
                inodes += 1
    return used, inodes


async def _layer_dirs(deps: Deps, ctrs: Sequence[ContainerRecord]) -> dict[str, tuple[str, str]]:
    """(filesystem mount point, directory) of each container's writable layer.

    Looked up in the store once per container (one read of its records for all
    the containers not yet known) and kept in ``deps.layer_dirs``: a layer's
    directory does not change while its container exists.
    """
    known = deps.layer_dirs
    missing = [c.container_id for c in ctrs if c.container_id not in known]
    store = deps.store
    if missing and store is not None:
        try:
            stored = {c.id: c for c in await store.containers()}
        except CrioError as exc:
            log.debug("no writable layer usage: %s", exc)
            stored = {}
        for container_id in missing:
            record = stored.get(container_id)
            if record is None:
                continue
            try:
                metadata = await store.driver.metadata(record.layer)
            except CrioError as exc:
                log.debug("container %s: no writable layer usage: %s", container_id, exc)
                continue
            upper = metadata.get("UpperDir") or metadata.get("Path") or ""
            if upper:
                known[container_id] = (str(store.root), upper)
    return {c.container_id: known[c.container_id] for c in ctrs if c.container_id in known}


async def _layer_usage(
    deps: Deps, ctrs: Sequence[ContainerRecord]
) -> dict[str, tuple[str, int, int]]:
    """(mount point, bytes, inodes) of each container's writable layer, walked in one thread."""
    dirs = await _layer_dirs(deps, ctrs)

    def walk() -> dict[str, tuple[str, int, int]]:
        return {cid: (mount, *_tree_usage(upper)) for cid, (mount, upper) in dirs.items()}

    return await asyncio.to_thread(walk) if dirs else {}


def _nano_cores(deps: Deps, key: str, stats: ContainerStats) -> int | None:
    previous = deps.cpu_samples.get(key)
    deps.cpu_samples[key] = (stats.timestamp, stats.cpu_usage_core_nanoseconds)
    if previous is None or stats.timestamp <= previous[0]:
        return None
    used = stats.cpu_usage_core_nanoseconds - previous[1]
    return max(used, 0) * 1_000_000_000 // (stats.timestamp - previous[0])


# Messages are filled in place (``out.cpu.timestamp = ...``): building sub-messages and
# copying them in costs about twice as much, which shows with a node's worth of them.


def _fill_cpu(deps: Deps, key: str, stats: ContainerStats, cpu: api.CpuUsage) -> None:
    cpu.timestamp = stats.timestamp
    cpu.usage_core_nano_seconds.value = max(stats.cpu_usage_core_nanoseconds, 0)
    rate = _nano_cores(deps, key, stats)
    if rate is not None:
        cpu.usage_nano_cores.value = rate


def _fill_memory(stats: ContainerStats, memory: api.MemoryUsage) -> None:
    memory.timestamp = stats.timestamp
    memory.working_set_bytes.value = max(stats.memory_working_set_bytes, 0)
    memory.usage_bytes.value = max(stats.memory_usage_bytes, 0)
    memory.rss_bytes.value = max(stats.memory_rss_bytes, 0)
    memory.page_faults.value = max(stats.page_faults, 0)
    memory.major_page_faults.value = max(stats.major_page_faults, 0)
    if stats.memory_limit_bytes:
        available = stats.memory_limit_bytes - stats.memory_working_set_bytes
        memory.available_bytes.value = max(available, 0)


def _fill_container(
    deps: Deps,
    ctr: ContainerRecord,
    stats: ContainerStats,
    layer: tuple[str, int, int],
    out: api.ContainerStats,
) -> None:
    attributes = out.attributes
    attributes.id = ctr.container_id
    attributes.metadata.name = ctr.name
    attributes.metadata.attempt = ctr.attempt
    attributes.labels.update(ctr.labels)
    attributes.annotations.update(ctr.annotations)
    _fill_cpu(deps, ctr.container_id, stats, out.cpu)
    _fill_memory(stats, out.memory)
    mount_point, used, inodes = layer
    fs = out.writable_layer
    fs.timestamp = stats.timestamp
    fs.fs_id.mountpoint = mount_point
    fs.used_bytes.value = used
    fs.inodes_used.value = inodes
    out.swap.timestamp = stats.timestamp
    out.swap.swap_usage_bytes.value = max(stats.swap_usage_bytes, 0)


async def _samples(deps: Deps, ctrs: Sequence[ContainerRecord]) -> dict[str, ContainerStats]:
    """The runtimes' samples of the running ones: one call per handler, handlers at once."""
    by_handler: dict[str, list[str]] = {}
    for ctr in ctrs:
        if ctr.state is ContainerState.RUNNING:
            by_handler.setdefault(ctr.runtime_handler, []).append(ctr.container_id)
    replies = await asyncio.gather(
        *(runtime_of(deps, h).list_container_stats(ids) for h, ids in by_handler.items())
    )
    return {cid: stats for reply in replies for cid, stats in reply.items()}


async def fill_container_stats(
    deps: Deps,
    ctrs: Sequence[ContainerRecord],
    add: Callable[[ContainerRecord], api.ContainerStats],
) -> None:
    """Sample ``ctrs`` together and fill, for each in order, the message ``add(ctr)`` gives."""
    samples, layers = await asyncio.gather(_samples(deps, ctrs), _layer_usage(deps, ctrs))
    idle = ContainerStats(timestamp=deps.clock())
    for ctr in ctrs:
        stats = samples.get(ctr.container_id, idle)
        _fill_container(deps, ctr, stats, layers.get(ctr.container_id, ("", 0, 0)), add(ctr))


def _fill_network(stats: SandboxStats, network: api.NetworkUsage) -> None:
    network.timestamp = stats.usage.timestamp
    interfaces = list(stats.interfaces)
    if not interfaces:
        return
    default = next((i for i in interfaces if i.name == "eth0"), interfaces[0])
    for index, interface in enumerate([default, *(i for i in interfaces if i is not default)]):
        out = network.default_interface if index == 0 else network.interfaces.add()
        out.name = interface.name
        out.rx_bytes.value = max(interface.rx_bytes, 0)
        out.rx_errors.value = max(interface.rx_errors, 0)
        out.tx_bytes.value = max(interface.tx_bytes, 0)
        out.tx_errors.value = max(interface.tx_errors, 0)


def _fill_pod(
    deps: Deps, pod: SandboxRecord, stats: SandboxStats, out: api.PodSandboxStats
) -> None:
    attributes = out.attributes
    attributes.id = pod.pod_sandbox_id
    attributes.metadata.CopyFrom(_cri_out.pod_metadata(pod))
    attributes.labels.update(pod.labels)
    attributes.annotations.update(pod.annotations)
    usage = stats.usage
    linux = out.linux
    _fill_cpu(deps, pod.pod_sandbox_id, usage, linux.cpu)
    _fill_memory(usage, linux.memory)
    _fill_network(stats, linux.network)
    linux.process.timestamp = usage.timestamp
    linux.process.process_count.value = max(usage.process_count, 0)


async def fill_sandbox_stats(
    deps: Deps,
    pods: Sequence[SandboxRecord],
    containers: Sequence[ContainerRecord],
    add: Callable[[], api.PodSandboxStats],
) -> None:
    """Sample ``pods`` with their ``containers`` together (one runtime call per handler for
    the pods, one batch for every container) and fill one ``add()`` message per pod."""
    by_handler: dict[str, list[str]] = {}
    for pod in pods:
        by_handler.setdefault(pod.runtime_handler, []).append(pod.pod_sandbox_id)
    replies = await asyncio.gather(
        *(runtime_of(deps, h).list_sandbox_stats(ids) for h, ids in by_handler.items())
    )
    samples = {pid: stats for reply in replies for pid, stats in reply.items()}
    idle = SandboxStats(usage=ContainerStats(timestamp=deps.clock()))
    messages: dict[str, api.PodSandboxStats] = {}
    for pod in pods:
        message = messages[pod.pod_sandbox_id] = add()
        _fill_pod(deps, pod, samples.get(pod.pod_sandbox_id, idle), message)
    await fill_container_stats(
        deps, containers, lambda ctr: messages[ctr.pod_sandbox_id].linux.containers.add()
    )


def forget_gone(deps: Deps) -> None:
    """Drop the stats kept per object (CPU samples, layer directories) for pods and
    containers that are gone, once those caches hold notably more than the live ones."""
    state = state_of(deps)
    ids = {c.container_id for c in state.containers()}
    ids.update(p.pod_sandbox_id for p in state.sandboxes())
    for cache in (deps.cpu_samples, deps.layer_dirs):
        if len(cache) > 2 * len(ids) + 64:
            for stale in [k for k in cache if k not in ids]:
                del cache[stale]
