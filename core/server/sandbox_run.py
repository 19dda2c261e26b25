"""RunPodSandbox: namespaces, network, the pod's files, an infra container when needed."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import re
import shutil
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from crio.api import api_pb2 as api
from crio.errors import InvalidRequestError, UnavailableError
from crio.network import PodNetwork
from crio.oci import pod_annotations
from crio.oci.container import ContainerRequest, SecurityContext
from crio.oci.mounts import device_entries
from crio.oci.podfiles import (
    render_hostname,
    render_hosts,
    render_resolv_conf,
    validate_hostname,
)
from crio.oci.runtime import NamespaceMode
from crio.oci.sysctls import validate_sysctls
from crio.server import _cri_in
from crio.server._common import (
    Undo,
    begin_intent,
    both,
    new_id,
    runtime_of,
    sandbox_event,
    state_of,
)
from crio.server._containers import (
    allowed_annotations,
    find_stored_image,
    make_container,
    namespaces_with_pid,
)
from crio.server._lifecycle import spawn_exit_watch
from crio.server._restore import sandbox_spec
from crio.server.deps import Deps
from crio.state.intents import Intent, Operation
from crio.state.records import ContainerState, SandboxRecord, sandbox_name_key

if TYPE_CHECKING:
    from crio.config import RuntimeConfig

__all__ = [
    "HANDLER_FILE",
    "TRUSTED_SANDBOX_ANNOTATION",
    "choose_handler",
    "run_pod_sandbox",
    "sandbox_run_dir",
]

RPC = "RunPodSandbox"
#: A slice unit name (no "/"; the ":" of "SLICE:crio:ID" cgroups paths is not allowed either).
_SLICE = re.compile(r"^[A-Za-z0-9_.\\-]+\.slice$")
log = logging.getLogger("crio.server")
#: A file of the pod's run directory naming its runtime handler.
HANDLER_FILE = "runtime_handler"
TRUSTED_SANDBOX_ANNOTATION = "io.kubernetes.cri-o.TrustedSandbox"


def sandbox_run_dir(deps: Deps, pod_sandbox_id: str) -> Path:
    return Path(deps.config.crio.runroot) / "crio-sandboxes" / pod_sandbox_id


def choose_handler(
    runtime: RuntimeConfig, requested: str, annotations: Mapping[str, str], host_namespaces: bool
) -> str:
    """The handler for a pod: RuntimeClass's, else the 2017 trust rules, else the default.

    :param runtime: the ``[crio.runtime]`` table (its handlers and trust settings).
    :raises InvalidRequestError: an unknown handler, a TrustedSandbox value
        other than ``true`` or ``false``.
    """
    if requested:
        if requested not in runtime.runtimes:
            have = ", ".join(sorted(runtime.runtimes))
            raise InvalidRequestError(
                f"{RPC}: runtime_handler {requested!r} is not a configured handler (have: {have})"
            )
        return requested
    trusted = runtime.default_workload_trust == "trusted"
    value = annotations.get(TRUSTED_SANDBOX_ANNOTATION)
    if value is not None:
        if value.lower() not in ("true", "false"):
            raise InvalidRequestError(
                f"{RPC}: annotations[{TRUSTED_SANDBOX_ANNOTATION}]: {value!r} is not "
                "'true' or 'false'"
            )
        trusted = value.lower() == "true"
    if not trusted and not host_namespaces and runtime.runtime_untrusted_workload:
        return runtime.runtime_untrusted_workload
    return runtime.default_runtime


def _validate(config: api.PodSandboxConfig, cgroup_manager: str = "cgroupfs") -> None:
    if not config.HasField("metadata"):
        raise InvalidRequestError(f"{RPC}: config.metadata is missing")
    meta = config.metadata
    for field_name in ("name", "namespace", "uid"):
        _cri_in.require(getattr(meta, field_name), f"config.metadata.{field_name}", RPC)
    for field_name in ("name", "namespace", "uid"):
        if "/" in getattr(meta, field_name):
            raise InvalidRequestError(f"{RPC}: config.metadata.{field_name} contains '/'")
    if config.log_directory and not config.log_directory.startswith("/"):
        raise InvalidRequestError(
            f"{RPC}: config.log_directory {config.log_directory!r} is not an absolute path"
        )
    _cri_in.file_path(config.log_directory, "config.log_directory", RPC)
    _check_cgroup_parent(config.linux.cgroup_parent, cgroup_manager)


def _check_cgroup_parent(parent: str, manager: str) -> None:
    """cgroupfs wants an absolute path; systemd a slice name (systemd.slice(5))."""
    if not parent:
        return
    if manager == "systemd":
        stem = parent.removesuffix(".slice")
        if (
            not _SLICE.fullmatch(parent)
            or stem.startswith("-")
            or "--" in stem
            or stem.endswith("-")
        ):
            raise InvalidRequestError(
                f"{RPC}: config.linux.cgroup_parent {parent!r} is not a systemd slice name "
                "such as 'kubepods-besteffort-pod123.slice' (cgroup_manager is systemd)"
            )
    elif not parent.startswith("/") or ".." in parent.split("/"):
        raise InvalidRequestError(
            f"{RPC}: config.linux.cgroup_parent {parent!r} is not an absolute cgroupfs path"
            + (" (cgroup_manager is cgroupfs)" if parent.endswith(".slice") else "")
        )


def default_cgroup_parent(manager: str, pod_id: str) -> str:
    """Where a pod goes when the kubelet names no parent."""
    if manager == "systemd":
        return f"crio-pod{pod_id[:32]}.slice"
    return f"/crio/pod-{pod_id}"


def _files(pod: SandboxRecord, dns: api.DNSConfig) -> dict[str, bytes]:
    if dns.servers or dns.searches or dns.options:
        resolv = render_resolv_conf(dns.servers, dns.searches, dns.options)
    else:
        try:
            resolv = Path("/etc/resolv.conf").read_bytes()
        except OSError:
            resolv = b""
    if pod.host_network:
        try:
            hosts = Path("/etc/hosts").read_bytes()
        except OSError:
            hosts = render_hosts(pod.hostname)
    else:
        hosts = render_hosts(pod.hostname, pod.ips)
    return {
        "hostname": render_hostname(pod.hostname),
        "hosts": hosts,
        "resolv.conf": resolv,
        # Which runtime made the pod, for releasing it should its record be lost.
        HANDLER_FILE: pod.runtime_handler.encode(),
    }


def _make_run_dir(run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True, mode=0o711)


def _write_files(run_dir: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (run_dir / name).write_bytes(data)
        os.chmod(run_dir / name, 0o644)


def _record(deps: Deps, req: api.RunPodSandboxRequest, pod_id: str, handler: str) -> SandboxRecord:
    config = req.config
    sec = config.linux.security_context
    ns = sec.namespace_options
    modes = {
        kind: _cri_in.namespace_mode(getattr(ns, kind), f"namespace_options.{kind}")
        for kind in ("network", "pid", "ipc")
    }
    for kind, mode in modes.items():
        if mode is NamespaceMode.TARGET:
            raise InvalidRequestError(
                f"{RPC}: config.linux.security_context.namespace_options.{kind}: "
                "TARGET is not valid for a pod"
            )
    host_network = modes["network"] is NamespaceMode.NODE
    hostname = config.hostname
    if host_network:
        hostname = hostname or socket.gethostname()
    else:
        hostname = hostname or config.metadata.name[:63]
    validate_hostname(hostname, f"{RPC}: config.hostname")
    sysctls = dict(config.linux.sysctls)
    for item in deps.config.crio.runtime.default_sysctls:
        key, _, value = item.partition("=")
        sysctls.setdefault(key, value)
    validate_sysctls(
        sysctls, host_network=host_network, host_ipc=modes["ipc"] is NamespaceMode.NODE
    )
    return SandboxRecord(
        pod_sandbox_id=pod_id,
        name=config.metadata.name,
        namespace=config.metadata.namespace,
        uid=config.metadata.uid,
        attempt=config.metadata.attempt,
        runtime_handler=handler,
        created_at=deps.clock(),
        run_dir=str(sandbox_run_dir(deps, pod_id)),
        hostname=hostname,
        log_directory=config.log_directory,
        cgroup_parent=config.linux.cgroup_parent
        or default_cgroup_parent(deps.config.crio.runtime.cgroup_manager, pod_id),
        labels=dict(config.labels),
        annotations=dict(config.annotations),
        network_mode=modes["network"],
        pid_mode=modes["pid"],
        ipc_mode=modes["ipc"],
        port_mappings=_cri_in.port_mappings(list(config.port_mappings)),
        dns=_cri_in.dns_config(config.dns_config),
        sysctls=sysctls,
        privileged=sec.privileged,
    )


def pod_network(pod: SandboxRecord) -> PodNetwork:
    return PodNetwork(
        pod_sandbox_id=pod.pod_sandbox_id,
        name=pod.name,
        namespace=pod.namespace,
        uid=pod.uid,
        netns_path=pod.namespaces.network or "",
        port_mappings=pod.port_mappings,
        annotations=dict(pod.annotations),
    )


async def _start_infra(deps: Deps, pod: SandboxRecord, undo: Undo) -> SandboxRecord:
    """Run the pause container (pulled first if the store lacks it); the pod's PID ns is its."""
    image = deps.config.crio.image
    if await find_stored_image(deps, image.pause_image) is None:
        log.info("pulling the pause image %s", image.pause_image)
        from crio.server.image_pull import pull_image  # the pull machinery, on first need

        # pause_image_auth_file, when set, stands in for global_auth_file (as in CRI-O).
        auth = (image.pause_image_auth_file,) if image.pause_image_auth_file else None
        request = api.PullImageRequest(image=api.ImageSpec(image=image.pause_image))
        await pull_image(deps, request, auth_files=auth)
    infra_id = new_id()
    request = ContainerRequest(
        name="POD",
        attempt=pod.attempt,
        image=image.pause_image,
        command=(image.pause_command,),
        security=SecurityContext(
            pid=NamespaceMode.CONTAINER if pod.pid_mode is not NamespaceMode.NODE else pod.pid_mode,
            readonly_rootfs=True,
            no_new_privs=True,
            privileged=False,
        ),
    )
    key = sandbox_name_key(pod.name, pod.namespace, pod.uid, pod.attempt) + "_infra"
    record = await make_container(
        deps,
        pod,
        request,
        infra_id,
        key,
        undo,
        infra=True,
        image_field=f"{RPC}: the infra container's crio.image.pause_image",
    )
    runtime = runtime_of(deps, pod.runtime_handler)
    await runtime.start_container(infra_id)
    status = await runtime.container_state(infra_id)
    record = dataclasses.replace(
        record, state=ContainerState.RUNNING, started_at=status.started_at, pid=status.pid
    )
    await state_of(deps).save_container(record)
    state_of(deps).end(infra_id)
    undo.push("the infra record", lambda: state_of(deps).remove_container(infra_id))
    spawn_exit_watch(deps, record)
    namespaces = pod.namespaces
    if pod.pid_mode is NamespaceMode.POD:
        namespaces = namespaces_with_pid(namespaces, status.pid)
    return dataclasses.replace(pod, namespaces=namespaces, infra_container_id=infra_id)


