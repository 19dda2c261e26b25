"""The ``Runtime`` contract: what an OCI runtime plugin does for core.

A runtime is sandbox-aware: it owns the pod sandbox (runc: the pod's pinned
namespaces and cgroup; a VM runtime: the VM), and every container is created
inside one. Core never assumes that a container's processes are visible on
the host; everything it needs goes through these methods.

All methods are coroutines and must be safe to call concurrently for
different objects; core serialises calls on one pod or one container.
Failures are raised as :class:`crio.errors.CrioError` subclasses, usually
:class:`~crio.errors.OCIRuntimeError` carrying the runtime's stderr.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "ContainerSpec",
    "ContainerState",
    "ContainerStats",
    "ExclusivePaths",
    "ExecResult",
    "GarbageCollector",
    "InterfaceStats",
    "NamespaceMode",
    "PodNamespaces",
    "ProcessControl",
    "Runtime",
    "SandboxSpec",
    "SandboxStats",
    "State",
    "StreamIO",
]


class NamespaceMode(enum.Enum):
    """CRI ``NamespaceMode``: whose namespace a pod or container uses."""

    POD = 0
    CONTAINER = 1
    NODE = 2
    TARGET = 3


@dataclass(frozen=True, slots=True)
class PodNamespaces:
    """Paths of a pod's pinned namespaces; None where the pod uses the host's.

    ``shm`` is the directory containers get as /dev/shm (a tmpfs of the pod's
    own when it has a private IPC namespace); None means the host's /dev/shm.
    """

    network: str | None = None
    ipc: str | None = None
    uts: str | None = None
    pid: str | None = None
    shm: str | None = None


@dataclass(frozen=True, slots=True)
class SandboxSpec:
    """Everything a runtime needs to make a pod sandbox.

    ``run_dir`` is a directory of the pod's own (under crio's runroot) that
    the runtime may fill; it exists when :meth:`Runtime.create_sandbox` is
    called (core writes the pod's files there at the same time), and core
    removes it after :meth:`Runtime.remove_sandbox` returned.
    """

    pod_sandbox_id: str
    name: str
    namespace: str
    uid: str
    attempt: int
    hostname: str
    run_dir: Path
    log_directory: str = ""
    cgroup_parent: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    network_mode: NamespaceMode = NamespaceMode.POD
    pid_mode: NamespaceMode = NamespaceMode.CONTAINER
    ipc_mode: NamespaceMode = NamespaceMode.POD
    sysctls: Mapping[str, str] = field(default_factory=dict)
    privileged: bool = False
    #: Bytes of the pod's /dev/shm (the io.kubernetes.cri-o.ShmSize annotation, where its
    #: handler allows it); 0: the runtime's default. Only set at create.
    shm_size: int = 0
    #: ``pid_mode`` is POD and core runs no infra container of its own accord
    #: (``drop_infra_ctr``): the runtime may hold the pod's PID namespace with a process
    #: of its own and return the namespace as :attr:`PodNamespaces.pid`. Only set at create.
    hold_pid_namespace: bool = False


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    """A container to create inside ``pod_sandbox_id``.

    ``oci_spec`` is the OCI runtime-spec ``config.json`` that core built from
    the CRI request and the image, with host paths (``root.path`` is the
    mounted rootfs). A runtime that runs containers elsewhere (a VM)
    rewrites the paths it needs to. ``bundle`` is an empty directory of the
    container's own where the runtime writes config.json and its files.
    """

    container_id: str
    pod_sandbox_id: str
    name: str
    bundle: Path
    oci_spec: Mapping[str, Any]
    log_path: str = ""
    stdin: bool = False
    stdin_once: bool = False
    tty: bool = False
    annotations: Mapping[str, str] = field(default_factory=dict)
    #: The signal :meth:`Runtime.stop_container` sends first (the image's StopSignal).
    stop_signal: int = 15
    #: CRI ``security_context.privileged``. ``oci_spec`` already says what that
    #: means on the host (every capability, the host's /dev ...); a runtime that
    #: runs the container on another kernel gives it that kernel's devices instead.
    privileged: bool = False


class State(enum.Enum):
    """The runtime's view of one container."""

    CREATED = "created"
    RUNNING = "running"
    STOPPED = "stopped"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class ContainerState:
    """What :meth:`Runtime.container_state` reports.

    Times are nanoseconds since the epoch (CRI's unit); 0 means "not yet".
    ``reason`` is CRI's: "Completed", "Error", "OOMKilled", or a runtime's
    own explanation when the container was lost.
    """

    state: State
    pid: int = 0
    started_at: int = 0
    finished_at: int = 0
    exit_code: int = 0
    reason: str = ""
    message: str = ""
    #: RUNNING, but frozen (:meth:`ProcessControl.pause_container`); CRI still says running.
    paused: bool = False


@dataclass(frozen=True, slots=True)
class ExecResult:
    """The outcome of :meth:`Runtime.exec_sync`."""

    exit_code: int
    stdout: bytes = b""
    stderr: bytes = b""


@dataclass(frozen=True, slots=True)
class ContainerStats:
    """Resource use of one container (or pod) at ``timestamp`` (ns since the epoch).

    ``memory_limit_bytes`` is 0 when there is no limit. Counters are cumulative.
    """

    timestamp: int
    cpu_usage_core_nanoseconds: int = 0
    memory_working_set_bytes: int = 0
    memory_usage_bytes: int = 0
    oom_kill_count: int = 0
    memory_rss_bytes: int = 0
    memory_limit_bytes: int = 0
    page_faults: int = 0
    major_page_faults: int = 0
    swap_usage_bytes: int = 0
    process_count: int = 0
    #: Bytes read from and written to block devices (0 where the runtime cannot tell).
    block_read_bytes: int = 0
    block_write_bytes: int = 0


@dataclass(frozen=True, slots=True)
class InterfaceStats:
    """Cumulative counters of one network interface in the pod."""

    name: str
    rx_bytes: int = 0
    rx_errors: int = 0
    tx_bytes: int = 0
    tx_errors: int = 0


@dataclass(frozen=True, slots=True)
class SandboxStats:
    """Resource use of a whole pod: its cgroup and its network namespace.

    ``interfaces`` is empty for host-network pods (their traffic is the node's).
    """

    usage: ContainerStats
    interfaces: Sequence[InterfaceStats] = ()


class StreamIO(Protocol):
    """The client side of an exec or attach session, given by the streaming server.

    ``stdin`` yields the bytes the client sends and ends at its EOF (None
    when the client sent no stdin); ``resize`` yields (width, height) pairs.
    ``write_stdout``/``write_stderr`` deliver output to the client.
    """

    tty: bool
    stdin: AsyncIterator[bytes] | None
    resize: AsyncIterator[tuple[int, int]] | None

    async def write_stdout(self, data: bytes) -> None: ...

    async def write_stderr(self, data: bytes) -> None: ...


@runtime_checkable
class Runtime(Protocol):
    """One configured handler's runtime (what ``crio_runtime`` returns).

    Lifecycle of a pod: :meth:`create_sandbox` (namespaces exist afterwards;
    its result names the network namespace CNI must set up),
    network set-up by core, :meth:`start_sandbox`, containers,
    :meth:`stop_sandbox`, network tear-down, :meth:`remove_sandbox`.
    Stop and remove methods are idempotent: an object that is already
    stopped or gone is not an error.
    """

    #: True when :meth:`start_sandbox` ignores its ``network`` argument, so that core may
    #: start the sandbox while the network is set up (or before, and make its infra
    #: container meanwhile; runc: the namespaces are pinned already). False when the
    #: sandbox must be wired to the network before containers exist in it (a VM).
    sandbox_independent_of_network: bool

    async def start(self) -> None:
        """Called once when crio starts, before any other method: check the
        runtime's binaries and prepare directories. Core then hands back the
        pods and containers it recorded in an earlier run
        (:meth:`restore_sandbox`, :meth:`restore_container`)."""

    async def close(self) -> None:
        """Called once when crio stops. Containers keep running."""

    def ready(self) -> tuple[bool, str, str]:
        """RuntimeReady for this handler: (ready, reason, message); cheap, no I/O wait."""

    async def restore_sandbox(self, spec: SandboxSpec) -> PodNamespaces:
        """Re-attach, after a crio restart, to a pod made by :meth:`create_sandbox`.

        Called once per recorded pod of this handler, after :meth:`start` and
        before any container of the pod is restored. ``spec`` is rebuilt from
        core's record; the runtime reads back whatever it kept in ``run_dir``.
        Must not disturb the pod's processes.

        :returns: the pod's namespaces, as :meth:`create_sandbox` did.
        """

    async def restore_container(self, spec: ContainerSpec) -> ContainerState:
        """Re-attach, after a crio restart, to a container made by :meth:`create_container`.

        ``spec.oci_spec`` is empty: the runtime reads back what it wrote in
        ``spec.bundle``. A container that exited while crio was down reports
        its exit (code, finish time, reason); one whose monitor is gone
        reports STOPPED with a reason saying so. Never touches a running one.
        """

    def sandbox_ended(self, pod_sandbox_id: str) -> str:
        """Why the pod's sandbox can no longer hold containers, or "" while it can.

        A sandbox ends when the process or machine it depends on is gone: the
        pause process that holds a shared PID namespace, a pod's VM. Pinned
        namespaces alone never end. Core asks after :meth:`restore_sandbox`:
        a pod whose sandbox ended while crio was down (or while a
        StopPodSandbox was cut short) is stopped and reported NOTREADY, as
        the kubelet expects of a pod whose sandbox died. Cheap, no I/O wait.
        """

    async def create_sandbox(self, spec: SandboxSpec) -> PodNamespaces:
        """Create the pod's namespaces (pinned, no process needed) and cgroup.

        Which namespaces: network (with ``lo`` up) and UTS (with ``hostname``)
        unless ``network_mode`` is NODE; IPC (and a /dev/shm of the pod's own)
        unless ``ipc_mode`` is NODE. ``sysctls`` are set inside them; one that
        does not exist or cannot be set raises
        :class:`~crio.errors.InvalidRequestError` naming it. A PID namespace
        shared by the pod needs a process: with ``hold_pid_namespace`` the runtime
        may start one itself (runc: a pause process, no container) and return
        the namespace's path as ``pid``, which it keeps until :meth:`stop_sandbox`
        (and finds again in :meth:`restore_sandbox`); the namespace may become
        usable only once :meth:`start_sandbox` returned. When it returns no
        ``pid``, core runs an infra container for it. On failure nothing is
        left behind.

        :returns: the paths of the namespaces; ``network`` is where core runs CNI.
        """

    async def start_sandbox(self, pod_sandbox_id: str, network: Mapping[str, Any]) -> None:
        """Make the sandbox ready for containers once its network is set up (or while
        it is, with ``sandbox_independent_of_network``).

        :param network: what the network plugin reported (interfaces, IPs,
            routes, MACs), for runtimes that must wire a VM to it; empty for
            host-network pods.
        """

    async def stop_sandbox(self, pod_sandbox_id: str) -> None:
        """Kill every process of the pod (containers included, and the process that
        holds its PID namespace). Idempotent."""

    async def remove_sandbox(self, pod_sandbox_id: str) -> None:
        """Release the namespaces, cgroup and files of a stopped pod. Idempotent."""

    async def create_container(self, spec: ContainerSpec) -> None:
        """Create (not start) the container, with its monitor writing ``log_path``."""

    async def start_container(self, container_id: str) -> None:
        """Start the container's process."""

    async def stop_container(self, container_id: str, timeout: float) -> None:
        """Send ``ContainerSpec.stop_signal``, wait up to ``timeout`` seconds, then SIGKILL.

        Returns once the process has exited (its exit is recorded, so that
        :meth:`container_state` reports it). Idempotent.
        """

    async def remove_container(self, container_id: str) -> None:
        """Delete a stopped container from the runtime. Idempotent."""

    async def container_state(self, container_id: str) -> ContainerState:
        """Report the container's state; a lost container is STOPPED with a reason."""

    async def wait_container(self, container_id: str) -> ContainerState:
        """Return once the container's process has exited, with its final state.

        Returns at once for a container that already exited. Core keeps one
        waiter per started (or restored running) container and records the
        exit when it returns; cancelling the wait does not affect the container.
        """

    async def exec_sync(
        self, container_id: str, command: Sequence[str], timeout: float
    ) -> ExecResult:
        """Run ``command`` in the container and collect its output.

        The process gets the container's own process settings (user, env,
        cwd, capabilities) with ``command`` as its arguments and no terminal.
        ``timeout`` is in seconds, 0 means none; on timeout the process is
        killed and :class:`~crio.errors.DeadlineExceededError` is raised naming
        the timeout. Output is capped at 16 MiB.
        """

    async def exec(self, container_id: str, command: Sequence[str], io: StreamIO) -> int:
        """Run ``command`` attached to ``io``; return its exit code.

        The process is killed if the client goes away (``io.stdin`` raises or
        the coroutine is cancelled).
        """

    async def attach(self, container_id: str, io: StreamIO) -> None:
        """Connect ``io`` to the container's own stdio until the client detaches."""

    async def port_forward(self, pod_sandbox_id: str, port: int) -> tuple[Any, Any]:
        """Open a TCP connection to ``port`` inside the pod's network namespace.

        :returns: an ``(asyncio.StreamReader, asyncio.StreamWriter)`` pair.
        """

    async def update_resources(self, container_id: str, resources: Mapping[str, Any]) -> None:
        """Apply new limits; ``resources`` is an OCI ``linux.resources`` object."""

    async def reopen_log(self, container_id: str) -> None:
        """Make the monitor reopen the container's log file (after rotation)."""

    async def container_stats(self, container_id: str) -> ContainerStats:
        """Sample the container's resource use (zeros once it is gone)."""

    async def sandbox_stats(self, pod_sandbox_id: str) -> SandboxStats:
        """Sample the resource use of the whole pod (its cgroup and network)."""

    async def list_container_stats(
        self, container_ids: Sequence[str]
    ) -> Mapping[str, ContainerStats]:
        """Sample many containers at once, for ListContainerStats and ListPodSandboxStats.

        The kubelet asks for every container of the node every few seconds, so
        a runtime should gather them in one pass (runc: one worker thread reads
        every cgroup). Only what CRI reports must be filled in: CPU, memory,
        swap; block I/O and OOM kills may be 0 (:meth:`container_stats` has all).

        :returns: one sample per id the runtime knows (zeros for a stopped
            container); unknown ids are left out.
        """

    async def list_sandbox_stats(
        self, pod_sandbox_ids: Sequence[str]
    ) -> Mapping[str, SandboxStats]:
        """Sample many pods at once (cgroup, process count and network), as
        :meth:`list_container_stats` does for containers; one sample per id."""


@runtime_checkable
class GarbageCollector(Protocol):
    """What a :class:`Runtime` may also do: release what a crash left, by id.

    Optional: core calls it on the runtimes that have it (``isinstance``), at
    start-up and from ``crio check``.
    """

    async def collect_garbage(
        self,
        sandbox_ids: Collection[str],
        container_ids: Collection[str],
        dry_run: bool = False,
    ) -> list[str]:
        """Release what this runtime holds for pods and containers core does not know.

        Called at start-up once every recorded object is restored and every
        interrupted operation is finished (and by ``crio check``), with the
        ids of every pod and container crio knows, of every handler. What the
        runtime finds for other ids (monitor processes, its state directories,
        exit files, attach sockets, pinned namespaces) was left by a crash and
        is released, unless ``dry_run``. Never touches a known pod or container;
        several handlers may share directories (exits, namespaces), so only
        ids outside both collections count.

        :returns: one line per object released (or that would be), naming it
            and saying what it was.
        """


@runtime_checkable
class ProcessControl(Protocol):
    """What a :class:`Runtime` may also do to a container's processes (for kpod).

    Optional: kpod's ``kill``, ``pause``, ``unpause`` and ``exec`` with
    process settings use it on the runtimes that have it (``isinstance``)
    and report the others as unsupported. None of these change crio's
    records: a process killed by a signal exits as any other, and a paused
    container is still RUNNING to CRI (:attr:`ContainerState.paused` tells).
    """

    async def kill_container(self, container_id: str, signum: int) -> None:
        """Send ``signum`` to the container's init process (its exit is seen as usual).

        :raises WrongStateError: the container is not running.
        """

    async def pause_container(self, container_id: str) -> None:
        """Freeze every process of the running container (the cgroup freezer).

        A paused container still stops: :meth:`Runtime.stop_container` thaws
        it after signalling, so that the signal is delivered.
        :raises WrongStateError: the container is not running, or already paused.
        """

    async def resume_container(self, container_id: str) -> None:
        """Thaw a paused container. :raises WrongStateError: it is not paused."""

    async def exec_process(
        self,
        container_id: str,
        command: Sequence[str],
        io: StreamIO,
        process: Mapping[str, Any],
    ) -> int:
        """:meth:`Runtime.exec` with changes to the container's OCI ``process``.

        :param process: keys of an OCI ``process`` object that replace the
            container's own: ``env`` (the whole list), ``user``
            (``{"uid", "gid", "additionalGids"}``), ``cwd``.
        :returns: the exit code of ``command``.
        """


@runtime_checkable
class ExclusivePaths(Protocol):
    """What a :class:`Runtime` may also tell: the directories no other crio may share.

    Optional: core asks the runtimes that have it (``isinstance``) before it
    starts them.
    """

    def exclusive_paths(self) -> Mapping[str, str]:
        """The directories this runtime keeps its objects' state in, by the
        configuration key that names them (``crio.runtime.runtimes.NAME.runtime_root``).

        A serving crio (and ``crio check --repair``) holds an exclusive lock on
        each while it runs, and refuses to start when another crio holds one:
        otherwise one crio's clean-up would take the other's objects for
        leftovers. Cheap and without I/O; called before :meth:`Runtime.start`.
        """
