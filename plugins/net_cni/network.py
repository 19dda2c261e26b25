"""CNINetwork: crio's :class:`~crio.network.Network` through CNI plugins."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from crio.config import NetworkConfig
from crio.errors import CrioError, InvalidRequestError, UnavailableError
from crio.network import NetworkStatus, PodNetwork, PortMapping, bandwidth_from_annotations
from crio_plugins.net_cni.cache import CacheRecord, ResultCache
from crio_plugins.net_cni.confdir import ConfigWatcher, NetworkList
from crio_plugins.net_cni.executor import PluginRunner, run_operation
from crio_plugins.net_cni.executor import status as plugin_status
from crio_plugins.net_cni.protocol import (
    GC_VERSIONS,
    Attachment,
    Operation,
    Result,
    format_cni_args,
    parse_result,
)
from crio_plugins.net_cni.standin import standin_netns

__all__ = ["BANDWIDTH_BURST", "CNINetwork", "capability_args"]

log = logging.getLogger("crio.net_cni")

#: Burst given with a bandwidth limit, in bits: as CRI-O, "no burst limit".
BANDWIDTH_BURST = 2**32 - 1
_PROTOCOLS = ("tcp", "udp", "sctp")
#: Seconds between STATUS calls for CNI 1.1 lists (when Status RPCs ask).
STATUS_INTERVAL = 10.0


def _port_mappings(ports: Collection[PortMapping]) -> list[dict[str, Any]]:
    out = []
    for i, port in enumerate(ports):
        if port.host_port == 0:
            continue  # only a hostPort needs the host's help
        for attr in ("host_port", "container_port"):
            value = getattr(port, attr)
            if not 0 < value < 65536:
                raise InvalidRequestError(f"port_mappings[{i}].{attr}: {value} is not a port")
        protocol = port.protocol.lower()
        if protocol not in _PROTOCOLS:
            raise InvalidRequestError(
                f"port_mappings[{i}].protocol: {port.protocol!r} is not tcp, udp or sctp"
            )
        entry: dict[str, Any] = {
            "hostPort": port.host_port,
            "containerPort": port.container_port,
            "protocol": protocol,
        }
        if port.host_ip:
            entry["hostIP"] = port.host_ip
        out.append(entry)
    return out


def capability_args(pod: PodNetwork, pod_cidr: str) -> dict[str, Any]:
    """The ``runtimeConfig`` values crio offers (CNI CONVENTIONS.md), by capability name."""
    args: dict[str, Any] = {}
    ports = _port_mappings(pod.port_mappings)
    if ports:
        args["portMappings"] = ports
    ingress, egress = pod.ingress_bandwidth, pod.egress_bandwidth
    if not ingress and not egress:
        ingress, egress = bandwidth_from_annotations(pod.annotations)
    bandwidth: dict[str, int] = {}
    if ingress:
        bandwidth.update(ingressRate=ingress, ingressBurst=BANDWIDTH_BURST)
    if egress:
        bandwidth.update(egressRate=egress, egressBurst=BANDWIDTH_BURST)
    if bandwidth:
        args["bandwidth"] = bandwidth
    if pod_cidr:
        args["ipRanges"] = [[{"subnet": c.strip()}] for c in pod_cidr.split(",") if c.strip()]
    if pod.annotations:
        args["io.kubernetes.cri.pod-annotations"] = dict(pod.annotations)
    return args


def _status(result: Result | None) -> NetworkStatus:
    if result is None:
        return NetworkStatus()
    interfaces = [
        {"name": i.name, "mac": i.mac, "sandbox": i.sandbox} for i in result.pod_interfaces()
    ]
    return NetworkStatus(ips=result.pod_ips(), interfaces=interfaces, result=result.raw)


class CNINetwork:
    """Pod networking with the CNI plugins configured in ``network_dir``.

    :param runroot: where attachment records live (``runroot/results``).
    :param ifname: the interface name inside pods.
    :param plugin_timeout: seconds one plugin run may take.
    """

    def __init__(
        self,
        config: NetworkConfig,
        runroot: Path,
        *,
        ifname: str = "eth0",
        plugin_timeout: float = 120.0,
    ) -> None:
        self.config = config
        self.runroot = Path(runroot)
        self.ifname = ifname
        self.configs = ConfigWatcher(
            config.network_dir, config.plugin_dirs, config.cni_default_network
        )
        self.runner = PluginRunner(tuple(config.plugin_dirs), plugin_timeout)
        self.cache = ResultCache(self.runroot / "results")
        self.pod_cidr = ""
        self._records: dict[str, CacheRecord] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._plugin_status: dict[int, tuple[float, str]] = {}
        self._status_network: NetworkList | None = None
        self._status_task: asyncio.Task[None] | None = None

    # -- life cycle -----------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self.cache.directory.mkdir, parents=True, exist_ok=True)
        records = await asyncio.to_thread(lambda: list(self.cache.records()))
        self._records = {r.container_id: r for r in records if r.ifname == self.ifname}
        network, why = self.configs.current()
        if network is None:
            log.warning("CNI network not ready: %s", why)
        else:
            log.info("CNI network %s from %s", network.name, network.source)
            await self.refresh_status()

    async def close(self) -> None:
        task, self._status_task = self._status_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def ready(self) -> tuple[bool, str, str]:
        network, why = self.configs.current()
        if network is None:
            return False, "NetworkPluginNotReady", f"cni config uninitialized: {why}"
        if network.cni_version not in GC_VERSIONS:
            return True, "", ""
        # CNI 1.1 lists answer STATUS: report the last answer, ask again now and then.
        checked = self._plugin_status.get(id(network))
        now = time.monotonic()
        if (checked is None or now - checked[0] > STATUS_INTERVAL) and self._status_task is None:
            with contextlib.suppress(RuntimeError):  # no running loop: nobody to ask
                self._status_task = asyncio.get_running_loop().create_task(self.refresh_status())
        if checked is None:
            return False, "NetworkPluginNotReady", "waiting for the CNI plugins' STATUS"
        if checked[1]:
            return False, "NetworkPluginNotReady", checked[1]
        return True, "", ""

    async def refresh_status(self) -> None:
        """Ask the plugins of a CNI 1.1 list for ``STATUS`` now (ready() reports the answer)."""
        try:
            network, _ = self.configs.current()
            if network is None or network.cni_version not in GC_VERSIONS:
                return
            problem = ""
            try:
                await plugin_status(self.runner, network)
            except CrioError as exc:
                problem = str(exc)
            self._plugin_status = {id(network): (time.monotonic(), problem)}
            self._status_network = network  # keeps id(network) unique while cached
        finally:
            if self._status_task is asyncio.current_task():
                self._status_task = None

    async def update_pod_cidr(self, pod_cidr: str) -> None:
        self.pod_cidr = pod_cidr

    # -- pods -------------------------------------------------------------------

    def _lock(self, pod_sandbox_id: str) -> asyncio.Lock:
        return self._locks.setdefault(pod_sandbox_id, asyncio.Lock())

    def _attachment(self, pod: PodNetwork) -> Attachment:
        cni_args = format_cni_args(
            [
                ("K8S_POD_NAMESPACE", pod.namespace),
                ("K8S_POD_NAME", pod.name),
                ("K8S_POD_INFRA_CONTAINER_ID", pod.pod_sandbox_id),
                ("K8S_POD_UID", pod.uid),
            ]
        )
        return Attachment(
            container_id=pod.pod_sandbox_id,
            netns=pod.netns_path,
            ifname=self.ifname,
            cni_args=cni_args,
            capability_args=capability_args(pod, self.pod_cidr),
        )

    async def setup(self, pod: PodNetwork) -> NetworkStatus:
        if not pod.netns_path:
            raise InvalidRequestError(f"pod sandbox {pod.pod_sandbox_id}: no network namespace")
        network, why = self.configs.current()
        if network is None:
            raise UnavailableError(f"pod network is not ready: cni config uninitialized: {why}")
        attachment = self._attachment(pod)
        started = time.perf_counter()
        async with self._lock(pod.pod_sandbox_id):
            if pod.pod_sandbox_id in self._records:
                raise InvalidRequestError(
                    f"pod sandbox {pod.pod_sandbox_id} is already attached to the network"
                )
            op = Operation(
                "ADD",
                network.name,
                network.cni_version,
                network.plugins,
                attachment,
                self.runner.cni_path,
            )
            record = CacheRecord(
                container_id=attachment.container_id,
                ifname=attachment.ifname,
                netns=attachment.netns,
                cni_args=attachment.cni_args,
                network=network.raw,
                capability_args=attachment.capability_args,
                skipped=tuple(sorted(op.skipped)),
            )
            # Recorded before ADD runs: a daemon killed during ADD still knows to DEL.
            await self.cache.write(record)
            self._records[record.container_id] = record
            try:
                result = await run_operation(self.runner, op)
            except BaseException as exc:
                await self._undo(record, exc)
                raise
            assert result is not None
            record = record.with_result(result.raw)
            await self.cache.write(record)
            self._records[record.container_id] = record
        log.info(
            "pod sandbox %s attached to CNI network %s: %s (%.1f ms)",
            pod.pod_sandbox_id,
            network.name,
            ", ".join(result.pod_ips()),
            (time.perf_counter() - started) * 1000,
        )
        return _status(result)

    async def _undo(self, record: CacheRecord, cause: BaseException) -> None:
        """DEL a failed ADD (every plugin, in reverse) so that nothing is half-made."""
        try:
            await self._delete(record, netns=record.netns)
        except CrioError as exc:
            log.error(
                "pod sandbox %s: undoing the failed CNI ADD (%s) failed too: %s",
                record.container_id,
                cause,
                exc,
            )

    async def _delete(self, record: CacheRecord, netns: str) -> None:
        """Run DEL as ADD ran (same list, arguments, left-out plugins) and drop the record.

        A record without a result is an ADD that failed or was cut short: then
        every plugin gets DEL, and a plugin's failure does not stop the others
        nor keep the record, because plugins that never got as far as ADD may
        fail to delete what they never made (Debian's bridge 1.1.1 does, with
        iptables-nft), and StopPodSandbox must not fail on that for ever.
        When the pod's netns is gone, DEL runs in a stand-in (see :mod:`.standin`).
        """
        gone = not netns or not os.path.exists(netns)
        addresses: tuple[str, ...] = ()
        if gone and record.result is not None:
            version = str(record.network.get("cniVersion", ""))
            addresses = parse_result(record.result, version, "cache").pod_addresses()
        if addresses:
            async with standin_netns(record.ifname, addresses) as standin:
                await self._run_delete(record, standin)
        else:
            await self._run_delete(record, "" if gone else netns)

    async def _run_delete(self, record: CacheRecord, netns: str) -> None:
        network = NetworkList.from_raw(record.network)
        attachment = Attachment(
            container_id=record.container_id,
            netns=netns,
            ifname=record.ifname,
            cni_args=record.cni_args,
            capability_args=record.capability_args,
        )
        unfinished = record.result is None
        op = Operation(
            "DEL",
            network.name,
            network.cni_version,
            network.plugins,
            attachment,
            self.runner.cni_path,
            skipped=() if unfinished else record.skipped,
            cached=record.result,
            keep_going=unfinished,
        )
        await run_operation(self.runner, op)
        for error in op.errors:
            log.error("pod sandbox %s: DEL after a failed ADD: %s", record.container_id, error)
        await self.cache.remove(record.container_id, record.ifname)
        if self._records.get(record.container_id) == record:
            del self._records[record.container_id]

    async def teardown(self, pod: PodNetwork) -> None:
        started = time.perf_counter()
        async with self._lock(pod.pod_sandbox_id):
            record = self._records.get(pod.pod_sandbox_id)
            if record is None:
                return
            await self._delete(record, pod.netns_path or record.netns)
        self._locks.pop(pod.pod_sandbox_id, None)
        log.info(
            "pod sandbox %s detached from the CNI network (%.1f ms)",
            pod.pod_sandbox_id,
            (time.perf_counter() - started) * 1000,
        )

    async def status(self, pod: PodNetwork) -> NetworkStatus:
        record = self._records.get(pod.pod_sandbox_id)
        if record is None or record.result is None:
            return NetworkStatus()
        version = str(record.network.get("cniVersion", ""))
        return _status(parse_result(record.result, version, "cache"))

    async def check(self, pod: PodNetwork) -> None:
        """CHECK the pod's attachment; raises the plugin's error when it is broken.

        Skipped when the list sets ``disableCheck``. Note that Debian's portmap
        (1.1.1) fails CHECK on hosts without IPv6 iptables.
        """
        async with self._lock(pod.pod_sandbox_id):
            record = self._records.get(pod.pod_sandbox_id)
            if record is None or record.result is None:
                raise InvalidRequestError(f"pod sandbox {pod.pod_sandbox_id} is not attached")
            network = NetworkList.from_raw(record.network)
            if network.disable_check:
                return
            attachment = Attachment(
                container_id=record.container_id,
                netns=pod.netns_path or record.netns,
                ifname=record.ifname,
                cni_args=record.cni_args,
                capability_args=record.capability_args,
            )
            op = Operation(
                "CHECK",
                network.name,
                network.cni_version,
                network.plugins,
                attachment,
                self.runner.cni_path,
                skipped=record.skipped,
                cached=record.result,
            )
            await run_operation(self.runner, op)

    async def gc(self, valid_pod_sandbox_ids: Collection[str], dry_run: bool = False) -> list[str]:
        valid = set(valid_pod_sandbox_ids)
        found = []
        for record in list(self._records.values()):
            if record.container_id in valid:
                continue
            found.append(
                f"CNI attachment {record.ifname} in {record.netns or 'a lost netns'}: pod sandbox "
                f"{record.container_id} has no record (left by a crash)"
            )
            if dry_run:
                continue
            log.warning("%s; detaching it", found[-1])
            try:
                async with self._lock(record.container_id):
                    await self._delete(record, record.netns)
            except CrioError as exc:
                log.error("pod sandbox %s: CNI DEL failed: %s", record.container_id, exc)
                continue
            self._locks.pop(record.container_id, None)
        # Called before crio serves (or by crio check, which repairs only while it does
        # not): no write is under way, so every temporary file is a killed write's.
        for path in await asyncio.to_thread(self.cache.unfinished_writes):
            found.append(f"CNI cache file {path} was left half-written by a crash")
            if not dry_run:
                log.warning("%s; removing it", found[-1])
                await asyncio.to_thread(path.unlink, missing_ok=True)
        # No CNI GC verb: it releases every attachment of the network that the list
        # leaves out, and crio cannot prove it is the network's only user (on a node,
        # podman's network is often the first config in network_dir). Every attachment
        # crio makes is cached before its ADD, so each one it lost is DELeted above.
        return found

    def records(self) -> Mapping[str, CacheRecord]:
        """The recorded attachments by pod sandbox id (read-only view, for tests and debug)."""
        return dict(self._records)