async def _network(
    deps: Deps, pod: SandboxRecord, undo: Undo
) -> tuple[SandboxRecord, dict[str, object]]:
    """Attach a pod with a network of its own (CNI ADD): its IPs, hosts file and the
    plugin's result for the runtime; host-network pods are left as they are."""
    if pod.host_network:
        return pod, {}
    network = deps.network
    if network is None:
        raise UnavailableError(
            f"{RPC}: pod {pod.name_key} needs a pod network, and there is none: "
            f"{deps.network_error or 'no network plugin'}"
        )
    attached = pod_network(pod)
    status = await network.setup(attached)
    undo.push("the pod network", lambda: network.teardown(attached))
    pod = dataclasses.replace(pod, ips=tuple(status.ips))
    hosts = render_hosts(pod.hostname, pod.ips)
    await asyncio.to_thread((Path(pod.run_dir) / "hosts").write_bytes, hosts)
    return pod, dict(status.result)


def _needs_infra(deps: Deps, pod: SandboxRecord) -> bool:
    """An infra container: when configured (drop_infra_ctr = false), or for a shared PID
    namespace that the runtime did not take on itself."""
    shared_pid = pod.pid_mode is NamespaceMode.POD and not pod.namespaces.pid
    return not deps.config.crio.runtime.drop_infra_ctr or shared_pid


