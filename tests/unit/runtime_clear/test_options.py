"""Handler-table keys of runtime_type 'vm': validated, with the key named on error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from crio import config
from crio.config import RuntimeHandler
from crio.errors import ConfigError
from crio.plugins import Plugins
from crio_plugins.runtime_clear.options import VMOptions, parse_options


def test_defaults_and_every_key() -> None:
    assert parse_options("clear", {}) == VMOptions()
    got = parse_options(
        "clear",
        {
            "accel": "tcg",
            "kernel": "/k/vmlinux",
            "initrd": "/k/initrd.img",
            "memory": 1024,
            "vcpus": 2,
            "guest_runtime": "/usr/sbin/runc",
            "virtiofsd": "/opt/virtiofsd",
            "boot_timeout": 30,
            "kernel_args": ["loglevel=7"],
        },
        runtime_path="/opt/qemu",
    )
    assert got.accel == "tcg" and got.memory == 1024 and got.qemu == "/opt/qemu"
    assert got.kernel_args == ("loglevel=7",)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("acel", "tcg", "unknown key for runtime_type 'vm'; expected one of: accel,"),
        ("accel", "hvf", "got 'hvf', expected one of: auto, kvm, tcg"),
        ("kernel", "vmlinux", "expected an absolute path"),
        ("memory", 64, "at least 128"),
        ("memory", True, "at least 128"),
        ("vcpus", 0, "from 1 to 64"),
        ("boot_timeout", -1, "positive number"),
        ("kernel_args", "quiet", "list of non-empty strings"),
    ],
)
def test_bad_keys_are_config_errors_naming_the_key(key: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_options("clear", {key: value})
    assert caught.value.key == f"crio.runtime.runtimes.clear.{key}"
    assert message in str(caught.value)


def test_the_hook_validates_the_table_through_the_plugin_host() -> None:
    plugins = Plugins()
    plugins.load_entry_points()
    handler = RuntimeHandler(runtime_type="vm", acel="tcg")  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match=r"runtimes\.clear\.acel: unknown key"):
        plugins.runtime("clear", handler, config.Config())


def test_the_hook_builds_a_clear_runtime_for_a_vm_table() -> None:
    from crio.oci.runtime import Runtime
    from crio_plugins.runtime_clear import ClearRuntime

    plugins = Plugins()
    plugins.load_entry_points()
    handler = RuntimeHandler(runtime_type="vm", accel="tcg", memory=256)  # type: ignore[call-arg]
    runtime = plugins.runtime("clear", handler, config.Config())
    assert isinstance(runtime, ClearRuntime) and isinstance(runtime, Runtime)
    assert runtime.accel == "tcg" and runtime.options.memory == 256
    assert runtime.ready()[0] is False  # not started: it says so instead of pretending


def test_kernel_without_initrd_is_refused_naming_the_missing_key() -> None:
    plugins = Plugins()
    plugins.load_entry_points()
    handler = RuntimeHandler(runtime_type="vm", kernel="/k/vmlinux")  # type: ignore[call-arg]
    with pytest.raises(
        ConfigError, match=r"runtimes\.clear\.initrd: kernel and initrd go together"
    ):
        plugins.runtime("clear", handler, config.Config())


def test_runtime_config_path_holds_the_vm_keys_and_the_table_wins(tmp_path: Path) -> None:
    conf = tmp_path / "vm.toml"
    conf.write_text('memory = 1024\nvcpus = 2\nkernel_args = ["quiet"]\n')
    got = parse_options("clear", {"vcpus": 4}, config_path=str(conf))
    assert (got.memory, got.vcpus, got.kernel_args) == (1024, 4, ("quiet",))
    conf.write_text("memory = 64\n")
    with pytest.raises(ConfigError) as caught:
        parse_options("clear", {}, config_path=str(conf))
    assert caught.value.file == str(conf)
    assert caught.value.key == "crio.runtime.runtimes.clear.memory"
    with pytest.raises(ConfigError, match="file does not exist"):
        parse_options("clear", {}, config_path=str(tmp_path / "missing.toml"))
    conf.write_text("memory = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse_options("clear", {}, config_path=str(conf))


def test_the_hook_reads_runtime_config_path(tmp_path: Path) -> None:
    conf = tmp_path / "vm.toml"
    conf.write_text("memory = 384\n")
    plugins = Plugins()
    plugins.load_entry_points()
    handler = RuntimeHandler(runtime_type="vm", accel="tcg", runtime_config_path=str(conf))  # type: ignore[call-arg]
    runtime = plugins.runtime("clear", handler, config.Config())
    assert runtime.options.memory == 384  # type: ignore[attr-defined]


@pytest.mark.parametrize(("key", "value"), [("monitor_path", "/usr/bin/conmon"),
                                            ("monitor_env", ["A=1"])])  # fmt: skip
def test_a_vm_handler_refuses_monitor_keys(key: str, value: Any) -> None:
    plugins = Plugins()
    plugins.load_entry_points()
    handler = RuntimeHandler(runtime_type="vm", accel="tcg", **{key: value})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=rf"runtimes\.clear\.{key}: runtime_type 'vm' has no"):
        plugins.runtime("clear", handler, config.Config())


def test_a_vm_handler_refuses_allowed_annotations() -> None:
    plugins = Plugins()
    plugins.load_entry_points()
    handler = RuntimeHandler(  # type: ignore[call-arg]
        runtime_type="vm", accel="tcg", allowed_annotations=["io.kubernetes.cri-o.ShmSize"]
    )
    with pytest.raises(ConfigError, match=r"clear\.allowed_annotations: runtime_type 'vm' honours"):
        plugins.runtime("clear", handler, config.Config())


def test_a_vm_handler_refuses_no_pivot() -> None:
    plugins = Plugins()
    plugins.load_entry_points()
    cfg = config.Config()
    cfg.crio.runtime.no_pivot = True
    handler = RuntimeHandler(runtime_type="vm", accel="tcg")  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match=r"crio\.runtime\.no_pivot: runtime handler clear"):
        plugins.runtime("clear", handler, cfg)


@pytest.mark.parametrize(
    ("key", "value"), [("cgroup_manager", "systemd"), ("log_to_journald", True)]
)
def test_a_vm_handler_refuses_node_keys_it_cannot_honour(key: str, value: object) -> None:
    plugins = Plugins()
    plugins.load_entry_points()
    cfg = config.Config()
    setattr(cfg.crio.runtime, key, value)
    handler = RuntimeHandler(runtime_type="vm", accel="tcg")  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match=rf"crio\.runtime\.{key}: runtime handler clear"):
        plugins.runtime("clear", handler, cfg)
