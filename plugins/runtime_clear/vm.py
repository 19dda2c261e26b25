"""The VM harness: boot a guest on the host's root, run commands in it, stop it.

Usable on its own (tests of other plugins boot a guest to run what the host
kernel cannot)::

    spec = VMSpec(run_dir=tmp / "vm", kernel=assets.kernel, initrd=assets.initrd)
    async with await VM.boot(spec) as vm:
        result = await vm.run(["uname", "-r"])
        print(result.exit_code, result.stdout)

:meth:`VM.boot` starts the supervisor (``supervisor.py``, its own session, so
it outlives crio), connects to the agent and waits for ``ready``. The
supervisor's death is the VM's death: :attr:`VM.died` resolves with its
``exit.json`` and every pending agent call fails with the reason.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crio.errors import CrioError, OCIRuntimeError, UnsupportedError
from crio_plugins.runtime_clear import _mounts, _wire
from crio_plugins.runtime_clear._initramfs import GUEST_SHARE
from crio_plugins.runtime_clear.accel import choose_accel, host_facts
from crio_plugins.runtime_clear.client import AgentClient, AgentError
from crio_plugins.runtime_clear.qemu import (
    NIC_PORTS,
    QemuSettings,
    hotplug_commands,
    qemu_argv,
)
from crio_plugins.runtime_clear.template import READY_SEQ, Template, TemplateSlot

__all__ = ["AGENT_FILES", "VM", "RunResult", "VMExit", "VMSpec", "find_supervisor", "start_vm"]

log = logging.getLogger("crio.runtime_clear")

HERE = Path(__file__).resolve().parent
#: What the guest runs as PID 1, copied into ``SHARE/.agent`` before each boot.
AGENT_FILES = (
    "agent.py",
    "_wire.py",
    "_guest_loop.py",
    "_guest_procs.py",
    "_guest_oci.py",
    "_guest_spec.py",
    "_guest_net.py",
    "_guest_restore.py",
    "_guest_rtnl.py",
)
AGENT_DIR = ".agent"
#: Stands for the restored VM's RAM file (the supervisor's memfd) in its qemu command line.
MEMORY_TOKEN = "@MEMORY@"
#: How long a broken agent channel waits for the supervisor's report of the VM's death.
DEATH_REPORT_GRACE = 3.0
#: How long a reattaching crio waits for the agent's answer on one connection, and in all.
#: A connection made while the guest had not yet seen the previous crio's go (a crash
#: and a quick restart, under load) can stay unanswered; a new one is a clean start.
REATTACH_ANSWER = 5.0
REATTACH_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class VMSpec:
    """One VM to boot.

    ``run_dir`` is the VM's private directory (sockets, logs, the mount point
    of the read-only root); ``share_dir`` (default ``run_dir/share``) appears
    in the guest at :data:`GUEST_SHARE`, read-write. With ``netns`` the VM
    boots in that network namespace, wired to its interfaces.
    """

    run_dir: Path
    kernel: Path
    initrd: Path
    accel: str = "auto"
    memory_mib: int = 512
    vcpus: int = 1
    share_dir: Path | None = None
    netns: str = ""
    hostname: str = ""
    qemu: str = "/usr/bin/qemu-system-x86_64"
    virtiofsd: str = "/usr/lib/qemu/virtiofsd"
    guest_python: str = "/usr/bin/python3"
    kernel_args: Sequence[str] = field(default_factory=tuple)
    #: More qemu arguments, e.g. a disk for the guest:
    #: ``("-drive", "file=F,if=none,id=d0,format=raw", "-device", "virtio-blk-device,drive=d0")``.
    qemu_args: Sequence[str] = field(default_factory=tuple)
    kill_grace: float = 5.0

    @property
    def share(self) -> Path:
        return self.share_dir or self.run_dir / "share"


@dataclass(frozen=True, slots=True)
class VMExit:
    """How a VM ended: qemu's status and why."""

    status: int
    reason: str
    finished_at: int


@dataclass(frozen=True, slots=True)
class RunResult:
    exit_code: int
    stdout: bytes
    stderr: bytes


def missing_tools(spec: VMSpec) -> str:
    """Why this host cannot boot ``spec``, or ""."""
    for what, path in (("qemu", spec.qemu), ("virtiofsd", spec.virtiofsd)):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            return f"{what} {path} is not an executable file"
    for what, path in (("kernel", spec.kernel), ("initrd", spec.initrd)):
        if not os.path.isfile(path):
            return f"{what} {path} does not exist"
    return ""


