"""The plugin host: built-ins and vendor plugins through the same entry-point group."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from crio import config
from crio.config import RuntimeHandler
from crio.errors import ConfigError, PluginError, UnsupportedError
from crio.oci.runtime import Runtime
from crio.plugins import Plugins, hookimpl
from support.vendor import DEMO_REASON, write_vendor_distribution

CRIO = str(Path(sys.executable).with_name("crio"))

BUILTINS = {
    "runtime_runc": ("runtime",),
    "runtime_clear": ("runtime", "commands"),
    "storage_overlay": ("storage",),
    "storage_devicemapper": ("storage",),
    "storage_btrfs": ("storage",),
    "storage_aufs": ("storage",),
    "storage_vfs": ("storage",),
    "net_cni": ("network",),
    "transport_docker": ("transport",),
    "transport_oci": ("transport",),
    "transport_archive": ("transport",),
    "transport_storage": ("transport",),
}


@pytest.fixture
def plugins() -> Plugins:
    found = Plugins()
    found.load_entry_points()
    return found


def test_every_builtin_is_found_through_the_entry_point_group(plugins: Plugins) -> None:
    infos = {info.name: info for info in plugins.infos()}
    for name, kinds in BUILTINS.items():
        info = infos[name]
        assert info.loaded, info.error
        assert info.kinds == kinds
        assert info.distribution == "crio"
        assert info.target == f"crio_plugins.{name}"


def test_default_handlers_get_a_runtime_from_runtime_runc(plugins: Plugins) -> None:
    cfg = config.Config()
    for name, handler in cfg.crio.runtime.runtimes.items():
        runtime = plugins.runtime(name, handler, cfg)
        assert isinstance(runtime, Runtime)
        assert type(runtime).__module__.startswith("crio_plugins.runtime_runc")


def test_unknown_runtime_type_is_a_config_error_naming_the_handler(plugins: Plugins) -> None:
    with pytest.raises(ConfigError, match=r"runtimes\.mine\.runtime_type: .*'nosuch'"):
        plugins.runtime("mine", RuntimeHandler(runtime_type="nosuch"), config.Config())


def test_a_storage_driver_the_host_cannot_run_is_refused_clearly(
    plugins: Plugins, tmp_path: Path
) -> None:
    with pytest.raises(UnsupportedError, match=r"storage driver btrfs: .* not on a btrfs"):
        plugins.graph_driver("btrfs", tmp_path, tmp_path, [])
    with pytest.raises(ConfigError, match="'zfs'"):
        plugins.graph_driver("zfs", tmp_path, tmp_path, [])


def test_vendor_distribution_is_discovered_and_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(write_vendor_distribution(tmp_path / "site")))
    plugins = Plugins()
    plugins.load_entry_points()
    info = {i.name: i for i in plugins.infos()}["demo"]
    assert (info.distribution, info.version, info.loaded, info.kinds) == (
        "crio-demo-vendor",
        "1.2.3",
        True,
        ("runtime",),
    )
    runtime = plugins.runtime("demo", RuntimeHandler(runtime_type="demo"), config.Config())
    asyncio.run(runtime.start())
    assert runtime.ready() == (False, DEMO_REASON, "demo runtime demo says hello")
    # The built-in runc plugin is still asked for its own type.
    runc = plugins.runtime("runc", RuntimeHandler(runtime_type="oci"), config.Config())
    assert type(runc).__module__.startswith("crio_plugins.runtime_runc")


def test_broken_vendor_plugin_is_reported_and_only_fails_when_needed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(write_vendor_distribution(tmp_path / "site", broken=True)))
    plugins = Plugins()
    plugins.load_entry_points()
    info = {i.name: i for i in plugins.infos()}["demo"]
    assert not info.loaded
    assert "broken on purpose" in info.error
    # Handlers that do not need it still work.
    plugins.runtime("runc", RuntimeHandler(runtime_type="oci"), config.Config())
    with pytest.raises(ConfigError, match=r"demo \(ImportError: demo vendor plugin is broken"):
        plugins.runtime("x", RuntimeHandler(runtime_type="demo"), config.Config())


def test_a_hook_crio_does_not_define_makes_the_plugin_invalid() -> None:
    class Typo:
        @hookimpl
        def crio_runtim(self, handler):  # misspelt on purpose
            return None

    plugins = Plugins()
    plugins.register(Typo(), "typo")
    info = {i.name: i for i in plugins.infos()}["typo"]
    assert not info.loaded
    assert "crio_runtim" in info.error


def test_a_plugin_crashing_in_a_factory_is_named() -> None:
    class Crashes:
        @hookimpl
        def crio_image_transport(self, name):
            raise KeyError(name)

    plugins = Plugins()
    plugins.register(Crashes(), "crashes")
    with pytest.raises(PluginError, match="plugin crashes failed in crio_image_transport"):
        plugins.image_transport("docker")


def test_vendor_plugin_asked_before_builtin_trylast(plugins: Plugins) -> None:
    class Override:
        @hookimpl
        def crio_runtime(self, handler_name, handler):
            return "vendor-runtime" if handler.runtime_type == "oci" else None

    plugins.register(Override(), "override")
    assert plugins.runtime("runc", RuntimeHandler(), config.Config()) == "vendor-runtime"


def test_notification_failures_are_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    seen = []

    class Observer:
        @hookimpl
        def crio_image_removed(self, image):
            seen.append(image)
            raise RuntimeError("observer bug")

    plugins = Plugins()
    plugins.register(Observer(), "observer")
    plugins.notify("crio_image_removed", image="sha256:x")
    assert seen == ["sha256:x"]
    assert "crio_image_removed" in caplog.text


def test_disabled_plugin_is_listed_but_not_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRIO_DISABLED_PLUGINS", "storage_aufs, net_cni")
    plugins = Plugins()
    plugins.load_entry_points()
    infos = {i.name: i for i in plugins.infos()}
    assert not infos["storage_aufs"].loaded and "disabled" in infos["storage_aufs"].error
    assert not infos["net_cni"].loaded
    assert infos["storage_vfs"].loaded


def test_crio_plugins_command_lists_a_vendor_plugin(tmp_path: Path) -> None:
    site = write_vendor_distribution(tmp_path / "site")
    result = subprocess.run(
        [CRIO, "--config-dir", str(tmp_path), "plugins"],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
    )
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert set(BUILTINS) | {"demo"} <= set(lines)
    assert "crio-demo-vendor" in lines["demo"] and "1.2.3" in lines["demo"]
    assert lines["demo"].rstrip().endswith("loaded")
