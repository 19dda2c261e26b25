"""The plugin host: discovery, registration and typed access to the hooks.

Built-in and vendor plugins alike are found through the ``crio.plugins``
entry-point group and registered with pluggy. A plugin that fails to import
or registers a hook crio does not define is recorded with its error instead
of stopping crio; crio refuses to start only when the configuration needs
what such a plugin would have provided (the factory methods below say so).

This is the only module that calls ``pm.hook``: everyone else uses the typed
methods of :class:`Plugins`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import importlib_metadata
import pluggy

from crio import hookspecs
from crio.errors import ConfigError, CrioError, PluginError, UnsupportedError

if TYPE_CHECKING:
    from crio.cli import Commands
    from crio.config import Config, NetworkConfig, RuntimeHandler
    from crio.image.transport import ImageTransport
    from crio.network import Network
    from crio.oci.runtime import Runtime
    from crio.storage.driver import GraphDriver

__all__ = ["ENTRY_POINT_GROUP", "PluginInfo", "Plugins", "hookimpl"]

log = logging.getLogger("crio.plugins")

ENTRY_POINT_GROUP = "crio.plugins"
#: Comma-separated entry-point names that crio must not load (for debugging a node).
DISABLED_ENV = "CRIO_DISABLED_PLUGINS"
#: Set to 1 to log every hook call at debug level.
TRACE_ENV = "CRIO_TRACE_PLUGINS"

hookimpl = pluggy.HookimplMarker("crio")

_KIND_OF_HOOK = {
    "crio_runtime": "runtime",
    "crio_graph_driver": "storage",
    "crio_image_transport": "transport",
    "crio_network": "network",
    "crio_add_commands": "commands",
}


@dataclass(frozen=True, slots=True)
class PluginInfo:
    """One entry point of the group, as ``crio plugins`` lists it."""

    name: str
    target: str
    distribution: str
    version: str
    kinds: tuple[str, ...] = ()
    loaded: bool = False
    error: str = ""


def _kinds(pm: pluggy.PluginManager, plugin: object) -> tuple[str, ...]:
    hooks = {caller.name for caller in pm.get_hookcallers(plugin) or ()}
    kinds = [kind for hook, kind in _KIND_OF_HOOK.items() if hook in hooks]
    if hooks - set(_KIND_OF_HOOK) - {"crio_configure"}:
        kinds.append("events")
    return tuple(kinds)


class Plugins:
    """The plugin manager of one crio (or kpod) process."""

    def __init__(self, disabled: Iterable[str] = ()) -> None:
        self._pm = pluggy.PluginManager("crio")
        self._pm.add_hookspecs(hookspecs)
        self._disabled = set(disabled) | {
            name.strip() for name in os.environ.get(DISABLED_ENV, "").split(",") if name.strip()
        }
        self._infos: dict[str, PluginInfo] = {}
        self._entry_points: dict[str, Any] = {}
        if os.environ.get(TRACE_ENV) == "1":
            self._pm.trace.root.setwriter(lambda text: log.debug("hook %s", text.rstrip()))
            self._pm.enable_tracing()

    # -- discovery --------------------------------------------------------

    def load_entry_points(self) -> None:
        """Import and register every plugin of the ``crio.plugins`` group."""
        seen: set[str] = set()
        for ep in importlib_metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in seen:
                # The same distribution found twice on sys.path: first wins.
                continue
            seen.add(ep.name)
            # The distribution's name and version are read when infos() is asked:
            # parsing metadata costs a command that only uses plugins ~10 ms (email).
            self._entry_points[ep.name] = ep
            info = PluginInfo(name=ep.name, target=ep.value, distribution="", version="")
            if ep.name in self._disabled:
                self._infos[ep.name] = _replace(info, error=f"disabled by {DISABLED_ENV}")
                continue
            try:
                module = ep.load()
            except Exception as exc:  # a broken plugin must not stop discovery
                log.warning("plugin %s (%s) failed to load: %s", ep.name, ep.value, exc)
                self._infos[ep.name] = _replace(info, error=f"{type(exc).__name__}: {exc}")
                continue
            self._infos[ep.name] = info
            self.register(module, ep.name)

    def register(self, plugin: object, name: str) -> None:
        """Register one plugin object and check it against the hookspecs."""
        info = self._infos.get(name) or PluginInfo(
            name=name,
            target=getattr(plugin, "__name__", repr(plugin)),
            distribution="",
            version="",
        )
        try:
            self._pm.register(plugin, name=name)
            self._check(plugin)
        except (pluggy.PluginValidationError, ValueError) as exc:
            if self._pm.is_registered(plugin):
                self._pm.unregister(plugin)
            log.warning("plugin %s is invalid: %s", name, exc)
            self._infos[name] = _replace(info, error=f"invalid: {exc}")
            return
        self._infos[name] = _replace(info, loaded=True, kinds=_kinds(self._pm, plugin))

    def _check(self, plugin: object) -> None:
        for caller in self._pm.get_hookcallers(plugin) or ():
            if not caller.has_spec():
                raise pluggy.PluginValidationError(
                    plugin, f"implements {caller.name!r}, which is not a crio hook"
                )

    def infos(self) -> list[PluginInfo]:
        """Every plugin found, loaded or not, sorted by name, with its distribution."""
        for name, ep in self._entry_points.items():
            info = self._infos.get(name)
            if info is not None and not info.distribution:
                distribution, version = _distribution_of(ep)
                self._infos[name] = _replace(info, distribution=distribution, version=version)
        return sorted(self._infos.values(), key=lambda info: info.name)

    def failures(self) -> list[PluginInfo]:
        return [info for info in self.infos() if not info.loaded]

    def _failure_note(self) -> str:
        failed = [f"{info.name} ({info.error})" for info in self.failures()]
        return f"; plugins that failed to load: {', '.join(failed)}" if failed else ""

    # -- factories --------------------------------------------------------

    def _first(self, hook_name: str, **kwargs: Any) -> Any:
        """Call a firstresult hook the way pluggy would, naming the plugin that fails."""
        caller = getattr(self._pm.hook, hook_name)
        for impl in reversed(caller.get_hookimpls()):
            args = {name: kwargs[name] for name in impl.argnames}
            try:
                result = impl.function(**args)
            except CrioError:
                raise
            except Exception as exc:
                raise PluginError(
                    f"plugin {impl.plugin_name} failed in {hook_name}: {type(exc).__name__}: {exc}"
                ) from exc
            if result is not None:
                return result
        return None

    def configure(self, config: Config) -> None:
        """Give every plugin, present and future, the configuration."""
        self._pm.hook.crio_configure.call_historic(kwargs={"config": config})

    def runtime(self, handler_name: str, handler: RuntimeHandler, config: Config) -> Runtime:
        runtime = self._first(
            "crio_runtime", handler_name=handler_name, handler=handler, config=config
        )
        if runtime is None:
            raise ConfigError(
                f"no plugin provides runtime_type {handler.runtime_type!r}" + self._failure_note(),
                key=f"crio.runtime.runtimes.{handler_name}.runtime_type",
            )
        return runtime

    def graph_driver(
        self, name: str, home: Path, runroot: Path, options: Sequence[str]
    ) -> GraphDriver:
        driver = self._first(
            "crio_graph_driver", name=name, home=home, runroot=runroot, options=list(options)
        )
        if driver is None:
            raise ConfigError(
                f"no plugin provides storage driver {name!r}" + self._failure_note(),
                key="crio.storage_driver",
            )
        return driver

    def image_transport(self, name: str) -> ImageTransport | None:
        """The transport for a reference prefix, or None when no plugin claims it."""
        return self._first("crio_image_transport", name=name)

    def network(self, config: NetworkConfig, runroot: Path) -> Network:
        network = self._first("crio_network", config=config, runroot=runroot)
        if network is None:
            raise UnsupportedError("no plugin provides a pod network" + self._failure_note())
        return network

    def add_commands(self, commands: Commands) -> None:
        """Let every plugin add its ``crio`` subcommands.

        A plugin that fails here is logged and skipped: one broken plugin must
        not take the whole command line (``crio config``, ``crio plugins``) down.
        """
        for impl in reversed(self._pm.hook.crio_add_commands.get_hookimpls()):
            try:
                with commands.adding_for(impl.plugin_name):
                    impl.function(commands=commands)
            except Exception as exc:
                log.warning("plugin %s failed to add its commands: %s", impl.plugin_name, exc)

    # -- notifications ----------------------------------------------------

    def notify(self, hook_name: str, **kwargs: Any) -> None:
        """Call a notification hook; a failing plugin is logged, never raised."""
        caller: Callable[..., Any] = getattr(self._pm.hook, hook_name)
        try:
            caller(**kwargs)
        except Exception:
            log.exception("a plugin failed while observing %s", hook_name)


@functools.cache
def _metadata(path: str) -> tuple[str, str]:
    """(name, version) of the distribution whose metadata lies at ``path``."""
    metadata = importlib_metadata.PathDistribution(Path(path)).metadata
    return metadata["Name"] or "", metadata["Version"] or ""


def _distribution_of(ep: Any) -> tuple[str, str]:
    """The (name, version) of an entry point's distribution, its metadata parsed once
    per distribution: ``dist.name`` and ``dist.version`` each parse it again (~2.5 ms
    apiece here, for every one of the built-in plugins)."""
    dist = ep.dist
    if dist is None:
        return "", ""
    path = getattr(dist, "_path", None)
    if path is None:
        return dist.name, dist.version
    return _metadata(str(path))


def _replace(info: PluginInfo, **changes: Any) -> PluginInfo:
    return dataclasses.replace(info, **changes)
