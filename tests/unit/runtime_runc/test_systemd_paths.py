"""The systemd cgroup manager's names and paths, and cgroup parents as RunPodSandbox takes them."""

from __future__ import annotations

import pytest

from crio.errors import InvalidRequestError
from crio.oci.spec import cgroups_path
from crio.server.sandbox_run import _check_cgroup_parent, default_cgroup_parent
from crio_plugins.runtime_runc._container import lists_cgroup
from crio_plugins.runtime_runc.systemd import cgroup_path, scope_name, slice_path


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("-.slice", "/"),
        ("system.slice", "/system.slice"),
        ("kubepods.slice", "/kubepods.slice"),
        (
            "kubepods-besteffort-pod123.slice",
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod123.slice",
        ),
    ],
)
def test_a_slice_name_encodes_its_parents(name: str, path: str) -> None:
    assert slice_path(name) == path
    assert cgroup_path(name) == path


def test_container_cgroups_path_in_a_slice_is_the_systemd_form() -> None:
    assert cgroups_path("kubepods-pod1.slice", "abc") == "kubepods-pod1.slice:crio:abc"
    assert cgroups_path("/kubepods/pod1", "abc") == "/kubepods/pod1/crio-abc"
    assert cgroup_path("kubepods-pod1.slice:crio:abc") == (
        "/kubepods.slice/kubepods-pod1.slice/crio-abc.scope"
    )
    assert cgroup_path("/kubepods/pod1/crio-abc") == "/kubepods/pod1/crio-abc"
    assert scope_name("crio-conmon", "abc") == "crio-conmon-abc.scope"


def test_process_membership_in_a_scope() -> None:
    proc = "0::/kubepods.slice/kubepods-pod1.slice/crio-abc.scope\n"
    assert lists_cgroup(proc, "kubepods-pod1.slice:crio:abc")
    assert not lists_cgroup(proc, "kubepods-pod1.slice:crio:abd")


@pytest.mark.parametrize(
    "parent",
    ["/kubepods/pod1", "kubepods.slice", "kubepods-besteffort-pod1.slice"],
)
def test_good_parents(parent: str) -> None:
    manager = "systemd" if parent.endswith(".slice") else "cgroupfs"
    _check_cgroup_parent(parent, manager)


@pytest.mark.parametrize(
    ("parent", "manager"),
    [
        ("kubepods-pod1.slice", "cgroupfs"),
        ("/kubepods/pod1", "systemd"),
        ("kubepods/x.slice", "systemd"),
        ("-kubepods.slice", "systemd"),
        ("kube--pods.slice", "systemd"),
        ("kubepods-.slice", "systemd"),
        ("a:b.slice", "systemd"),
        ("relative/path", "cgroupfs"),
    ],
)
def test_bad_parents_name_the_field(parent: str, manager: str) -> None:
    with pytest.raises(InvalidRequestError, match=r"config\.linux\.cgroup_parent"):
        _check_cgroup_parent(parent, manager)


def test_default_parents() -> None:
    assert default_cgroup_parent("cgroupfs", "ab" * 32) == "/crio/pod-" + "ab" * 32
    name = default_cgroup_parent("systemd", "ab" * 32)
    assert name == "crio-pod" + "ab" * 16 + ".slice"
    _check_cgroup_parent(name, "systemd")
