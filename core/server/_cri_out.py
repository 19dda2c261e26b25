"""crio's records as CRI reply messages."""

from __future__ import annotations

from crio.api import api_pb2 as api
from crio.oci.container import Resources
from crio.oci.runtime import NamespaceMode
from crio.state.records import ContainerRecord, ContainerState, SandboxRecord, SandboxState

__all__ = [
    "container",
    "container_attributes",
    "container_metadata",
    "container_state",
    "container_status",
    "linux_resources",
    "pod_metadata",
    "pod_sandbox",
    "pod_sandbox_state",
    "pod_sandbox_status",
]

_CONTAINER_STATES = {
    ContainerState.CREATED: api.CONTAINER_CREATED,
    ContainerState.RUNNING: api.CONTAINER_RUNNING,
    ContainerState.EXITED: api.CONTAINER_EXITED,
    ContainerState.UNKNOWN: api.CONTAINER_UNKNOWN,
}


def pod_sandbox_state(state: SandboxState) -> int:
    return api.SANDBOX_READY if state is SandboxState.READY else api.SANDBOX_NOTREADY


def container_state(state: ContainerState) -> int:
    return _CONTAINER_STATES[state]


def pod_metadata(pod: SandboxRecord) -> api.PodSandboxMetadata:
    return api.PodSandboxMetadata(
        name=pod.name, uid=pod.uid, namespace=pod.namespace, attempt=pod.attempt
    )


def pod_sandbox(pod: SandboxRecord) -> api.PodSandbox:
    return api.PodSandbox(
        id=pod.pod_sandbox_id,
        metadata=pod_metadata(pod),
        state=pod_sandbox_state(pod.state),
        created_at=pod.created_at,
        labels=pod.labels,
        annotations=pod.annotations,
        runtime_handler=pod.runtime_handler,
    )


def pod_sandbox_status(pod: SandboxRecord) -> api.PodSandboxStatus:
    network = api.PodSandboxNetworkStatus()
    if pod.ips and not pod.host_network:
        network = api.PodSandboxNetworkStatus(
            ip=pod.ips[0], additional_ips=[api.PodIP(ip=ip) for ip in pod.ips[1:]]
        )
    options = api.NamespaceOption(
        network=pod.network_mode.value, pid=pod.pid_mode.value, ipc=pod.ipc_mode.value
    )
    return api.PodSandboxStatus(
        id=pod.pod_sandbox_id,
        metadata=pod_metadata(pod),
        state=pod_sandbox_state(pod.state),
        created_at=pod.created_at,
        network=network,
        linux=api.LinuxPodSandboxStatus(namespaces=api.Namespace(options=options)),
        labels=pod.labels,
        annotations=pod.annotations,
        runtime_handler=pod.runtime_handler,
    )


def container_metadata(ctr: ContainerRecord) -> api.ContainerMetadata:
    return api.ContainerMetadata(name=ctr.name, attempt=ctr.attempt)


def _image_spec(ctr: ContainerRecord) -> api.ImageSpec:
    return api.ImageSpec(image=ctr.image, user_specified_image=ctr.user_specified_image)


def container(ctr: ContainerRecord) -> api.Container:
    return api.Container(
        id=ctr.container_id,
        pod_sandbox_id=ctr.pod_sandbox_id,
        metadata=container_metadata(ctr),
        image=_image_spec(ctr),
        image_ref=ctr.image_ref,
        state=container_state(ctr.state),
        created_at=ctr.created_at,
        labels=ctr.labels,
        annotations=ctr.annotations,
    )


def linux_resources(res: Resources) -> api.LinuxContainerResources:
    return api.LinuxContainerResources(
        cpu_period=res.cpu_period,
        cpu_quota=res.cpu_quota,
        cpu_shares=res.cpu_shares,
        memory_limit_in_bytes=res.memory_limit_in_bytes,
        oom_score_adj=res.oom_score_adj,
        cpuset_cpus=res.cpuset_cpus,
        cpuset_mems=res.cpuset_mems,
        hugepage_limits=[
            api.HugepageLimit(page_size=h.page_size, limit=h.limit) for h in res.hugepage_limits
        ],
        unified=res.unified,
        memory_swap_limit_in_bytes=res.memory_swap_limit_in_bytes,
    )


def container_status(ctr: ContainerRecord) -> api.ContainerStatus:
    return api.ContainerStatus(
        id=ctr.container_id,
        metadata=container_metadata(ctr),
        state=container_state(ctr.state),
        created_at=ctr.created_at,
        started_at=ctr.started_at,
        finished_at=ctr.finished_at,
        exit_code=ctr.exit_code,
        image=_image_spec(ctr),
        image_ref=ctr.image_ref,
        reason=ctr.reason,
        message=ctr.message,
        labels=ctr.labels,
        annotations=ctr.annotations,
        mounts=[
            api.Mount(
                container_path=m.container_path,
                host_path=m.host_path,
                readonly=m.readonly,
                selinux_relabel=m.selinux_relabel,
                propagation=m.propagation.value,
            )
            for m in ctr.mounts
        ],
        log_path=ctr.log_path,
        resources=api.ContainerResources(linux=linux_resources(ctr.resources)),
    )


def container_attributes(ctr: ContainerRecord) -> api.ContainerAttributes:
    return api.ContainerAttributes(
        id=ctr.container_id,
        metadata=container_metadata(ctr),
        labels=ctr.labels,
        annotations=ctr.annotations,
    )


def host_network(pod: SandboxRecord) -> bool:
    return pod.network_mode is NamespaceMode.NODE
