"""The CRI v1 descriptor matches the Kubernetes 1.29 api.proto, and the stubs are fresh.

The expected values below are written out from the upstream
``pkg/apis/runtime/v1/api.proto`` of k8s.io/cri-api v0.29.0, not read back from
crio's own proto, so a slip in the transcription fails here.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf.descriptor import FileDescriptor, ServiceDescriptor

from crio.api import api_pb2, api_pb2_grpc

REPO = Path(__file__).resolve().parents[3]

RUNTIME_SERVICE_RPCS = [
    "Version",
    "RunPodSandbox",
    "StopPodSandbox",
    "RemovePodSandbox",
    "PodSandboxStatus",
    "ListPodSandbox",
    "CreateContainer",
    "StartContainer",
    "StopContainer",
    "RemoveContainer",
    "ListContainers",
    "ContainerStatus",
    "UpdateContainerResources",
    "ReopenContainerLog",
    "ExecSync",
    "Exec",
    "Attach",
    "PortForward",
    "ContainerStats",
    "ListContainerStats",
    "PodSandboxStats",
    "ListPodSandboxStats",
    "UpdateRuntimeConfig",
    "Status",
    "CheckpointContainer",
    "GetContainerEvents",
    "ListMetricDescriptors",
    "ListPodSandboxMetrics",
    "RuntimeConfig",
]

IMAGE_SERVICE_RPCS = [
    "ListImages",
    "ImageStatus",
    "PullImage",
    "RemoveImage",
    "ImageFsInfo",
]

# (message, field, number) pairs the kubelet and crictl put on the wire.
FIELD_NUMBERS = [
    ("PodSandboxConfig", "metadata", 1),
    ("PodSandboxConfig", "log_directory", 3),
    ("PodSandboxConfig", "linux", 8),
    ("PodSandboxConfig", "windows", 9),
    ("RunPodSandboxRequest", "runtime_handler", 2),
    ("PodSandboxStatus", "runtime_handler", 9),
    ("PodSandboxStatusResponse", "containers_statuses", 3),
    ("PodSandboxStatusResponse", "timestamp", 4),
    ("Namespace", "options", 2),
    ("NamespaceOption", "userns_options", 5),
    ("Mount", "uidMappings", 6),
    ("Mount", "gidMappings", 7),
    ("LinuxSandboxSecurityContext", "run_as_group", 8),
    ("LinuxSandboxSecurityContext", "seccomp", 9),
    ("LinuxSandboxSecurityContext", "seccomp_profile_path", 7),
    ("LinuxContainerSecurityContext", "run_as_group", 12),
    ("LinuxContainerSecurityContext", "no_new_privs", 11),
    ("LinuxContainerSecurityContext", "seccomp", 15),
    ("LinuxContainerSecurityContext", "apparmor", 16),
    ("LinuxContainerResources", "unified", 9),
    ("LinuxContainerResources", "memory_swap_limit_in_bytes", 10),
    ("ContainerConfig", "metadata", 1),
    ("ContainerConfig", "log_path", 11),
    ("ContainerConfig", "linux", 15),
    ("ContainerConfig", "windows", 16),
    ("ContainerConfig", "CDI_devices", 17),
    ("CreateContainerRequest", "sandbox_config", 3),
    ("StopContainerRequest", "timeout", 2),
    ("ContainerStatus", "resources", 16),
    ("ExecSyncRequest", "timeout", 3),
    ("ImageSpec", "user_specified_image", 18),
    ("ImageSpec", "runtime_handler", 19),
    ("Image", "pinned", 8),
    ("PullImageRequest", "sandbox_config", 3),
    ("ImageFsInfoResponse", "container_filesystems", 2),
    ("ContainerStats", "swap", 5),
    ("ContainerEventResponse", "containers_statuses", 5),
    ("LinuxRuntimeConfiguration", "cgroup_driver", 1),
]

# (enum, value name, number), for top-level and nested enums.
ENUM_VALUES = [
    ("NamespaceMode", "TARGET", 3),
    ("MountPropagation", "PROPAGATION_BIDIRECTIONAL", 2),
    ("PodSandboxState", "SANDBOX_NOTREADY", 1),
    ("ContainerState", "CONTAINER_UNKNOWN", 3),
    ("ContainerEventType", "CONTAINER_DELETED_EVENT", 3),
    ("CgroupDriver", "CGROUPFS", 1),
    ("Protocol", "SCTP", 2),
    ("SecurityProfile.ProfileType", "Localhost", 2),
]


@pytest.fixture(scope="module")
def file_descriptor() -> FileDescriptor:
    return api_pb2.DESCRIPTOR


def _service(fd: FileDescriptor, name: str) -> ServiceDescriptor:
    return fd.services_by_name[name]


def test_package_and_module_path(file_descriptor: FileDescriptor) -> None:
    assert file_descriptor.package == "runtime.v1"
    # The stubs must import each other as crio.api.api_pb2 (see hack/genproto.py).
    assert file_descriptor.name == "crio/api/api.proto"
    assert api_pb2.VersionRequest.__module__ == "crio.api.api_pb2"


def test_service_names(file_descriptor: FileDescriptor) -> None:
    names = sorted(s.full_name for s in file_descriptor.services_by_name.values())
    assert names == ["runtime.v1.ImageService", "runtime.v1.RuntimeService"]


@pytest.mark.parametrize(
    ("service", "expected"),
    [("RuntimeService", RUNTIME_SERVICE_RPCS), ("ImageService", IMAGE_SERVICE_RPCS)],
)
def test_rpc_lists(file_descriptor: FileDescriptor, service: str, expected: list[str]) -> None:
    assert [m.name for m in _service(file_descriptor, service).methods] == expected


def test_rpc_io_types_follow_naming(file_descriptor: FileDescriptor) -> None:
    odd = {"GetContainerEvents": ("GetEventsRequest", "ContainerEventResponse")}
    for service in file_descriptor.services_by_name.values():
        for method in service.methods:
            expected = odd.get(method.name, (f"{method.name}Request", f"{method.name}Response"))
            assert (method.input_type.name, method.output_type.name) == expected


def test_streaming_kinds(file_descriptor: FileDescriptor) -> None:
    kinds = {
        method.name: (method.client_streaming, method.server_streaming)
        for service in file_descriptor.services_by_name.values()
        for method in service.methods
    }
    assert kinds.pop("GetContainerEvents") == (False, True)
    assert set(kinds.values()) == {(False, False)}


@pytest.mark.parametrize(("message", "field", "number"), FIELD_NUMBERS)
def test_field_numbers(
    file_descriptor: FileDescriptor, message: str, field: str, number: int
) -> None:
    descriptor = file_descriptor.message_types_by_name[message]
    assert descriptor.fields_by_name[field].number == number


@pytest.mark.parametrize(("enum", "value", "number"), ENUM_VALUES)
def test_enum_values(file_descriptor: FileDescriptor, enum: str, value: str, number: int) -> None:
    outer, _, nested = enum.partition(".")
    if nested:
        descriptor = file_descriptor.message_types_by_name[outer].enum_types_by_name[nested]
    else:
        descriptor = file_descriptor.enum_types_by_name[outer]
    assert descriptor.values_by_name[value].number == number


def test_deprecated_fields_are_marked(file_descriptor: FileDescriptor) -> None:
    messages = file_descriptor.message_types_by_name
    deprecated = {
        (name, field.name)
        for name, message in messages.items()
        for field in message.fields
        if field.GetOptions().deprecated
    }
    assert deprecated == {
        ("LinuxSandboxSecurityContext", "seccomp_profile_path"),
        ("LinuxContainerSecurityContext", "apparmor_profile"),
        ("LinuxContainerSecurityContext", "seccomp_profile_path"),
    }


def test_type_counts(file_descriptor: FileDescriptor) -> None:
    # 1.29 has 147 messages, 8 top-level enums and SecurityProfile.ProfileType;
    # a later CRI version adds to these, so a change here is a version change.
    assert len(file_descriptor.message_types_by_name) == 147
    assert sorted(file_descriptor.enum_types_by_name) == [
        "CgroupDriver",
        "ContainerEventType",
        "ContainerState",
        "MetricType",
        "MountPropagation",
        "NamespaceMode",
        "PodSandboxState",
        "Protocol",
    ]


def test_grpc_module_exposes_both_services() -> None:
    for service in ("RuntimeService", "ImageService"):
        assert hasattr(api_pb2_grpc, f"{service}Stub")
        assert hasattr(api_pb2_grpc, f"{service}Servicer")
        assert hasattr(api_pb2_grpc, f"add_{service}Servicer_to_server")


def test_committed_stubs_are_fresh() -> None:
    if importlib.util.find_spec("grpc_tools") is None:
        pytest.skip("grpc_tools is not installed (pip install -e '.[test]'): cannot regenerate")
    proc = subprocess.run(
        [sys.executable, str(REPO / "hack" / "genproto.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
