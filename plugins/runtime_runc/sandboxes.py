"""The runc runtime's pods: pinned namespaces, a /dev/shm, a cgroup parent, and the
pause process of a pod whose containers share a PID namespace (pause.py).

What a pod holds is written to ``RUN_DIR/runc-sandbox.json`` so that a
restarted crio can release it: before its pause process is started, so that
a crash in between leaves a pod whose roll-back finds that process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from crio.errors import InvalidRequestError
from crio.oci.runtime import (
    ContainerStats,
    InterfaceStats,
    NamespaceMode,
    PodNamespaces,
    SandboxSpec,
    SandboxStats,
)
from crio.oci.sysctls import sysctl_namespace
from crio_plugins.runtime_runc import _linux, cgstats, namespaces, pause
from crio_plugins.runtime_runc._proc import parse_net_dev, read_json, write_json
from crio_plugins.runtime_runc.cgroups import CgroupUsage, Hierarchies
from crio_plugins.runtime_runc.systemd import SystemdManager

__all__ = ["PodSandbox", "Sandboxes", "usage_to_stats"]

log = logging.getLogger("crio.runtime.runc")

STATE_FILE = "runc-sandbox.json"


@dataclass(slots=True)
class PodSandbox:
    pod_sandbox_id: str
    run_dir: Path
    namespaces: namespaces.NamespacePaths
    shm: str
    cgroup_parent: str
    #: Levels of the cgroup parent that did not exist before the pod: removed with it.
    cgroup_levels: list[str] = field(default_factory=list)
    #: The pod's slice, when crio made it (systemd): stopped with the pod.
    cgroup_slice: str = ""
    #: The pin of the PID namespace its pause process holds, and that process's cgroup.
    pause_pin: str = ""
    pause_cgroup: str = ""
    pause_pid: int = 0
    pause_start: int = 0

    def pod_namespaces(self) -> PodNamespaces:
        ns = self.namespaces
        return PodNamespaces(
            network=ns.network,
            ipc=ns.ipc,
            uts=ns.uts,
            pid=self.pause_pin or None,
            shm=self.shm or None,
        )

    def save(self) -> None:
        write_json(
            self.run_dir / STATE_FILE,
            {
                "pod_sandbox_id": self.pod_sandbox_id,
                "network": self.namespaces.network,
                "ipc": self.namespaces.ipc,
                "uts": self.namespaces.uts,
                "shm": self.shm,
                "cgroup_parent": self.cgroup_parent,
                "cgroup_levels": self.cgroup_levels,
                "cgroup_slice": self.cgroup_slice,
                "pause_pin": self.pause_pin,
                "pause_cgroup": self.pause_cgroup,
                "pause_pid": self.pause_pid,
                "pause_start": self.pause_start,
            },
        )


def usage_to_stats(usage: CgroupUsage, timestamp: int) -> ContainerStats:
    return ContainerStats(
        timestamp=timestamp,
        cpu_usage_core_nanoseconds=usage.cpu_usage_core_nanoseconds,
        memory_working_set_bytes=usage.memory_working_set_bytes,
        memory_usage_bytes=usage.memory_usage_bytes,
        oom_kill_count=usage.oom_kill_count,
        memory_rss_bytes=usage.memory_rss_bytes,
        memory_limit_bytes=usage.memory_limit_bytes,
        page_faults=usage.page_faults,
        major_page_faults=usage.major_page_faults,
        swap_usage_bytes=usage.swap_usage_bytes,
        process_count=usage.process_count,
        block_read_bytes=usage.block_read_bytes,
        block_write_bytes=usage.block_write_bytes,
    )


def _net_dev_in(netns_path: str) -> str:
    fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _linux.setns(fd, _linux.CLONE_NEWNET)
    finally:
        os.close(fd)
    with open("/proc/thread-self/net/dev") as handle:
        return handle.read()


class Sandboxes:
    """The pods of one runc handler."""

    def __init__(
        self,
        namespaces_dir: Path,
        hierarchies: Hierarchies,
        reader: cgstats.CgroupReader,
        systemd: SystemdManager | None = None,
        stop_timeout: float = 30.0,
    ) -> None:
        self.namespaces_dir = namespaces_dir
        self.hierarchies = hierarchies
        self.systemd = systemd
        #: The static pause binary that holds shared PID namespaces; "": none (core then
        #: runs an infra container). Set by the runtime once it checked the binary.
        self.pause_binary = ""
        self.stop_timeout = stop_timeout
        self._pods: dict[str, PodSandbox] = {}
        self._pauses: dict[str, pause.PauseWatch] = {}
        #: Pause processes being started (from create to start_sandbox, while CNI runs).
        self._starting: dict[str, asyncio.Future[None]] = {}
        self._sampler: cgstats.Sampler[str | None] = cgstats.Sampler(
            hierarchies, reader, processes=True
        )

    def get(self, pod_sandbox_id: str) -> PodSandbox | None:
        return self._pods.get(pod_sandbox_id)

    async def create(self, spec: SandboxSpec) -> PodNamespaces:
        kinds: list[str] = []
        if spec.network_mode is not NamespaceMode.NODE:
            kinds += ["network", "uts"]
        if spec.ipc_mode is not NamespaceMode.NODE:
            kinds.append("ipc")
        for key in spec.sysctls:
            if sysctl_namespace(key) not in kinds:
                raise InvalidRequestError(
                    f"linux.sysctls[{key}]: pod {spec.pod_sandbox_id} does not have that "
                    "namespace to itself"
                )
        levels: list[str] = []
        if self.systemd is None and spec.cgroup_parent:
            levels = await asyncio.to_thread(self.hierarchies.missing_levels, spec.cgroup_parent)
        paths = await namespaces.pin(
            self.namespaces_dir,
            spec.pod_sandbox_id,
            tuple(kinds),
            hostname=spec.hostname,
            sysctls=spec.sysctls,
        )
        pod = PodSandbox(spec.pod_sandbox_id, spec.run_dir, paths, "", spec.cgroup_parent, levels)
        try:
            # The kubelet makes its pods' slices; a parent nobody made is made here.
            made = bool(spec.cgroup_parent) and self.systemd is not None
            made = made and await self.systemd.ensure_slice(  # type: ignore[union-attr]
                spec.cgroup_parent, f"pod sandbox {spec.pod_sandbox_id}"
            )
            pod.cgroup_slice = spec.cgroup_parent if made else ""
            if "ipc" in kinds:
                shm = spec.run_dir / "shm"
                await asyncio.to_thread(namespaces.mount_shm, shm, spec.shm_size)
                pod.shm = str(shm)
            if spec.hold_pid_namespace and self.pause_binary and self.systemd is None:
                pod.pause_pin = str(self.namespaces_dir / pause.PIN_DIR / spec.pod_sandbox_id)
                pod.pause_cgroup = f"{pod.cgroup_parent.rstrip('/')}/crio-{spec.pod_sandbox_id}"
            # Before a pause process exists: a roll-back finds it from here on.
            await asyncio.to_thread(pod.save)
            if pod.pause_pin:
                # It starts while core sets up the network; start_sandbox waits for it.
                self._starting[pod.pod_sandbox_id] = asyncio.ensure_future(self._start_pause(pod))
        except BaseException:
            await self._release(pod)
            raise
        self._pods[spec.pod_sandbox_id] = pod
        return pod.pod_namespaces()

    async def start(self, pod_sandbox_id: str) -> None:
        """Wait until the pod's pause process (if it gets one) runs.

        :raises OCIRuntimeError: it could not be started.
        """
        starting = self._starting.get(pod_sandbox_id)
        if starting is not None:
            # Left for stop() to wait for, should this wait be cancelled.
            await asyncio.shield(starting)
            self._starting.pop(pod_sandbox_id, None)

    async def _start_pause(self, pod: PodSandbox) -> None:
        pod_id = pod.pod_sandbox_id
        ns = pod.namespaces
        spec = pause.PauseSpec(
            pod_sandbox_id=pod_id,
            binary=self.pause_binary,
            pin=Path(pod.pause_pin),
            mountpoint=pod.run_dir,
            cgroup=pod.pause_cgroup,
            network=ns.network,
            ipc=ns.ipc,
            uts=ns.uts,
        )
        watch = await pause.start(spec, self.hierarchies)
        self._pauses[pod_id] = watch
        pod.pause_pid, pod.pause_start = watch.process.pid, watch.process.start
        await asyncio.to_thread(pod.save)

    async def _restore_pause(self, pod: PodSandbox) -> None:
        found = await asyncio.to_thread(pause.find, pod.pause_pin, pod.pause_pid, pod.pause_start)
        watch = pause.PauseWatch.attach(found) if found is not None else None
        if watch is None:
            # Core stops the pod if it was still ready (sandbox_ended); a stopped pod's is.
            log.info("pod sandbox %s: its pause process is gone", pod.pod_sandbox_id)
            return
        self._pauses[pod.pod_sandbox_id] = watch
        pod.pause_pid, pod.pause_start = found.pid, found.start  # type: ignore[union-attr]

    async def stop(self, pod_sandbox_id: str) -> None:
        """Kill the pod's pause process, if it has one (its PID namespace dies with it)."""
        starting = self._starting.pop(pod_sandbox_id, None)
        if starting is not None:
            # Never cancelled halfway: its threads would start a process nobody watches.
            with contextlib.suppress(Exception):
                await asyncio.shield(starting)
        watch = self._pauses.get(pod_sandbox_id)
        if watch is not None:
            await watch.kill(self.stop_timeout)

    def ended(self, pod_sandbox_id: str) -> str:
        """Why the pod can no longer hold containers ("" while it can): its pause process
        (the init of the PID namespace its containers join) is gone."""
        pod = self._pods.get(pod_sandbox_id)
        if pod is None or not pod.pause_pin or pod_sandbox_id in self._starting:
            return ""
        watch = self._pauses.get(pod_sandbox_id)
        if watch is None or watch.ended.is_set():
            return "its pause process (the init of its shared PID namespace) has ended"
        return ""

    def pause_pid(self, pod_sandbox_id: str) -> int:
        watch = self._pauses.get(pod_sandbox_id)
        return watch.process.pid if watch is not None and not watch.ended.is_set() else 0

    async def close(self) -> None:
        for watch in self._pauses.values():
            watch.close()
        self._pauses.clear()

    async def restore(self, spec: SandboxSpec) -> PodNamespaces:
        data = await asyncio.to_thread(read_json, spec.run_dir / STATE_FILE)
        if data is None:
            log.warning(
                "pod sandbox %s: %s is missing; its namespaces are gone",
                spec.pod_sandbox_id,
                spec.run_dir / STATE_FILE,
            )
            data = {}
        pod = PodSandbox(
            pod_sandbox_id=spec.pod_sandbox_id,
            run_dir=spec.run_dir,
            namespaces=namespaces.NamespacePaths(
                network=data.get("network"), ipc=data.get("ipc"), uts=data.get("uts")
            ),
            shm=str(data.get("shm") or ""),
            cgroup_parent=str(data.get("cgroup_parent") or spec.cgroup_parent),
            cgroup_levels=list(data.get("cgroup_levels") or []),
            cgroup_slice=str(data.get("cgroup_slice") or ""),
            pause_pin=str(data.get("pause_pin") or ""),
            pause_cgroup=str(data.get("pause_cgroup") or ""),
            pause_pid=int(data.get("pause_pid") or 0),
            pause_start=int(data.get("pause_start") or 0),
        )
        if pod.pause_pin:
            await self._restore_pause(pod)
        self._pods[spec.pod_sandbox_id] = pod
        return pod.pod_namespaces()

    async def remove(self, pod_sandbox_id: str) -> None:
        pod = self._pods.pop(pod_sandbox_id, None)
        if pod is not None:
            await self._release(pod)

    async def _release(self, pod: PodSandbox) -> None:
        await self.stop(pod.pod_sandbox_id)
        self._pauses.pop(pod.pod_sandbox_id, None)

        def release() -> list[str]:
            if pod.shm:
                namespaces.unmount_shm(Path(pod.shm))
            namespaces.unpin(pod.namespaces)
            if pod.pause_pin:
                pause.release_pin(pod.pause_pin)
            levels = [pod.pause_cgroup] if pod.pause_cgroup else []
            busy = self.hierarchies.remove([*levels, *pod.cgroup_levels])
            with contextlib.suppress(FileNotFoundError):
                (pod.run_dir / STATE_FILE).unlink()
            return busy

        busy = await asyncio.to_thread(release)
        if pod.cgroup_slice and self.systemd is not None:
            await self.systemd.stop_unit(pod.cgroup_slice)
        if busy:
            log.warning("pod sandbox %s: cgroups still busy: %s", pod.pod_sandbox_id, busy)

    async def stats(self, pod_sandbox_id: str) -> SandboxStats:
        pod = self._pods.get(pod_sandbox_id)
        now = time.time_ns()
        if pod is None:
            return SandboxStats(usage=ContainerStats(timestamp=now))
        usage = await asyncio.to_thread(self.hierarchies.usage, pod.cgroup_parent)
        interfaces: list[InterfaceStats] = []
        if pod.namespaces.network and os.path.exists(pod.namespaces.network):
            netns = pod.namespaces.network
            try:
                text = await namespaces.run_in_new_thread(lambda: _net_dev_in(netns))
                interfaces = parse_net_dev(text)
            except OSError as exc:
                log.debug("pod sandbox %s: no network stats: %s", pod_sandbox_id, exc)
        return SandboxStats(usage=usage_to_stats(usage, now), interfaces=interfaces)

    async def list_stats(
        self, pod_sandbox_ids: Sequence[str], pids: Mapping[str, list[int]]
    ) -> dict[str, SandboxStats]:
        """Sample many pods in one worker thread; ``pids`` are live container PIDs per pod,
        through which a pod's network counters are read without entering its namespace."""
        now = time.time_ns()
        pods = {i: self._pods[i] for i in pod_sandbox_ids if i in self._pods}

        def net_dev(pod_sandbox_id: str) -> str | None:
            netns = pods[pod_sandbox_id].namespaces.network
            if not netns:
                return None
            held = self.pause_pid(pod_sandbox_id)
            through = [*pids.get(pod_sandbox_id, []), *([held] if held else [])]
            return cgstats.read_net_dev(netns, through)

        samples = await self._sampler.sample(
            {i: pod.cgroup_parent for i, pod in pods.items()}, self._pods, net_dev
        )
        out = {
            i: SandboxStats(usage=ContainerStats(timestamp=now))
            for i in pod_sandbox_ids
            if i not in pods
        }
        for pod_sandbox_id, (usage, text) in samples.items():
            netns = pods[pod_sandbox_id].namespaces.network
            if text is None and netns and os.path.exists(netns):
                # No container process in the pod: enter the namespace from a new thread.
                try:
                    text = await namespaces.run_in_new_thread(lambda n=netns: _net_dev_in(n))
                except OSError as exc:
                    log.debug("pod sandbox %s: no network stats: %s", pod_sandbox_id, exc)
            out[pod_sandbox_id] = SandboxStats(
                usage=usage_to_stats(usage, now),
                interfaces=parse_net_dev(text) if text is not None else [],
            )
        return out
