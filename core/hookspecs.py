"""The plugin contract of crio: every hook, with what it means.

A plugin is a module (or object) with functions marked by
:data:`crio.plugins.hookimpl` and named after the hooks below, registered
through the ``crio.plugins`` entry-point group::

    [project.entry-points."crio.plugins"]
    kata = "crio_kata.plugin"

Rules every plugin follows:

* Hooks are called with keyword arguments; an implementation may accept
  only the arguments it needs (new arguments never break a plugin).
* Hooks are synchronous and cheap: never an ``async def`` implementation.
  Factory hooks build an object; the I/O happens in its async methods.
* A factory hook returns None for anything that is not its own. It raises
  :class:`crio.errors.ConfigError` when the request *is* its own but its
  settings are wrong, and :class:`crio.errors.UnsupportedError` when it
  cannot work on this host; crio then refuses to start, naming the plugin.
* Built-in plugins implement factories with ``trylast=True`` so that a
  vendor's plugin is asked first.
* Notification hooks must not raise: crio logs an error from one and goes
  on, but pluggy stops calling the other plugins for that event.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from crio.cli import Commands
    from crio.config import Config, NetworkConfig, RuntimeHandler
    from crio.events import ContainerEvent, ImageEvent, SandboxEvent
    from crio.image.transport import ImageTransport
    from crio.network import Network
    from crio.oci.runtime import Runtime
    from crio.storage.driver import GraphDriver

__all__ = ["hookspec"]

hookspec = pluggy.HookspecMarker("crio")


# ---------------------------------------------------------------------------
# Set-up


@hookspec(historic=True)
def crio_configure(config: Config) -> None:
    """Tell a plugin the configuration crio runs with.

    :param config: the validated crio.toml (with drop-ins and flags applied).

    Called once at start-up before any factory hook, and again after SIGHUP
    reloads the file. Historic: a plugin registered late still sees the call.
    """


@hookspec
def crio_add_commands(commands: Commands) -> None:
    """Add subcommands to the ``crio`` command line.

    :param commands: the registrar; call :meth:`crio.cli.Commands.add` once per
        subcommand with its name, a one-line help, a function that adds its
        arguments to an ``argparse`` parser and the function that runs it.

    Called on every ``crio`` invocation, after the plugins are loaded and
    before the command line is parsed, so keep it to registering. The run
    function gets the parsed arguments and the loaded configuration (files
    and flags applied) and returns the exit status; it raises
    :class:`~crio.errors.CrioError` for failures crio reports in one line.
    A name crio or another plugin already uses is refused, naming the plugin.
    """


# ---------------------------------------------------------------------------
# Factories: "give me one of these, if it is yours"


@hookspec(firstresult=True)
def crio_runtime(handler_name: str, handler: RuntimeHandler, config: Config) -> Runtime | None:
    """Return the runtime for one ``[crio.runtime.runtimes.NAME]`` table, or None.

    :param handler_name: NAME, what a RuntimeClass sends as ``runtime_handler``.
    :param handler: the table; match on ``handler.runtime_type``. Keys beyond
        the core ones are in ``handler.options``: validate them and raise
        :class:`~crio.errors.ConfigError` with ``key="crio.runtime.runtimes.NAME.KEY"``
        for one you do not know.
    :param config: the whole configuration (paths such as exits and attach dirs).
    :returns: an object satisfying :class:`crio.oci.runtime.Runtime`, not yet
        started; crio awaits its ``start()`` before serving.

    Called once per handler at start-up. If no plugin answers, crio refuses to
    start and names the handler and its runtime_type. Stops at first non-None result.
    """


@hookspec(firstresult=True)
def crio_graph_driver(
    name: str, home: Path, runroot: Path, options: Sequence[str]
) -> GraphDriver | None:
    """Return the storage driver called ``name``, or None.

    :param name: the driver's name as in ``storage_driver`` ("overlay", "vfs", ...).
    :param home: the driver's directory, ``ROOT/NAME``; create it if needed.
    :param runroot: the store's run directory (mount counts, run-time state).
    :param options: ``storage_option`` entries; entries prefixed with another
        driver's name (``"btrfs.min_space=..."``) are not yours, ignore them.
        Each ``[crio] additionalimagestores`` path arrives as a
        ``NAME.imagestore=PATH`` entry (containers/storage's form): a read-only
        store whose layers may be parents of yours; refuse it with
        :class:`~crio.errors.ConfigError` if your layers cannot have parents there.
    :returns: an object satisfying :class:`crio.storage.driver.GraphDriver`.

    Raise :class:`~crio.errors.UnsupportedError` when ``name`` is yours but the
    host cannot run it (no kernel support, wrong backing filesystem); with an
    empty ``storage_driver`` crio then tries the next candidate.
    Stops at first non-None result.
    """


@hookspec(firstresult=True)
def crio_image_transport(name: str) -> ImageTransport | None:
    """Return the image transport for a reference prefix, or None.

    :param name: the part of a reference before the first ``:``, such as
        ``"docker"`` (``docker://busybox``), ``"oci"`` or ``"docker-archive"``.
    :returns: an object satisfying :class:`crio.image.transport.ImageTransport`.

    Called whenever a reference names a transport. A reference whose prefix no
    plugin claims is treated as a name for ``default_transport``.
    Stops at first non-None result.
    """


@hookspec(firstresult=True)
def crio_network(config: NetworkConfig, runroot: Path) -> Network | None:
    """Return the pod network, or None.

    :param config: the ``[crio.network]`` table.
    :param runroot: a directory the network may use for state that must
        survive a daemon restart but not a reboot (e.g. cached CNI results).
    :returns: an object satisfying :class:`crio.network.Network`.

    Called once at start-up. Stops at first non-None result.
    """


# ---------------------------------------------------------------------------
# Notifications: "this happened"; return values are ignored


@hookspec
def crio_sandbox_created(sandbox: SandboxEvent) -> None:
    """A pod sandbox is ready (RunPodSandbox is about to reply).

    :param sandbox: the pod.
    """


@hookspec
def crio_sandbox_stopped(sandbox: SandboxEvent) -> None:
    """A pod sandbox was stopped: its processes are gone and its network torn down.

    :param sandbox: the pod.
    """


@hookspec
def crio_sandbox_removed(sandbox: SandboxEvent) -> None:
    """A pod sandbox and everything it held were removed.

    :param sandbox: the pod.
    """


@hookspec
def crio_container_created(container: ContainerEvent) -> None:
    """A container was created and recorded.

    :param container: the container.
    """


@hookspec
def crio_container_started(container: ContainerEvent) -> None:
    """A container's process was started.

    :param container: the container.
    """


@hookspec
def crio_container_exited(container: ContainerEvent) -> None:
    """A container's process exited; ``container.exit_code`` and ``reason`` are set.

    :param container: the container.

    Also called at start-up for containers that exited while crio was down.
    """


@hookspec
def crio_container_removed(container: ContainerEvent) -> None:
    """A container was removed with its writable layer.

    :param container: the container.
    """


@hookspec
def crio_image_pulled(image: ImageEvent) -> None:
    """An image was pulled (or loaded) into the store.

    :param image: the image.
    """


@hookspec
def crio_image_removed(image: ImageEvent) -> None:
    """An image was removed from the store.

    :param image: the image.
    """
