"""ClearRuntime: the ``Runtime`` of runtime_type "vm", one qemu microvm per pod.

RunPodSandbox: :meth:`create_sandbox` pins the pod's network namespace (CNI
runs there unchanged); :meth:`start_sandbox` boots the VM inside it, wired
to the CNI veth, and applies the pod's sysctls in the guest. CreateContainer
binds the mounted rootfs (and every bind mount's source) into the pod's
share and hands the guest a config.json with guest paths; the agent runs
crun (or runc) in the guest. Logs are written on the host in the CRI
format; exits, exec, attach and stats go through the agent. StopPodSandbox
shuts the VM down; a VM that dies takes its containers to exited
(``VMDied``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from crio.config import Config, RuntimeHandler
from crio.errors import (
    ConfigError,
    CrioError,
    DeadlineExceededError,
    InvalidRequestError,
    NotFoundError,
    OCIRuntimeError,
    UnsupportedError,
)
from crio.oci.mounts import host_devices
from crio.oci.runtime import (
    ContainerSpec,
    ContainerState,
    ContainerStats,
    ExecResult,
    InterfaceStats,
    NamespaceMode,
    PodNamespaces,
    SandboxSpec,
    SandboxStats,
    State,
    StreamIO,
)
from crio_plugins.runtime_clear import _mounts, assets
from crio_plugins.runtime_clear._guest_kernel import node_lsm_args
from crio_plugins.runtime_clear._initramfs import GUEST_SHARE
from crio_plugins.runtime_clear._netns import pin_netns, unpin_netns
from crio_plugins.runtime_clear._prepare import prepare, refuse_bidirectional
from crio_plugins.runtime_clear._spec import guest_spec
from crio_plugins.runtime_clear._streams import attach_session, exec_session, open_port
from crio_plugins.runtime_clear.accel import choose_accel, host_facts
from crio_plugins.runtime_clear.options import VMOptions
from crio_plugins.runtime_clear.pods import (
    CONTAINER_STATE,
    POD_STATE,
    VM_DIED_REASON,
    PodVM,
    VMContainer,
    is_supervisor,
    release_mounts,
    stats_from_agent,
    stop_orphan,
)
from crio_plugins.runtime_clear.template import TemplateSlot, handler_slot, template_problem
from crio_plugins.runtime_clear.vm import VM, VMSpec, find_supervisor, start_vm

__all__ = ["ClearRuntime"]

log = logging.getLogger("crio.runtime_clear")

#: How long a killed container may take to report its exit (TCG is slow).
KILL_GRACE = 60.0
#: How often the last agent event handled is saved: after a crash, what came
#: after it is delivered again (at least once), never lost.
SEQ_SAVE_INTERVAL = 1.0
#: ExecSync output is capped like conmon's.
EXEC_SYNC_CAP = 16 << 20
LOST_EXIT_CODE = 255
#: The pod's /dev/shm, as big as a runc pod's.
SHM_SIZE = 64 << 20


class ClearRuntime:
    """One ``[crio.runtime.runtimes.NAME]`` handler with runtime_type "vm".

    The pod's VM boots in start_sandbox, wired to the interfaces CNI made.
    """

    sandbox_independent_of_network = False

    def __init__(
        self, handler_name: str, handler: RuntimeHandler, options: VMOptions, config: Config
    ) -> None:
        self.handler_name = handler_name
        self.options = options
        self.privileged_without_host_devices = handler.privileged_without_host_devices
        self.vm_root = Path(handler.runtime_root or f"/run/crio/vm/{handler_name}")
        self.namespaces_dir = Path(config.crio.runtime.namespaces_dir)
        #: Seconds a stop waits for the exit once it has sent SIGKILL (ctr_stop_timeout).
        self.stop_timeout = float(config.crio.runtime.ctr_stop_timeout)
        self.log_size_max = config.crio.runtime.log_size_max
        self.assets_dir = assets.assets_dir(config.crio.root)
        self.kernel = Path(options.kernel) if options.kernel else None
        self.initrd = Path(options.initrd) if options.initrd else None
        if (self.kernel is None) != (self.initrd is None):
            missing = "initrd" if self.initrd is None else "kernel"
            raise ConfigError(
                "kernel and initrd go together: set both or neither",
                key=f"crio.runtime.runtimes.{handler_name}.{missing}",
            )
        self.accel = choose_accel(
            options.accel, host_facts(), key=f"crio.runtime.runtimes.{handler_name}.accel"
        )
        self.pods: dict[str, PodVM] = {}
        self._lsm_args: tuple[str, ...] = ()
        self.containers: dict[str, VMContainer] = {}
        self._problem = ("VMNotStarted", "the runtime has not started")
        self._template: TemplateSlot | None = None
        self._saver: asyncio.Task[None] | None = None
        self._forwards: set[asyncio.Task[None]] = set()

    # -- life of the handler ----------------------------------------------------------

    def exclusive_paths(self) -> dict[str, str]:
        return {f"crio.runtime.runtimes.{self.handler_name}.runtime_root": str(self.vm_root)}

    async def start(self) -> None:
        await asyncio.to_thread(self.vm_root.mkdir, parents=True, exist_ok=True)
        self._problem = await asyncio.to_thread(self._check)
        if self._problem[0]:
            log.error("runtime handler %s: %s", self.handler_name, self._problem[1])
        else:
            self._template = handler_slot(self.handler_name, self.vm_root, self.kernel,
                                          self.initrd, self.accel, self.options,
                                          (*self._lsm_args, *self.options.kernel_args))  # fmt: skip
        self._saver = asyncio.create_task(self._save_seqs(), name=f"vm-seqs-{self.handler_name}")

    async def _save_seqs(self) -> None:
        while True:
            await asyncio.sleep(SEQ_SAVE_INTERVAL)
            for pod in list(self.pods.values()):
                if pod.seq_changed():
                    log.debug("pod sandbox %s: handled agent events up to %d",
                              pod.pod_sandbox_id, pod.last_seq)  # fmt: skip
                    with contextlib.suppress(OSError):
                        await asyncio.to_thread(pod.save)

    def _check(self) -> tuple[str, str]:
        self._lsm_args = node_lsm_args()
        for what, path in (("qemu", self.options.qemu), ("virtiofsd", self.options.virtiofsd)):
            if not (os.path.isfile(path) and os.access(path, os.X_OK)):
                return "VMToolMissing", f"{what} {path} is not an executable file"
        if self.kernel is None:
            try:
                stored = assets.load(self.assets_dir)
                assets.verify(stored)
            except CrioError as exc:
                return "VMAssetsMissing", str(exc)
            self.kernel, self.initrd = stored.kernel, stored.initrd
        for what, path in (("kernel", self.kernel), ("initrd", self.initrd)):
            if path is None or not path.is_file():
                return "VMAssetsMissing", f"{what} {path} does not exist"
        problem = template_problem(self.kernel) if self.options.vm_template is True else ""
        return ("VMTemplateUnsupported", problem) if problem else ("", "")

    async def close(self) -> None:
        if self._template is not None:
            await self._template.close()
        if self._saver is not None:
            self._saver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._saver
        for pod in self.pods.values():
            if pod.vm is not None and pod.vm.agent is not None:
                await pod.vm.agent.close()  # the VMs keep running
                # Saved after the channel is closed: nothing handled goes unrecorded.
                if pod.seq_changed():
                    await asyncio.to_thread(pod.save)

    def ready(self) -> tuple[bool, str, str]:
        reason, message = self._problem
        return (False, reason, message) if reason else (True, "", "")

    # -- pods ---------------------------------------------------------------------------

    def _pod(self, pod_sandbox_id: str) -> PodVM:
        pod = self.pods.get(pod_sandbox_id)
        if pod is None:
            raise NotFoundError(
                f"pod sandbox {pod_sandbox_id} is not known to runtime {self.handler_name}"
            )
        return pod

    def _vm(self, pod: PodVM) -> VM:
        if pod.vm is None or pod.vm.died.done():
            why = pod.vm.died.result().reason if pod.vm is not None else "it is not running"
            raise OCIRuntimeError(f"pod sandbox {pod.pod_sandbox_id}: its VM is gone: {why}")
        return pod.vm

    def _vm_spec(self, pod: PodVM) -> VMSpec:
        assert self.kernel is not None and self.initrd is not None
        return VMSpec(
            run_dir=pod.vm_dir,
            kernel=self.kernel,
            initrd=self.initrd,
            accel=self.accel,
            memory_mib=self.options.memory,
            vcpus=self.options.vcpus,
            netns=pod.netns,
            hostname=pod.hostname,
            qemu=self.options.qemu,
            virtiofsd=self.options.virtiofsd,
            kernel_args=(*self._lsm_args, *self.options.kernel_args),
        )

    async def create_sandbox(self, spec: SandboxSpec) -> PodNamespaces:
        for kind, mode in (
            ("network", spec.network_mode),
            ("pid", spec.pid_mode),
            ("ipc", spec.ipc_mode),
        ):
            if mode is NamespaceMode.NODE:
                raise InvalidRequestError(
                    f"RunPodSandbox: config.linux.security_context.namespace_options.{kind}: "
                    f"runtime handler {self.handler_name} (runtime_type 'vm') cannot give a pod "
                    f"the node's {kind} namespace"
                )
        reason, message = self._problem
        if reason:
            raise OCIRuntimeError(f"runtime handler {self.handler_name} is not ready: {message}")
        try:
            netns = await pin_netns(self.namespaces_dir, spec.pod_sandbox_id)
        except OSError as exc:
            raise OCIRuntimeError(
                f"pod sandbox {spec.pod_sandbox_id}: cannot make its network namespace: {exc}"
            ) from exc
        pod = PodVM(
            pod_sandbox_id=spec.pod_sandbox_id,
            run_dir=spec.run_dir,
            vm_dir=self.vm_root / spec.pod_sandbox_id[:16],
            netns=netns,
            hostname=spec.hostname,
            sysctls=dict(spec.sysctls),
            accel=self.accel,
        )
        try:
            await asyncio.to_thread(pod.vm_dir.mkdir, parents=True, exist_ok=False)
            await asyncio.to_thread(pod.save)
        except BaseException as exc:
            await asyncio.to_thread(unpin_netns, netns)
            if isinstance(exc, OSError):
                raise OCIRuntimeError(
                    f"pod sandbox {spec.pod_sandbox_id}: cannot make its VM directory: {exc}"
                ) from exc
            raise
        self.pods[spec.pod_sandbox_id] = pod
        return PodNamespaces(network=netns)

    async def start_sandbox(self, pod_sandbox_id: str, network: Mapping[str, Any]) -> None:
        pod = self._pod(pod_sandbox_id)
        started = time.monotonic()
        try:
            vm = await start_vm(self._vm_spec(pod), self._template, self.options.boot_timeout)
        except OSError as exc:  # its directory, the share's mount, the supervisor
            raise OCIRuntimeError(
                f"pod sandbox {pod_sandbox_id}: its VM cannot start: {exc}"
            ) from exc
        pod.supervisor_pid = vm.supervisor_pid
        await asyncio.to_thread(pod.save)
        pod.watch(vm)
        log.info(
            "pod sandbox %s: VM ready in %.2fs (%s, %s, guest kernel %s)",
            pod_sandbox_id,
            time.monotonic() - started,
            vm.accel,
            "restored from the template" if vm.restored else "booted",
            vm.ready.get("kernel"),
        )
        await vm.call("shm", size=SHM_SIZE)
        if pod.sysctls:
            try:
                await vm.call("sysctl", values=pod.sysctls)
            except (NotFoundError, OCIRuntimeError) as exc:
                raise InvalidRequestError(f"RunPodSandbox: config.linux.sysctls: {exc}") from None

    async def restore_sandbox(self, spec: SandboxSpec) -> PodNamespaces:
        pod = await asyncio.to_thread(PodVM.load, spec.run_dir)
        if pod is None:
            log.warning("pod sandbox %s: no %s; its VM is lost", spec.pod_sandbox_id, POD_STATE)
            return PodNamespaces()
        self.pods[spec.pod_sandbox_id] = pod
        if not pod.stopped and pod.supervisor_pid and is_supervisor(pod):
            try:
                vm = await VM.reattach(
                    self._vm_spec(pod),
                    pod.accel,
                    pod.supervisor_pid,
                    pod.stray_event,
                    after_seq=pod.last_seq,
                )
            except CrioError as exc:
                log.warning("pod sandbox %s: cannot take its VM over: %s", pod.pod_sandbox_id, exc)
            else:
                pod.watch(vm)
        return PodNamespaces(network=pod.netns if os.path.exists(pod.netns) else None)

    def sandbox_ended(self, pod_sandbox_id: str) -> str:
        pod = self.pods.get(pod_sandbox_id)
        if pod is None or (pod.vm is not None and not pod.vm.died.done()):
            return ""
        return "its VM has ended" if not pod.stopped else "its VM was shut down"

    async def stop_sandbox(self, pod_sandbox_id: str) -> None:
        pod = self.pods.get(pod_sandbox_id)
        if pod is None:
            return
        async with pod.lock:
            if not pod.stopped:
                pod.stopped = True
                await asyncio.to_thread(pod.save)
            if pod.vm is not None:
                if not pod.vm.died.done():
                    await pod.vm.shutdown(timeout=KILL_GRACE)
                await pod.vm.release()
                return
            if not pod.supervisor_pid:  # a crash cut its start short
                pod.supervisor_pid = await asyncio.to_thread(find_supervisor, pod.vm_dir)
            if pod.supervisor_pid and is_supervisor(pod):
                await stop_orphan(pod, KILL_GRACE)

    async def remove_sandbox(self, pod_sandbox_id: str) -> None:
        pod = self.pods.get(pod_sandbox_id)
        if pod is None:
            return
        await self.stop_sandbox(pod_sandbox_id)
        for container_id in list(pod.containers):
            await self.remove_container(container_id)

        def release() -> None:
            _mounts.unmount(pod.share)
            unpin_netns(pod.netns)
            shutil.rmtree(pod.vm_dir, ignore_errors=True)
            pod.release_record()

        await asyncio.to_thread(release)
        self.pods.pop(pod_sandbox_id, None)

    async def sandbox_stats(self, pod_sandbox_id: str) -> SandboxStats:
        pod = self.pods.get(pod_sandbox_id)
        now = time.time_ns()
        if pod is None or not pod.alive():
            return SandboxStats(usage=ContainerStats(timestamp=now))
        data = await self._vm(pod).call("stats")
        interfaces = [InterfaceStats(**i) for i in data.pop("interfaces", [])]
        return SandboxStats(usage=stats_from_agent(data), interfaces=interfaces)

    async def list_sandbox_stats(self, pod_sandbox_ids: Sequence[str]) -> dict[str, SandboxStats]:
        # Each pod is its own VM, asked over its own channel: they run concurrently.
        ids = [i for i in pod_sandbox_ids if i in self.pods]
        samples = await asyncio.gather(*(self.sandbox_stats(i) for i in ids))
        return dict(zip(ids, samples, strict=True))

    async def list_container_stats(self, container_ids: Sequence[str]) -> dict[str, ContainerStats]:
        ids = [i for i in container_ids if i in self.containers]
        samples = await asyncio.gather(*(self.container_stats(i) for i in ids))
        return dict(zip(ids, samples, strict=True))

    # -- containers ---------------------------------------------------------------------

    def _get(self, container_id: str) -> VMContainer:
        ctr = self.containers.get(container_id)
        if ctr is None:
            raise NotFoundError(
                f"container {container_id} is not known to runtime {self.handler_name}"
            )
        return ctr

    async def create_container(self, spec: ContainerSpec) -> None:
        pod = self._pod(spec.pod_sandbox_id)
        vm = self._vm(pod)
        cid = spec.container_id
        if spec.oci_spec.get("hooks"):
            # OCI hooks are host programs run by the runtime around the container's
            # process; the guest's runtime cannot run them. Refused, never dropped.
            stages = ", ".join(sorted(spec.oci_spec["hooks"]))
            raise UnsupportedError(
                f"container {cid}: runtime handler {self.handler_name} (runtime_type 'vm') "
                f"does not run OCI hooks, and crio.runtime.hooks_dir matched it ({stages})"
            )
        guest_dir = f"{GUEST_SHARE}/ctr/{cid}"
        refuse_bidirectional(spec.oci_spec, cid, self.handler_name)
        host_nodes = None
        if spec.privileged and not self.privileged_without_host_devices:
            host_nodes = await asyncio.to_thread(host_devices)
        made = guest_spec(spec.oci_spec, guest_dir, host_nodes=host_nodes)
        namespaces = made.spec.get("linux", {}).get("namespaces", [])
        ctr = VMContainer(
            container_id=cid,
            pod_sandbox_id=spec.pod_sandbox_id,
            name=spec.name,
            bundle=spec.bundle,
            host_dir=pod.share / "ctr" / cid,
            guest_dir=guest_dir,
            log_path=spec.log_path,
            tty=spec.tty,
            stdin=spec.stdin,
            stdin_once=spec.stdin_once,
            stop_signal=spec.stop_signal,
            own_pid_ns=any(n.get("type") == "pid" and not n.get("path") for n in namespaces),
            log_size_max=self.log_size_max,
        )
        rootfs = str(spec.oci_spec.get("root", {}).get("path", ""))
        stage = pod.vm_dir / "stage" / cid
        try:
            try:
                await asyncio.to_thread(prepare, ctr, rootfs, made.binds, made.spec, stage)
            except OSError as exc:
                raise OCIRuntimeError(f"container {cid}: cannot make its share: {exc}") from None
            ctr.open_log()
            pod.adopt(ctr)
            self.containers[cid] = ctr
            created = await vm.call(
                "create",
                container_id=cid,
                bundle=guest_dir,
                tty=spec.tty,
                stdin=spec.stdin,
                runtime=self.options.guest_runtime,
                # Only when asked: an agent of an older crio does not know the argument.
                **({"guest_devices": True} if made.all_guest_devices else {}),
            )
            ctr.pid = int(created["pid"])
            await asyncio.to_thread(ctr.save)
        except BaseException:
            self.containers.pop(cid, None)
            pod.forget(cid)
            ctr.close_log()
            await release_mounts(ctr.mounts)
            await asyncio.to_thread(shutil.rmtree, ctr.host_dir, True)
            raise

    async def restore_container(self, spec: ContainerSpec) -> ContainerState:
        ctr = await asyncio.to_thread(VMContainer.load, spec.bundle)
        if ctr is None:
            return ContainerState(
                state=State.STOPPED,
                exit_code=LOST_EXIT_CODE,
                finished_at=time.time_ns(),
                reason="Error",
                message=f"{CONTAINER_STATE} is missing; the container is lost",
            )
        ctr.log_size_max = self.log_size_max
        self.containers[ctr.container_id] = ctr
        pod = self.pods.get(ctr.pod_sandbox_id)
        if pod is not None and pod.alive():
            # Before adopting: the output the agent kept while crio was down goes to the log.
            await asyncio.to_thread(ctr.open_log)
        if pod is not None:
            pod.adopt(ctr)
        if pod is None or not pod.alive():
            ctr.exited_with(
                128 + signal.SIGKILL,
                time.time_ns(),
                VM_DIED_REASON,
                "the pod VM ended while crio was down",
            )
            return ctr.state()
        try:
            status = await self._vm(pod).call("state", container_id=ctr.container_id)
        except NotFoundError:
            ctr.exited_with(LOST_EXIT_CODE, time.time_ns(), "Error", "the agent lost it")
            return ctr.state()
        if status["status"] == "stopped":
            code = int(status.get("exit_code") or 0)
            # The guest's clock is all there is for an exit while crio was down; it may
            # run behind the host's (TCG): kept between the start and now.
            now = time.time_ns()
            finished = min(now, max(ctr.started_at, int(status.get("finished_at") or now)))
            ctr.exited_with(code, finished, "Completed" if code == 0 else "Error")
        return ctr.state()

    async def start_container(self, container_id: str) -> None:
        ctr = self._get(container_id)
        vm = self._vm(self._pod(ctr.pod_sandbox_id))
        await vm.call("start", container_id=container_id)
        # The host's clock, as for every time CRI reports: the guest's can run seconds
        # behind it under TCG, and started_at must not come before created_at.
        ctr.started_at = time.time_ns()
        await asyncio.to_thread(ctr.save)

    async def _kill(self, ctr: VMContainer, signum: int) -> None:
        pod = self.pods.get(ctr.pod_sandbox_id)
        if pod is None or not pod.alive():
            return
        everything = signum == signal.SIGKILL and not ctr.own_pid_ns
        with contextlib.suppress(NotFoundError):
            await self._vm(pod).call(
                "kill", container_id=ctr.container_id, signal=int(signum), all=everything
            )

    async def stop_container(self, container_id: str, timeout: float) -> None:
        ctr = self.containers.get(container_id)
        if ctr is None or ctr.exit is not None:
            return
        if not ctr.started_at:
            await self._kill(ctr, signal.SIGKILL)
        elif timeout > 0:
            await self._kill(ctr, ctr.stop_signal)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ctr.exited.wait(), timeout)
                return
        await self._kill(ctr, signal.SIGKILL)
        try:
            await asyncio.wait_for(ctr.exited.wait(), self.stop_timeout)
        except TimeoutError:
            raise OCIRuntimeError(
                f"container {container_id}: no exit {self.stop_timeout:g}s after SIGKILL "
                "(crio.runtime.ctr_stop_timeout)"
            ) from None

    async def remove_container(self, container_id: str) -> None:
        ctr = self.containers.get(container_id)
        if ctr is None:
            return
        pod = self.pods.get(ctr.pod_sandbox_id)
        if pod is not None and pod.alive():
            if ctr.exit is None:
                await self.stop_container(container_id, 0)
            with contextlib.suppress(NotFoundError):
                await self._vm(pod).call("delete", container_id=container_id, force=True)
        ctr.close_log()
        busy = await release_mounts(ctr.mounts)
        if busy:
            log.warning("container %s: mounts still busy: %s", container_id, busy)

        def forget() -> None:
            shutil.rmtree(ctr.host_dir, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                (ctr.bundle / CONTAINER_STATE).unlink()

        await asyncio.to_thread(forget)
        if pod is not None:
            pod.forget(container_id)
        self.containers.pop(container_id, None)

    async def container_state(self, container_id: str) -> ContainerState:
        ctr = self.containers.get(container_id)
        if ctr is None:
            return ContainerState(
                state=State.UNKNOWN,
                reason="ContainerLost",
                message=f"runtime {self.handler_name} does not know container {container_id}",
            )
        return ctr.state()

    async def wait_container(self, container_id: str) -> ContainerState:
        ctr = self._get(container_id)
        await ctr.exited.wait()
        assert ctr.exit is not None
        return ctr.exit

    # -- inside running containers ---------------------------------------------------------

    def _running(self, container_id: str) -> tuple[VMContainer, VM]:
        ctr = self._get(container_id)
        if ctr.exit is not None or not ctr.started_at:
            raise OCIRuntimeError(f"container {container_id} is not running")
        return ctr, self._vm(self._pod(ctr.pod_sandbox_id))

    async def exec_sync(
        self, container_id: str, command: Sequence[str], timeout: float
    ) -> ExecResult:
        _, vm = self._running(container_id)
        try:
            result = await vm.run(list(command), container_id=container_id, timeout=timeout or None)
        except TimeoutError:
            raise DeadlineExceededError(
                f"ExecSync in container {container_id}: {command[0]} timed out after {timeout:g}s"
            ) from None
        return ExecResult(
            result.exit_code, result.stdout[:EXEC_SYNC_CAP], result.stderr[:EXEC_SYNC_CAP]
        )

    async def exec(self, container_id: str, command: Sequence[str], io: StreamIO) -> int:
        _, vm = self._running(container_id)
        return await exec_session(vm, container_id, list(command), io)

    async def attach(self, container_id: str, io: StreamIO) -> None:
        ctr, vm = self._running(container_id)
        await attach_session(vm, container_id, io, ctr.subscribe, ctr.exited, ctr.stdin_once)

    async def port_forward(self, pod_sandbox_id: str, port: int) -> tuple[Any, Any]:
        # The pod's network is the guest's: the agent connects there, on the loopback.
        return await open_port(self._vm(self._pod(pod_sandbox_id)), port, self._forwards)

    async def update_resources(self, container_id: str, resources: Mapping[str, Any]) -> None:
        _, vm = self._running(container_id)
        await vm.call("update", container_id=container_id, resources=dict(resources))

    async def reopen_log(self, container_id: str) -> None:
        ctr, _ = self._running(container_id)
        await asyncio.to_thread(ctr.open_log)

    async def container_stats(self, container_id: str) -> ContainerStats:
        ctr = self._get(container_id)
        pod = self.pods.get(ctr.pod_sandbox_id)
        if ctr.exit is not None or not ctr.started_at or pod is None or not pod.alive():
            return ContainerStats(timestamp=time.time_ns())
        return stats_from_agent(await self._vm(pod).call("stats", container_id=container_id))
