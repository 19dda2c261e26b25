"""The request converters, driven with generated CRI messages: a value or a CrioError, nothing else.

What the integration fuzz (tests/integration/test_fuzz_cri.py) does through a
real crio, done here without root and many times faster: the pure steps
between the proto and the runtime (container configs to OCI specs, pod
metadata, credentials, resources, port mappings, exec commands). Any other
exception would reach the kubelet as INTERNAL "internal error".
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crio.api import api_pb2 as api
from crio.errors import CrioError
from crio.oci.container import ImageConfig, PodContext, SpecDefaults
from crio.oci.runtime import NamespaceMode, PodNamespaces
from crio.oci.spec import build_spec
from crio.server import _cri_in
from crio.server.image_pull import credentials
from crio.server.sandbox_run import _validate as validate_pod
from support.protofuzz import messages

FUZZ = settings(
    max_examples=int(os.environ.get("CRIO_FUZZ_EXAMPLES", "1")) * 100,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)


def _pod(tmp: Path) -> PodContext:
    return PodContext(
        pod_sandbox_id="p" * 64,
        name="pod",
        namespace="ns",
        uid="uid",
        hostname="pod",
        namespaces=PodNamespaces(network="/run/netns/x", ipc="/run/ipcns/x", uts="/run/utsns/x"),
        network_mode=NamespaceMode.POD,
        pid_mode=NamespaceMode.CONTAINER,
        ipc_mode=NamespaceMode.POD,
        cgroup_parent="/crio/pod",
        files_dir=str(tmp / "files"),
        shm_path=str(tmp / "shm"),
    )


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rootfs")
    (root / "etc").mkdir()
    (root / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nuser1:x:1000:1000::/home/user1:/bin/sh\n"
    )
    (root / "etc" / "group").write_text("root:x:0:\nusers:x:100:\n")
    return root


@FUZZ
@given(config=messages(api.ContainerConfig, depth=5))
def test_container_configs_become_specs_or_errors(
    config: api.ContainerConfig, rootfs: Path
) -> None:
    try:
        request = _cri_in.container_request(config)
        spec = build_spec(
            container_id="c" * 64,
            request=request,
            image=ImageConfig(),
            pod=_pod(rootfs.parent),
            defaults=SpecDefaults(),
            rootfs=rootfs,
        )
    except CrioError:
        return
    assert spec["process"]["args"]
    assert Path(spec["root"]["path"]) == rootfs


@FUZZ
@given(config=messages(api.PodSandboxConfig, depth=5))
def test_pod_configs_are_validated_or_refused(config: api.PodSandboxConfig) -> None:
    try:
        validate_pod(config)
        _cri_in.port_mappings(list(config.port_mappings))
        _cri_in.dns_config(config.dns_config)
        for kind in ("network", "pid", "ipc"):
            _cri_in.namespace_mode(
                getattr(config.linux.security_context.namespace_options, kind), kind
            )
    except CrioError:
        return


@FUZZ
@given(auth=messages(api.AuthConfig))
def test_credentials_are_parsed_or_refused(auth: api.AuthConfig) -> None:
    try:
        credentials(auth)
    except CrioError:
        return


@FUZZ
@given(linux=messages(api.LinuxContainerResources))
def test_resources_are_parsed_or_refused(linux: api.LinuxContainerResources) -> None:
    try:
        _cri_in.resources(linux, "linux")
    except CrioError:
        return


@FUZZ
@given(cmd=st.lists(st.text(max_size=10) | st.sampled_from(["\0", "é" * 70_000, "a" * 5000])))
def test_exec_commands_fit_execve_or_are_refused(cmd: list[str]) -> None:
    try:
        _cri_in.argv(cmd, "cmd", "ExecSync")
    except CrioError as exc:
        assert "cmd" in str(exc)
        return
    assert all("\0" not in arg for arg in cmd)
    assert not cmd or len(cmd[0].encode()) <= _cri_in.PATH_MAX


def test_non_ascii_basic_auth_is_refused_naming_the_field() -> None:
    with pytest.raises(CrioError, match=r"auth\.auth"):
        credentials(api.AuthConfig(auth="ééé"))


@pytest.mark.parametrize(
    ("log_path", "words"),
    [
        ("é" * 70_000, "4096"),  # the fuzz's case: conmon's argv failed with E2BIG
        ("a/" * 2100, "4096"),
        ("d/" + "x" * 256 + ".log", "component of 260 bytes"),
    ],
)
def test_a_log_path_no_file_system_takes_is_refused_naming_the_field(
    log_path: str, words: str
) -> None:
    config = api.ContainerConfig(
        metadata=api.ContainerMetadata(name="c"),
        image=api.ImageSpec(image="busybox"),
        command=["true"],
        log_path=log_path,
    )
    with pytest.raises(CrioError, match=r"config\.log_path") as refused:
        _cri_in.container_request(config)
    assert words in str(refused.value)


def test_a_log_path_of_255_byte_names_is_taken() -> None:
    config = api.ContainerConfig(
        metadata=api.ContainerMetadata(name="c"),
        image=api.ImageSpec(image="busybox"),
        command=["true"],
        log_path="d/" + "x" * 251 + ".log",
    )
    assert _cri_in.container_request(config).log_path.endswith(".log")