def _install_agent(share: Path) -> str:
    target = share / AGENT_DIR
    target.mkdir(parents=True, exist_ok=True)
    for name in AGENT_FILES:
        shutil.copyfile(HERE / name, target / name)
    return f"{GUEST_SHARE}/{AGENT_DIR}/agent.py"


class VM:
    """A booted guest and its agent."""

    def __init__(
        self, spec: VMSpec, accel: str, supervisor_pid: int, ended: Awaitable[int]
    ) -> None:
        self.spec = spec
        self.accel = accel
        self.name = spec.run_dir.name
        self._ended = ended
        self.supervisor_pid = supervisor_pid
        self.agent: AgentClient | None = None
        self.ready: dict[str, Any] = {}
        self.network: dict[str, Any] = {}
        self.boot_seconds = 0.0
        #: Made from a template (:meth:`restore`), not booted.
        self.restored = False
        #: Seconds from the start to each step of a restore (for bench/vm.py).
        self.steps: dict[str, float] = {}
        self.died: asyncio.Future[VMExit] = asyncio.get_running_loop().create_future()
        self._watch = asyncio.create_task(self._watch_death(), name=f"vm-{self.name}")

    # -- boot ----------------------------------------------------------------------

    @classmethod
    async def boot(cls, spec: VMSpec, timeout: float = 180.0) -> VM:
        """Start the VM and wait until its agent is ready.

        :raises UnsupportedError: ``accel = "kvm"`` where KVM cannot work.
        :raises OCIRuntimeError: the VM died or did not get ready in ``timeout``.
        """
        problem = missing_tools(spec)
        if problem:
            raise OCIRuntimeError(f"VM {spec.run_dir.name} cannot boot: {problem}")
        facts = host_facts()
        accel = choose_accel(spec.accel, facts)
        started = time.monotonic()
        _prepare_dirs(spec)
        settings = QemuSettings(
            qemu=spec.qemu,
            kernel=spec.kernel,
            initrd=spec.initrd,
            run_dir=spec.run_dir,
            accel=accel,
            memory_mib=spec.memory_mib,
            vcpus=spec.vcpus,
            tsc_khz=facts.tsc_khz,
            agent_path=_install_agent(spec.share),
            guest_python=spec.guest_python,
            kernel_args=tuple(spec.kernel_args),
        )
        config = _config(spec, [*qemu_argv(settings), *spec.qemu_args])
        return await cls._start(spec, accel, config, lambda vm: vm._attach(started), timeout)

    @classmethod
    async def restore(cls, spec: VMSpec, template: Template, timeout: float = 180.0) -> VM:
        """Start the VM from ``template`` (not a boot) and make it this pod's.

        ``spec``'s kernel, initrd, memory and vcpus are the template's; it may
        not add qemu arguments (a device the template lacks would be invisible
        to the restored guest).

        :raises UnsupportedError: ``spec.qemu_args`` were given.
        :raises OCIRuntimeError: the VM died or did not get ready in ``timeout``.
        """
        if spec.qemu_args:
            raise UnsupportedError(
                f"VM {spec.run_dir.name}: a VM from a template takes no extra qemu arguments"
            )
        problem = missing_tools(spec)
        if problem:
            raise OCIRuntimeError(f"VM {spec.run_dir.name} cannot start: {problem}")
        started = time.monotonic()
        _prepare_dirs(spec)
        config = _config(spec, template.argv(spec.run_dir, MEMORY_TOKEN))
        config["restore"] = {
            "memory_token": MEMORY_TOKEN,
            "memory": str(template.memory),
            "memory_bytes": template.spec.memory_mib << 20,
            "state": str(template.state),
            "hotplug": hotplug_commands(spec.run_dir),
            "nic_ports": list(NIC_PORTS),
            "timeout": timeout,
        }

        async def attach(vm: VM) -> None:
            vm.restored = True
            await vm._attach_restored(started, timeout)

        return await cls._start(spec, template.spec.accel, config, attach, timeout)

    @classmethod
    async def _start(
        cls,
        spec: VMSpec,
        accel: str,
        config: dict[str, Any],
        attach: Callable[[VM], Awaitable[None]],
        timeout: float,
    ) -> VM:
        (spec.run_dir / "vm.json").write_text(json.dumps(config, indent=1))
        try:
            popen = await asyncio.to_thread(_spawn_supervisor, spec.run_dir)
        except BaseException:
            _mounts.unmount(spec.share)
            raise
        vm = cls(spec, accel, popen.pid, _child_exit(popen))
        try:
            await asyncio.wait_for(attach(vm), timeout)
        except BaseException as exc:
            await vm.kill()
            await vm.release()
            if isinstance(exc, asyncio.TimeoutError):
                raise OCIRuntimeError(
                    f"VM {vm.name} was not ready after {timeout:.0f}s ({accel}); "
                    f"console: {_tail(spec.run_dir / 'console.log')}"
                ) from None
            raise
        return vm

    async def _attach(self, started: float) -> None:
        try:
            self.agent = await AgentClient.connect(
                self.spec.run_dir / "agent.sock", self.name, alive=lambda: not self.died.done()
            )
            self.ready = await asyncio.shield(self.agent.ready)
        except AgentError:
            await self._raise_if_dead("died while booting")
            raise
        self.boot_seconds = time.monotonic() - started
        await self._configure_network()

    async def _attach_restored(self, started: float, timeout: float) -> None:
        """Make the restored guest this pod's (see ``_guest_restore``), then its network."""
        network_file = self.spec.run_dir / "network.json"
        try:
            self.agent = await AgentClient.connect(
                self.spec.run_dir / "agent.sock", self.name, alive=lambda: not self.died.done()
            )
            self.steps["connected"] = time.monotonic() - started
            # The template's agent sent ``ready`` (and nothing after) to the host
            # that made it: the events of this VM come after that one.
            self.agent.last_seq = READY_SEQ
            if network_file.exists():  # written before qemu started
                self.network = json.loads(network_file.read_text())
            macs = [str(i["mac"]) for i in self.network.get("interfaces", [])]
            self.ready = await self.call(
                "restore",
                time_ns=time.time_ns(),
                entropy=base64.b64encode(os.urandom(64)).decode(),
                machine_id=uuid.uuid4().hex,
                share_dir=GUEST_SHARE,
                hostname=self.spec.hostname,
                macs=macs,
                timeout=timeout,
            )
            self.steps["restored"] = time.monotonic() - started
            await self.call("resume", after=READY_SEQ)
        except AgentError:
            await self._raise_if_dead("died while being restored")
            raise
        if self.network:
            await self.agent.call(
                "network", interfaces=self.network["interfaces"], routes=self.network["routes"]
            )
        self.boot_seconds = self.steps["ready"] = time.monotonic() - started
        with contextlib.suppress(OSError, ValueError):
            supervisor = json.loads((self.spec.run_dir / "supervisor.json").read_text())
            guest = self.ready.get("restore_seconds", 0)
            figures = supervisor.get("figures")
            log.debug("VM %s restored: %s; supervisor: %s; guest: %ss", self.name, self.steps,
                      figures, guest)  # fmt: skip

    async def _configure_network(self) -> None:
        assert self.agent is not None
        network_file = self.spec.run_dir / "network.json"
        if network_file.exists():
            self.network = json.loads(network_file.read_text())
            await self.agent.call(
                "network",
                interfaces=self.network["interfaces"],
                routes=self.network["routes"],
                hostname=self.spec.hostname,
            )
        elif self.spec.hostname:
            await self.agent.call("network", interfaces=[], hostname=self.spec.hostname)

    @classmethod
    async def reattach(
        cls,
        spec: VMSpec,
        accel: str,
        supervisor_pid: int,
        listener: Callable[[_wire.Event], None] | None = None,
        after_seq: int = 0,
    ) -> VM:
        """Take over a VM booted by an earlier crio (its supervisor is not our child).

        :param listener: gets the events the agent kept while nobody listened
            (they arrive at once), until the caller routes them itself.
        :param after_seq: the last event the previous crio handled: the agent
            sends the later ones it still keeps, and earlier ones are dropped.
        :raises OCIRuntimeError: the supervisor is gone or the agent does not answer.
        """
        try:
            pidfd = os.pidfd_open(supervisor_pid)
        except ProcessLookupError:
            raise OCIRuntimeError(f"VM {spec.run_dir.name}: its supervisor is gone") from None
        vm = cls(spec, accel, supervisor_pid, _pidfd_exit(pidfd))
        deadline = time.monotonic() + REATTACH_TIMEOUT
        try:
            while True:
                vm.agent = await AgentClient.connect(
                    spec.run_dir / "agent.sock",
                    vm.name,
                    alive=lambda: not vm.died.done(),
                    timeout=10,
                )
                vm.agent.default_listener = listener  # before the first event is read
                vm.agent.last_seq = after_seq
                try:
                    vm.ready = await asyncio.wait_for(vm.call("ping"), REATTACH_ANSWER)
                    break
                except TimeoutError:
                    after_seq = vm.agent.last_seq  # whatever this connection delivered
                    await vm.agent.close()
                    vm.agent = None
                    if time.monotonic() > deadline:
                        raise OCIRuntimeError(
                            f"VM {vm.name}: its agent did not answer in {REATTACH_TIMEOUT:g}s"
                        ) from None
                    log.warning(
                        "VM %s: no answer from its agent in %gs; connecting again",
                        vm.name,
                        REATTACH_ANSWER,
                    )
            resumed = await vm.call("resume", after=after_seq)
            log.debug("VM %s: resumed after event %d: %s", vm.name, after_seq, resumed)
            if not resumed["complete"]:
                log.warning("VM %s: events after %d were dropped by the agent", vm.name, after_seq)
        except BaseException:
            vm._watch.cancel()
            if vm.agent is not None:
                await vm.agent.close()
            raise
        network_file = spec.run_dir / "network.json"
        if network_file.exists():
            vm.network = json.loads(network_file.read_text())
        return vm

    async def _watch_death(self) -> None:
        status = await self._ended
        exit_file = self.spec.run_dir / "exit.json"
        try:
            info = json.loads(exit_file.read_text())
            result = VMExit(int(info["status"]), str(info["reason"]), int(info["finished_at"]))
        except (OSError, ValueError, KeyError):
            reason = f"its supervisor ended with status {status} and left no exit.json"
            result = VMExit(-1, reason, time.time_ns())
        log.info("VM %s ended: %s", self.name, result.reason)
        if self.agent is not None:
            self.agent.fail(OCIRuntimeError(f"VM {self.name} died: {result.reason}"))
        self.died.set_result(result)

    # -- use -----------------------------------------------------------------------

    def _agent(self) -> AgentClient:
        if self.agent is None:
            raise OCIRuntimeError(f"VM {self.name} has no agent connection")
        return self.agent

    async def call(self, op: str, **args: Any) -> dict[str, Any]:
        """One agent request; if the VM died meanwhile, the error says why."""
        try:
            return await self._agent().call(op, **args)
        except AgentError:
            await self._raise_if_dead()
            raise

    async def _raise_if_dead(self, what: str = "died") -> None:
        # A dying VM closes the agent channel a moment before its supervisor
        # has written why; wait briefly for the reason.
        with contextlib.suppress(TimeoutError):
            ended = await asyncio.wait_for(asyncio.shield(self.died), DEATH_REPORT_GRACE)
            raise OCIRuntimeError(f"VM {self.name} {what}: {ended.reason}") from None

    async def run(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | None = None,
        env: Sequence[str] = (),
        cwd: str = "",
        container_id: str = "",
        timeout: float | None = None,
    ) -> RunResult:
        """Run ``argv`` in the guest (or in ``container_id``), collecting its output.

        :raises TimeoutError: it ran longer than ``timeout``; it was killed.
        """
        agent = self._agent()
        exec_id = uuid.uuid4().hex
        out: dict[str, list[bytes]] = {"stdout": [], "stderr": []}

        def on_event(event: _wire.Event) -> None:
            if event.name == "output":
                out[event.data["stream"]].append(_wire.decode_data(event.data["data"]))

        agent.listen(("exec_id", exec_id), on_event)
        args: dict[str, Any] = {"exec_id": exec_id, "argv": list(argv), "stdin": stdin is not None}
        if env:
            args["env"] = list(env)
        if cwd:
            args["cwd"] = cwd
        if container_id:
            args["container_id"] = container_id
        try:
            await self.call("exec", **args)
            if stdin is not None:
                if stdin:
                    await self.call("stdin", exec_id=exec_id, data=_wire.encode_data(stdin))
                await self.call("close_stdin", exec_id=exec_id)
            try:
                done = await asyncio.wait_for(self.call("wait", exec_id=exec_id), timeout)
            except TimeoutError:
                with contextlib.suppress(CrioError):
                    await self.call("kill", exec_id=exec_id, signal=int(signal.SIGKILL))
                raise TimeoutError(
                    f"{argv[0]} ran longer than {timeout}s in VM {self.name}"
                ) from None
        finally:
            agent.unlisten(("exec_id", exec_id))
        return RunResult(done["exit_code"], b"".join(out["stdout"]), b"".join(out["stderr"]))

    # -- stop ----------------------------------------------------------------------

    async def shutdown(self, timeout: float = 30.0) -> VMExit:
        """Power the guest off through the agent; kill it if that does not work in time."""
        if not self.died.done() and self.agent is not None:
            with contextlib.suppress(CrioError, asyncio.TimeoutError):
                await asyncio.wait_for(self.agent.call("shutdown"), timeout)
        try:
            return await asyncio.wait_for(asyncio.shield(self.died), timeout)
        except TimeoutError:
            return await self.kill()

    async def kill(self) -> VMExit:
        """Have the supervisor kill qemu; wait for the VM's end."""
        if not self.died.done():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.supervisor_pid, signal.SIGTERM)
        return await asyncio.shield(self.died)

    async def release(self) -> None:
        """Close the agent channel and undo the host mounts (after the VM ended)."""
        if self.agent is not None:
            await self.agent.close()
        _mounts.unmount(self.spec.share)

    async def __aenter__(self) -> VM:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()
        await self.release()