async def _network_and_infra(deps: Deps, pod: SandboxRecord, undo: Undo) -> SandboxRecord:
    """The pod's network, the runtime's start of the sandbox, and its infra container.

    An infra container is made while CNI runs when the runtime's sandbox does not
    wait for the network (runc: the namespaces are pinned already); otherwise
    (a VM wired to the pod's interfaces) one after the other.
    """
    runtime = runtime_of(deps, pod.runtime_handler)
    infra = _needs_infra(deps, pod)
    if infra and runtime.sandbox_independent_of_network:
        await runtime.start_sandbox(pod.pod_sandbox_id, {})
        (networked, _), with_infra = await both(
            _network(deps, pod, undo), _start_infra(deps, pod, undo)
        )
        return dataclasses.replace(with_infra, ips=networked.ips)
    if runtime.sandbox_independent_of_network:
        # Its start (runc: the pod's pause process) and CNI run at the same time.
        (networked, _), _ = await both(
            _network(deps, pod, undo), runtime.start_sandbox(pod.pod_sandbox_id, {})
        )
        return networked
    pod, result = await _network(deps, pod, undo)
    await runtime.start_sandbox(pod.pod_sandbox_id, result)
    return await _start_infra(deps, pod, undo) if infra else pod


async def run_pod_sandbox(deps: Deps, req: api.RunPodSandboxRequest) -> api.RunPodSandboxResponse:
    if not req.HasField("config"):
        raise InvalidRequestError(f"{RPC}: config is missing")
    config = req.config
    _validate(config, deps.config.crio.runtime.cgroup_manager)
    ns = config.linux.security_context.namespace_options
    host_namespaces = api.NODE in (ns.network, ns.pid, ns.ipc)
    handler = choose_handler(
        deps.config.crio.runtime, req.runtime_handler, config.annotations, host_namespaces
    )
    runtime = runtime_of(deps, handler)
    allowed = allowed_annotations(deps, handler, config.annotations)
    shm_size = pod_annotations.shm_size(allowed)  # bad values: refused before anything is made
    try:
        device_entries(pod_annotations.devices(allowed))  # the nodes exist and are devices
    except InvalidRequestError as exc:
        raise InvalidRequestError(f"{RPC}: annotations[{pod_annotations.DEVICES}]: {exc}") from None
    state = state_of(deps)
    pod_id = new_id()
    pod = _record(deps, req, pod_id, handler)
    state.reserve_name(pod.name_key, pod_id)
    undo = Undo(f"pod sandbox {pod_id}")
    try:
        # Before anything is made: a crash from here on is rolled back at the next start.
        await begin_intent(deps, Intent(Operation.RUN_POD_SANDBOX, sandbox=pod), undo)
        run_dir = Path(pod.run_dir)
        undo.push("the run directory", lambda: asyncio.to_thread(shutil.rmtree, run_dir, True))
        # Made before the runtime is called: it keeps its own records in there
        # (SandboxSpec.run_dir exists), while the pod's files are written beside them.
        await asyncio.to_thread(_make_run_dir, run_dir)
        # The pod's files and its namespaces do not depend on each other.
        files = asyncio.ensure_future(
            asyncio.to_thread(lambda: _write_files(run_dir, _files(pod, config.dns_config)))
        )
        try:
            hold_pid = deps.config.crio.runtime.drop_infra_ctr and pod.pid_mode is NamespaceMode.POD
            spec = dataclasses.replace(
                sandbox_spec(pod), shm_size=shm_size, hold_pid_namespace=hold_pid
            )
            namespaces = await runtime.create_sandbox(spec)
            undo.push("the runtime's sandbox", lambda: runtime.remove_sandbox(pod_id))
        finally:
            await files
        pod = dataclasses.replace(pod, namespaces=namespaces)
        pod = await _network_and_infra(deps, pod, undo)
        await state.save_sandbox(pod)
    except BaseException:
        await undo.unwind()
        state.release_name(pod.name_key, pod_id)
        raise
    state.end(pod_id)
    deps.plugins.notify("crio_sandbox_created", sandbox=sandbox_event(pod))
    return api.RunPodSandboxResponse(pod_sandbox_id=pod_id)
