"""Stats shared by ContainerStats, ListContainerStats and the pod stats RPCs."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING

from crio.api import api_pb2 as api
from crio.errors import CrioError
from crio.oci.runtime import ContainerStats, SandboxStats
from crio.server import _cri_out
from crio.server._common import runtime_of
from crio.state.records import ContainerRecord, ContainerState, SandboxRecord

if TYPE_CHECKING:
    from crio.server.deps import Deps

__all__ = ["container_stats", "sandbox_stats"]

log = logging.getLogger("crio.server")


def _u64(value: int) -> api.UInt64Value:
    return api.UInt64Value(value=max(int(value), 0))


def _tree_usage(path: str) -> tuple[int, int]:
    """(bytes allocated, inodes) of everything under ``path``, hard links counted once."""
    used, inodes = 0, 0
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(path):
        for name in (*dirnames, *filenames):
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
            used += st.st_blocks * 512
            inodes += 1
    return used, inodes


async def _writable_layer(deps: Deps, ctr: ContainerRecord) -> tuple[str, int, int]:
    """(filesystem mount point, bytes, inodes) of the container's writable layer."""
    store = deps.store
    if store is None:
        return "", 0, 0
    try:
        stored = await store.container(ctr.container_id)
        metadata = await store.driver.metadata(stored.layer)
    except CrioError as exc:
        log.debug("container %s: no writable layer usage: %s", ctr.container_id, exc)
        return "", 0, 0
    upper = metadata.get("UpperDir") or metadata.get("Path") or ""
    if not upper:
        return "", 0, 0
    used, inodes = await asyncio.to_thread(_tree_usage, upper)
    return str(store.root), used, inodes


def _nano_cores(deps: Deps, key: str, stats: ContainerStats) -> int | None:
    previous = deps.cpu_samples.get(key)
    deps.cpu_samples[key] = (stats.timestamp, stats.cpu_usage_core_nanoseconds)
    if previous is None or stats.timestamp <= previous[0]:
        return None
    used = stats.cpu_usage_core_nanoseconds - previous[1]
    return max(used, 0) * 1_000_000_000 // (stats.timestamp - previous[0])


def _cpu(deps: Deps, key: str, stats: ContainerStats) -> api.CpuUsage:
    cpu = api.CpuUsage(
        timestamp=stats.timestamp, usage_core_nano_seconds=_u64(stats.cpu_usage_core_nanoseconds)
    )
    rate = _nano_cores(deps, key, stats)
    if rate is not None:
        cpu.usage_nano_cores.CopyFrom(_u64(rate))
    return cpu


def _memory(stats: ContainerStats) -> api.MemoryUsage:
    memory = api.MemoryUsage(
        timestamp=stats.timestamp,
        working_set_bytes=_u64(stats.memory_working_set_bytes),
        usage_bytes=_u64(stats.memory_usage_bytes),
        rss_bytes=_u64(stats.memory_rss_bytes),
        page_faults=_u64(stats.page_faults),
        major_page_faults=_u64(stats.major_page_faults),
    )
    if stats.memory_limit_bytes:
        memory.available_bytes.CopyFrom(
            _u64(stats.memory_limit_bytes - stats.memory_working_set_bytes)
        )
    return memory


async def container_stats(deps: Deps, ctr: ContainerRecord) -> api.ContainerStats:
    runtime = runtime_of(deps, ctr.runtime_handler)
    if ctr.state is ContainerState.RUNNING:
        stats = await runtime.container_stats(ctr.container_id)
    else:
        stats = ContainerStats(timestamp=deps.clock())
    mount_point, used, inodes = await _writable_layer(deps, ctr)
    return api.ContainerStats(
        attributes=_cri_out.container_attributes(ctr),
        cpu=_cpu(deps, ctr.container_id, stats),
        memory=_memory(stats),
        writable_layer=api.FilesystemUsage(
            timestamp=stats.timestamp,
            fs_id=api.FilesystemIdentifier(mountpoint=mount_point),
            used_bytes=_u64(used),
            inodes_used=_u64(inodes),
        ),
        swap=api.SwapUsage(
            timestamp=stats.timestamp, swap_usage_bytes=_u64(stats.swap_usage_bytes)
        ),
    )


def _network(stats: SandboxStats) -> api.NetworkUsage:
    interfaces = [
        api.NetworkInterfaceUsage(
            name=i.name,
            rx_bytes=_u64(i.rx_bytes),
            rx_errors=_u64(i.rx_errors),
            tx_bytes=_u64(i.tx_bytes),
            tx_errors=_u64(i.tx_errors),
        )
        for i in stats.interfaces
    ]
    usage = api.NetworkUsage(timestamp=stats.usage.timestamp)
    if interfaces:
        default = next((i for i in interfaces if i.name == "eth0"), interfaces[0])
        usage.default_interface.CopyFrom(default)
        usage.interfaces.extend(i for i in interfaces if i is not default)
    return usage


async def sandbox_stats(
    deps: Deps, pod: SandboxRecord, containers: list[ContainerRecord]
) -> api.PodSandboxStats:
    stats = await runtime_of(deps, pod.runtime_handler).sandbox_stats(pod.pod_sandbox_id)
    usage = stats.usage
    members = await asyncio.gather(*(container_stats(deps, c) for c in containers))
    return api.PodSandboxStats(
        attributes=api.PodSandboxAttributes(
            id=pod.pod_sandbox_id,
            metadata=_cri_out.pod_metadata(pod),
            labels=pod.labels,
            annotations=pod.annotations,
        ),
        linux=api.LinuxPodSandboxStats(
            cpu=_cpu(deps, pod.pod_sandbox_id, usage),
            memory=_memory(usage),
            network=_network(stats),
            process=api.ProcessUsage(
                timestamp=usage.timestamp, process_count=_u64(usage.process_count)
            ),
            containers=members,
        ),
    )
