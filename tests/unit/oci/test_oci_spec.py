"""config.json generation from CRI requests, on a real rootfs directory."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest

from crio.errors import ConfigError, InvalidRequestError
from crio.oci.caps import ALL_CAPABILITIES
from crio.oci.container import (
    Capabilities,
    ContainerRequest,
    Device,
    ImageConfig,
    Mount,
    PodContext,
    ProfileType,
    Propagation,
    Resources,
    SecurityContext,
    SecurityProfile,
    SpecDefaults,
)
from crio.oci.mounts import MountPoint
from crio.oci.runtime import NamespaceMode, PodNamespaces
from crio.oci.spec import build_spec, container_args, parse_rlimits, parse_signal

NS = PodNamespaces(
    network="/run/ns/net/p", ipc="/run/ns/ipc/p", uts="/run/ns/uts/p", shm="/run/p/shm"
)


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"
    )
    (root / "etc" / "group").write_text("root:x:0:\napp:x:1000:\nvideo:x:44:app,other\n")
    return root


def pod(**changes: Any) -> PodContext:
    fields: dict[str, Any] = {
        "pod_sandbox_id": "p" * 64,
        "name": "web",
        "namespace": "ns",
        "uid": "u",
        "hostname": "web-1",
        "namespaces": NS,
        "network_mode": NamespaceMode.POD,
        "pid_mode": NamespaceMode.CONTAINER,
        "ipc_mode": NamespaceMode.POD,
        "cgroup_parent": "/kubepods/pod1",
        "files_dir": "/run/p",
        "shm_path": "/run/p/shm",
    }
    fields.update(changes)
    return PodContext(**fields)


def spec(
    rootfs: Path,
    image: ImageConfig | None = None,
    pod_ctx: PodContext | None = None,
    defaults: SpecDefaults | None = None,
    **request: Any,
) -> dict[str, Any]:
    request.setdefault("name", "c")
    request.setdefault("command", ("sleep", "1"))
    return build_spec(
        container_id="c" * 64,
        request=ContainerRequest(**request),
        image=image or ImageConfig(),
        pod=pod_ctx or pod(),
        defaults=defaults or SpecDefaults(),
        rootfs=rootfs,
        mountinfo=[MountPoint("/", shared=False, slave=False)],
    )


@pytest.mark.parametrize(
    ("command", "args", "entrypoint", "cmd", "expected"),
    [
        ((), (), ("/ep",), ("a",), ["/ep", "a"]),
        (("/bin/x",), (), ("/ep",), ("a",), ["/bin/x"]),
        (("/bin/x",), ("1",), ("/ep",), ("a",), ["/bin/x", "1"]),
        ((), ("1",), ("/ep",), ("a",), ["/ep", "1"]),
        ((), ("1",), (), ("a",), ["1"]),
    ],
)
def test_command_rules(
    command: tuple, args: tuple, entrypoint: tuple, cmd: tuple, expected: list[str]
) -> None:
    request = ContainerRequest(name="c", command=command, args=args)
    assert container_args(request, ImageConfig(entrypoint=entrypoint, cmd=cmd)) == expected


def test_no_command_anywhere(rootfs: Path) -> None:
    with pytest.raises(InvalidRequestError, match="command"):
        spec(rootfs, command=())


def test_process_env_user_and_cwd(rootfs: Path) -> None:
    image = ImageConfig(user="app", env=("A=image", "B=image"), working_dir="/work")
    out = spec(
        rootfs,
        image,
        envs=(("B", "request"),),
        tty=True,
        defaults=SpecDefaults(env=("A=default", "Z=1")),
    )
    process = out["process"]
    env = dict(e.split("=", 1) for e in process["env"])
    assert env["A"] == "image" and env["B"] == "request" and env["Z"] == "1"
    assert env["HOSTNAME"] == "web-1" and env["HOME"] == "/home/app" and env["TERM"] == "xterm"
    assert env["PATH"].startswith("/usr/local/sbin")
    assert process["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [44]}
    assert process["cwd"] == "/work" and (rootfs / "work").is_dir()
    assert process["terminal"] is True
    assert process["rlimits"] == [{"type": "RLIMIT_NOFILE", "soft": 20000, "hard": 20000}]


def test_user_settings_of_the_request_win(rootfs: Path) -> None:
    security = SecurityContext(run_as_user=1000, run_as_group=7, supplemental_groups=(9, 7))
    out = spec(rootfs, ImageConfig(user="root"), security=security)
    assert out["process"]["user"] == {"uid": 1000, "gid": 7, "additionalGids": [44, 9]}
    unknown_uid = spec(rootfs, security=SecurityContext(run_as_user=4321))
    assert unknown_uid["process"]["user"] == {"uid": 4321, "gid": 0}
    with pytest.raises(InvalidRequestError, match="run_as_username: user 'ghost'"):
        spec(rootfs, security=SecurityContext(run_as_username="ghost"))
    with pytest.raises(InvalidRequestError, match="image config User: user 'ghost'"):
        spec(rootfs, ImageConfig(user="ghost"))
    numeric = spec(rootfs, ImageConfig(user="55:66"))
    assert numeric["process"]["user"] == {"uid": 55, "gid": 66}


def test_passwd_symlinked_out_of_the_rootfs_is_read_inside_it(rootfs: Path) -> None:
    (rootfs / "etc" / "passwd").unlink()
    (rootfs / "etc" / "shadowed").write_text("root:x:0:0::/r:/bin/sh\n")
    os.symlink("/etc/../../../etc/shadowed", rootfs / "etc" / "passwd")
    out = spec(rootfs, ImageConfig(user="root"))
    assert out["process"]["env"].count("HOME=/r") == 1  # the rootfs's file, not the host's


def test_capabilities_and_their_errors(rootfs: Path) -> None:
    caps = Capabilities(add_capabilities=("net_admin",), drop_capabilities=("CAP_KILL",))
    out = spec(rootfs, security=SecurityContext(capabilities=caps))
    bounding = out["process"]["capabilities"]["bounding"]
    assert "CAP_NET_ADMIN" in bounding and "CAP_KILL" not in bounding
    assert out["process"]["capabilities"]["inheritable"] == []
    everything = Capabilities(add_capabilities=("ALL",), drop_capabilities=("CHOWN",))
    limited = SpecDefaults(available_capabilities=ALL_CAPABILITIES[:24])
    out = spec(rootfs, security=SecurityContext(capabilities=everything), defaults=limited)
    assert out["process"]["capabilities"]["effective"] == list(ALL_CAPABILITIES[1:24])
    with pytest.raises(InvalidRequestError, match=r"add_capabilities\[0\]: unknown capability"):
        spec(rootfs, security=SecurityContext(capabilities=Capabilities(("FLY",))))
    with pytest.raises(InvalidRequestError, match="CAP_SYS_RESOURCE is not available"):
        spec(
            rootfs,
            defaults=limited,
            security=SecurityContext(capabilities=Capabilities(("SYS_RESOURCE",))),
        )


def test_namespaces_follow_the_pod(rootfs: Path) -> None:
    out = spec(rootfs)
    namespaces = {n["type"]: n.get("path") for n in out["linux"]["namespaces"]}
    assert namespaces == {
        "mount": None,
        "network": NS.network,
        "uts": NS.uts,
        "ipc": NS.ipc,
        "pid": None,
    }
    assert out["hostname"] == "web-1"
    host = pod(
        network_mode=NamespaceMode.NODE, ipc_mode=NamespaceMode.NODE, pid_mode=NamespaceMode.NODE
    )
    out = spec(rootfs, pod_ctx=host, security=SecurityContext(pid=NamespaceMode.POD))
    assert [n["type"] for n in out["linux"]["namespaces"]] == ["mount"]
    assert "hostname" not in out
    shared = pod(
        namespaces=dataclasses.replace(NS, pid="/proc/7/ns/pid"), pid_mode=NamespaceMode.POD
    )
    out = spec(rootfs, pod_ctx=shared, security=SecurityContext(pid=NamespaceMode.POD))
    assert {"type": "pid", "path": "/proc/7/ns/pid"} in out["linux"]["namespaces"]
    target = build_spec(
        container_id="c",
        request=ContainerRequest(
            name="c",
            command=("x",),
            security=SecurityContext(pid=NamespaceMode.TARGET, target_id="t"),
        ),
        image=ImageConfig(),
        pod=pod(),
        defaults=SpecDefaults(),
        rootfs=rootfs,
        target_pid=99,
    )
    assert {"type": "pid", "path": "/proc/99/ns/pid"} in target["linux"]["namespaces"]
    assert out["linux"]["cgroupsPath"] == "/kubepods/pod1/crio-" + "c" * 64


def test_mounts_defaults_overrides_order_and_readonly(rootfs: Path, tmp_path: Path) -> None:
    hosts = tmp_path / "kubelet-hosts"
    hosts.write_text("")
    mounts = (
        Mount("/etc/hosts", str(hosts)),
        Mount("/data/deep", str(tmp_path), readonly=True),
        Mount("/data", str(tmp_path)),
    )
    out = spec(rootfs, mounts=mounts, security=SecurityContext(readonly_rootfs=True))
    by_dest = {m["destination"]: m for m in out["mounts"]}
    assert by_dest["/etc/hosts"]["source"] == str(hosts)  # the kubelet's file wins
    assert by_dest["/etc/resolv.conf"]["source"] == "/run/p/resolv.conf"
    assert "ro" in by_dest["/etc/resolv.conf"]["options"]
    assert by_dest["/dev/shm"]["source"] == "/run/p/shm"
    assert by_dest["/data/deep"]["options"] == ["rbind", "rprivate", "ro"]
    destinations = [m["destination"] for m in out["mounts"]]
    assert destinations.index("/data") < destinations.index("/data/deep")
    assert destinations.index("/dev") < destinations.index("/dev/shm")
    assert out["root"] == {"path": str(rootfs), "readonly": True}
    assert "ro" in by_dest["/sys"]["options"]


def test_mount_errors_name_the_field(rootfs: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match=r"mounts\[0\].host_path: /no/such"):
        spec(rootfs, mounts=(Mount("/x", "/no/such"),))
    with pytest.raises(InvalidRequestError, match=r"mounts\[0\].container_path"):
        spec(rootfs, mounts=(Mount("x", str(tmp_path)),))
    shared = Mount("/x", str(tmp_path), propagation=Propagation.BIDIRECTIONAL)
    with pytest.raises(InvalidRequestError, match=r"mounts\[0\].propagation: bidirectional"):
        spec(rootfs, mounts=(shared,))
    out = build_spec(
        container_id="c",
        request=ContainerRequest(name="c", command=("x",), mounts=(shared,)),
        image=ImageConfig(),
        pod=pod(),
        defaults=SpecDefaults(),
        rootfs=rootfs,
        mountinfo=[MountPoint("/", shared=True, slave=False)],
    )
    assert out["linux"]["rootfsPropagation"] == "rshared"


def test_devices(rootfs: Path, tmp_path: Path) -> None:
    out = spec(rootfs, devices=(Device("/dev/mynull", "/dev/null", "rw"),))
    assert out["linux"]["devices"][0] == {
        "path": "/dev/mynull",
        "type": "c",
        "major": 1,
        "minor": 3,
        "fileMode": 0o666,
        "uid": 0,
        "gid": 0,
    }
    rules = out["linux"]["resources"]["devices"]
    assert rules[0] == {"allow": False, "access": "rwm"}
    assert {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"} in rules
    with pytest.raises(InvalidRequestError, match=r"devices\[0\].host_path: .* not a device"):
        spec(rootfs, devices=(Device("/dev/x", str(tmp_path / "rootfs" / "etc" / "passwd")),))
    with pytest.raises(InvalidRequestError, match=r"devices\[0\].permissions"):
        spec(rootfs, devices=(Device("/dev/x", "/dev/null", "rwx"),))


def test_seccomp_profiles(rootfs: Path, tmp_path: Path) -> None:
    default = spec(rootfs)["linux"]["seccomp"]
    allowed = {
        n
        for rule in default["syscalls"]
        if rule["action"] == "SCMP_ACT_ALLOW"
        for n in rule["names"]
    }
    assert default["defaultAction"] == "SCMP_ACT_ERRNO"
    assert {"read", "execve", "clone"} <= allowed
    assert not {"keyctl", "add_key", "unshare", "mount", "ptrace", "reboot"} & allowed
    admin = SecurityContext(capabilities=Capabilities(("SYS_ADMIN",)))
    allowed_admin = {
        n
        for r in spec(rootfs, security=admin)["linux"]["seccomp"]["syscalls"]
        if r["action"] == "SCMP_ACT_ALLOW"
        for n in r["names"]
    }
    assert {"unshare", "mount", "setns", "clone3"} <= allowed_admin
    assert "keyctl" not in allowed_admin
    unconfined = SecurityContext(seccomp=SecurityProfile(ProfileType.UNCONFINED))
    assert "seccomp" not in spec(rootfs, security=unconfined)["linux"]
    profile = tmp_path / "p.json"
    profile.write_text(json.dumps({"defaultAction": "SCMP_ACT_LOG"}))
    local = SecurityContext(seccomp=SecurityProfile(ProfileType.LOCALHOST, str(profile)))
    assert spec(rootfs, security=local)["linux"]["seccomp"] == {"defaultAction": "SCMP_ACT_LOG"}
    profile.write_text("[]")
    with pytest.raises(InvalidRequestError, match=r"seccomp.localhost_ref: .* not a seccomp"):
        spec(rootfs, security=local)


def test_seccomp_use_default_when_empty(rootfs: Path) -> None:
    strict = SpecDefaults(seccomp_default_when_empty=False)
    # No profile named: RuntimeDefault by default, unconfined when the key is false.
    assert spec(rootfs)["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"
    assert "seccomp" not in spec(rootfs, defaults=strict)["linux"]
    # A profile named explicitly is applied either way.
    named = SecurityContext(seccomp=SecurityProfile(ProfileType.RUNTIME_DEFAULT))
    assert "seccomp" in spec(rootfs, defaults=strict, security=named)["linux"]


def test_privileged(rootfs: Path) -> None:
    with pytest.raises(InvalidRequestError, match="privileged: the container is privileged"):
        spec(rootfs, security=SecurityContext(privileged=True))
    out = spec(
        rootfs,
        pod_ctx=pod(privileged=True),
        security=SecurityContext(privileged=True),
        defaults=SpecDefaults(privileged_without_host_devices=True),
    )
    assert out["process"]["capabilities"]["bounding"] == list(ALL_CAPABILITIES)
    linux = out["linux"]
    assert "seccomp" not in linux and "maskedPaths" not in linux
    assert linux["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    assert "rw" in {m["destination"]: m for m in out["mounts"]}["/sys"]["options"]


def test_masked_paths_and_resources(rootfs: Path) -> None:
    security = SecurityContext(masked_paths=("/proc/x",), readonly_paths=())
    res = Resources(
        cpu_shares=512,
        cpu_quota=20000,
        cpu_period=100000,
        memory_limit_in_bytes=1 << 26,
        cpuset_cpus="0-1",
        oom_score_adj=-998,
    )
    out = spec(
        rootfs,
        security=security,
        resources=res,
        defaults=SpecDefaults(pids_limit=100, swap_accounting=True, min_oom_score_adj=-5),
    )
    linux = out["linux"]
    assert linux["maskedPaths"] == ["/proc/x"] and linux["readonlyPaths"] == []
    assert linux["resources"]["cpu"] == {
        "shares": 512,
        "quota": 20000,
        "period": 100000,
        "cpus": "0-1",
    }
    assert linux["resources"]["memory"] == {"limit": 1 << 26, "swap": 1 << 26}
    assert linux["resources"]["pids"] == {"limit": 100}
    assert out["process"]["oomScoreAdj"] == -5
    with pytest.raises(InvalidRequestError, match=r"linux\.resources\.unified: needs cgroup v2"):
        spec(rootfs, resources=Resources(unified={"memory.max": "1"}))
    with pytest.raises(
        InvalidRequestError, match=r"linux\.resources\.cpu_shares: must not be negative"
    ):
        spec(rootfs, resources=Resources(cpu_shares=-1))


def test_rlimits_and_signals() -> None:
    assert parse_rlimits(("nproc=10:20",)) == [{"type": "RLIMIT_NPROC", "soft": 10, "hard": 20}]
    with pytest.raises(ConfigError, match="default_ulimits"):
        parse_rlimits(("nofile=a:b",))
    assert [parse_signal(s) for s in ("", "SIGQUIT", "quit", "9")] == [15, 3, 3, 9]
    with pytest.raises(InvalidRequestError, match="StopSignal"):
        parse_signal("SIGNOPE")