async def start_vm(spec: VMSpec, slot: TemplateSlot | None, timeout: float) -> VM:
    """Restore the VM from the slot's template, or boot it (no template, or the restore failed)."""
    template = await slot.get() if slot is not None else None
    if template is not None:
        assert slot is not None
        try:
            return await VM.restore(spec, template, timeout=timeout)
        except CrioError as exc:
            log.error("VM %s: restoring it from the template failed (%s); VMs boot from now on",
                      spec.run_dir.name, exc)  # fmt: skip
            slot.broken(str(exc))
    return await VM.boot(spec, timeout=timeout)


def find_supervisor(run_dir: Path) -> int:
    """The pid of the supervisor of the VM in ``run_dir`` (a scan of /proc), or 0.

    For a VM whose start was cut short by a crash before its supervisor's pid
    was recorded: its command line names this run directory's ``vm.json``.
    """
    wanted = str(run_dir / "vm.json").encode()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            args = Path(entry.path, "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if wanted in args and any(arg.endswith(b"/supervisor.py") for arg in args):
            return int(entry.name)
    return 0


def _prepare_dirs(spec: VMSpec) -> None:
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    (spec.run_dir / "exit.json").unlink(missing_ok=True)
    spec.share.mkdir(parents=True, exist_ok=True)
    _mounts.make_shared(spec.share)


def _config(spec: VMSpec, qemu: list[str]) -> dict[str, Any]:
    """The supervisor's ``vm.json``."""
    return {
        "run_dir": str(spec.run_dir),
        "share_dir": str(spec.share),
        "virtiofsd": spec.virtiofsd,
        "netns": spec.netns,
        "kill_grace": spec.kill_grace,
        "qemu": qemu,
    }


def _spawn_supervisor(run_dir: Path) -> subprocess.Popen[bytes]:
    """Start the supervisor in a session of its own.

    A plain Popen rather than an asyncio subprocess: asyncio kills the
    children it still tracks when its loop closes, and a VM must outlive crio.
    """
    with open(run_dir / "supervisor.log", "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-I", str(HERE / "supervisor.py"), str(run_dir / "vm.json")],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )


async def _child_exit(popen: subprocess.Popen[bytes]) -> int:
    """Wait for our supervisor child to exit (through a pidfd) and reap it."""
    await _pidfd_exit(os.pidfd_open(popen.pid))
    return popen.wait()


async def _pidfd_exit(pidfd: int) -> int:
    """Wait until the process behind ``pidfd`` (not a child of ours) has exited."""
    loop = asyncio.get_running_loop()
    gone = loop.create_future()
    loop.add_reader(pidfd, lambda: gone.done() or gone.set_result(None))
    try:
        await gone
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
    return -1


def _tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(none)"
    return " | ".join(line for line in text.strip().splitlines()[-lines:]) or "(empty)"
