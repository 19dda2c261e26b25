"""The crio daemon: build the plugins' objects, serve CRI on the unix socket, stop cleanly."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import gc
import logging
import os
import signal
import socket
import stat
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

from crio import __version__
from crio._memory import release_free_memory, tune_malloc
from crio.claims import Claims, claim, claimed_paths
from crio.config import Config
from crio.errors import ConfigError, CrioError
from crio.inspect import InspectServer
from crio.metrics import Metrics, TimedNetwork
from crio.metrics import create as create_metrics
from crio.network import Network
from crio.oci.container import SpecDefaults
from crio.oci.hooks import HookDirs, HookFileError
from crio.oci.runtime import Runtime
from crio.plugins import Plugins
from crio.sdnotify import Notifier, take_socket
from crio.server import HANDLERS
from crio.server._reconcile import reconcile
from crio.server._restore import restore
from crio.server.deps import Deps
from crio.server.sandbox_stop import stop_ended_pods
from crio.server.service import generic_handlers
from crio.state.owner import StateOwner
from crio.state.store import StateStore
from crio.storage import Store
from crio.storage._files import atomic_write
from crio.streaming.server import StreamServer

__all__ = ["SocketInUseError", "claim_socket", "close_components", "serve", "start_components"]

log = logging.getLogger("crio")

#: How long in-flight RPCs may run on after SIGTERM before they are cancelled.
STOP_GRACE_SECONDS = 5.0


class SocketInUseError(CrioError):
    """Another process serves on the configured socket."""


def claim_socket(path: Path) -> None:
    """Make ``path`` free for binding: create its directory, remove a stale socket.

    :raises SocketInUseError: something answers on the socket (another crio).
    :raises ConfigError: the path exists and is not a socket.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ConfigError(
            f"{path} exists and is not a socket; refusing to replace it", key="crio.api.listen"
        )
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise
        log.info("removing stale socket %s", path)
        path.unlink(missing_ok=True)
        return
    finally:
        probe.close()
    raise SocketInUseError(f"another process is serving on {path}; is crio already running?")


@dataclass(slots=True)
class Components:
    runtimes: dict[str, Runtime]
    network: Network | None
    network_error: str
    store: Store
    state: StateStore | None = None
    claims: Claims | None = None


def _select_runtimes(config: Config, plugins: Plugins) -> dict[str, Runtime]:
    """Ask the plugins for every handler first, so a bad handler fails before anything starts."""
    return {
        name: plugins.runtime(name, handler, config)
        for name, handler in config.crio.runtime.runtimes.items()
    }


async def _open_store(config: Config, plugins: Plugins, readonly: bool = False) -> Store:
    """An unknown or unsupported storage_driver stops crio here."""
    store = await Store.open(
        config.crio.root,
        config.crio.runroot,
        config.crio.storage_driver,
        config.crio.storage_option,
        plugins,
        repair=not readonly,
        image_stores=config.crio.additionalimagestores,
    )
    log.info("store at %s (run %s) with driver %s", store.root, store.runroot, store.driver.name)
    return store


async def start_components(config: Config, plugins: Plugins, readonly: bool = False) -> Components:
    """The runtimes, store, network and state store, started (``crio check``: ``readonly``:
    the store and the state store are opened without repairing anything)."""
    selected = _select_runtimes(config, plugins)
    # Before anything is opened: another crio with one of our directories refuses here.
    claims = None if readonly else claim(claimed_paths(config, selected.values()))
    try:
        store = await _open_store(config, plugins, readonly)
    except BaseException:
        if claims is not None:
            claims.release()
        raise
    runtimes: dict[str, Runtime] = {}
    try:
        for name, runtime in selected.items():
            await runtime.start()
            runtimes[name] = runtime
            handler = config.crio.runtime.runtimes[name]
            log.info("runtime handler %s ready (runtime_type %s)", name, handler.runtime_type)
    except BaseException:
        await _close_all(runtimes.values())
        await _close_all([store])
        if claims is not None:
            claims.release()
        raise
    network: Network | None = None
    network_error = ""
    try:
        network = plugins.network(config.crio.network, Path(config.crio.runroot) / "crio-net")
        await network.start()
    except CrioError as exc:
        # Pods with host networking still work; NetworkReady says why others do not.
        network, network_error = None, str(exc)
        log.warning("no pod network: %s", exc)
    parts = Components(runtimes, network, network_error, store, claims=claims)
    try:
        parts.state = StateStore(Path(config.crio.state_dir))
        for problem in await parts.state.open(readonly=readonly):
            log.error("%s", problem)
    except BaseException:
        await close_components(parts)
        raise
    return parts


def _spec_defaults(config: Config) -> SpecDefaults:
    rt = config.crio.runtime
    return SpecDefaults.from_host(
        capabilities=tuple(rt.default_capabilities),
        env=tuple(rt.default_env),
        ulimits=tuple(rt.default_ulimits),
        pids_limit=rt.pids_limit,
        seccomp_profile=rt.seccomp_profile,
        seccomp_default_when_empty=rt.seccomp_use_default_when_empty,
    )


def hook_dirs(config: Config) -> HookDirs:
    """The hooks of ``hooks_dir``, read once now (blocking).

    :raises ConfigError: naming the first hook file that cannot be used.
    """
    hooks = HookDirs(tuple(config.crio.runtime.hooks_dir))
    try:
        hooks.current()
    except HookFileError as exc:
        raise ConfigError(str(exc), key="crio.runtime.hooks_dir") from None
    return hooks


def _use_pidfd_child_watcher() -> None:
    """Wait for children through pidfds, not a thread per child (the 3.11 default)."""
    if sys.version_info < (3, 12):
        watcher = asyncio.PidfdChildWatcher()
        watcher.attach_loop(asyncio.get_running_loop())
        asyncio.set_child_watcher(watcher)


#: Worker threads for blocking work (fsyncs, file trees, lock waits). asyncio's default,
#: cpus + 4, is 6 on a 2-core node: too few when several RPCs each wait on a lock in one.
EXECUTOR_THREADS = 64


def _use_larger_executor() -> None:
    asyncio.get_running_loop().set_default_executor(
        concurrent.futures.ThreadPoolExecutor(EXECUTOR_THREADS, thread_name_prefix="crio-io")
    )


async def close_components(parts: Components) -> None:
    """Close what :func:`start_components` started (containers keep running)."""
    await _close_all(parts.runtimes.values())
    if parts.network is not None:
        await _close_all([parts.network])
    await _close_all([parts.store])
    if parts.claims is not None:
        parts.claims.release()


async def _close_all(closables: object) -> None:
    for item in list(closables):  # type: ignore[call-overload]
        with contextlib.suppress(Exception):
            await item.close()


def _bind(server: grpc.aio.Server, path: Path) -> None:
    # Bind under a umask that yields 0660, so the socket is never more open
    # than that, not even between bind and chmod.
    old = os.umask(0o117)
    try:
        port = server.add_insecure_port(f"unix://{path}")
    finally:
        os.umask(old)
    if port == 0:
        raise CrioError(f"cannot listen on {path}")
    os.chmod(path, 0o660)


def _note_boot_or_upgrade(version_file: Path, state: StateStore) -> None:
    """Log a first start since boot (the version file lives on a tmpfs) and a version change.

    Either way the restore that follows is the same: every record is checked against
    what runs, and a container the boot ended is reported as lost.
    """
    try:
        previous = version_file.read_text().strip()
    except FileNotFoundError:
        pods, containers = len(state.sandboxes()), len(state.containers())
        if pods or containers:
            log.warning(
                "first start since the node booted (no %s): %d pod sandbox(es) and "
                "%d container(s) were recorded before it",
                version_file,
                pods,
                containers,
            )
        return
    if previous != __version__:
        log.info("crio %s takes over from crio %s (%s)", __version__, previous, version_file)


def _write_version_file(version_file: Path) -> None:
    version_file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(version_file, f"{__version__}\n".encode(), mode=0o644, sync=False)


async def serve(
    config: Config,
    plugins: Plugins,
    reload: Callable[[], Config] | None = None,
    ready: Callable[[], None] | None = None,
) -> None:
    """Serve CRI until SIGTERM or SIGINT; SIGHUP calls ``reload`` and re-configures plugins."""
    tune_malloc()
    # Taken before any child starts: runc would hand $NOTIFY_SOCKET on to containers.
    notifier = Notifier(take_socket())
    listen = Path(config.crio.api.listen)
    hooks = await asyncio.to_thread(hook_dirs, config)  # a bad hook file stops crio here
    claim_socket(listen)
    _use_pidfd_child_watcher()
    _use_larger_executor()
    plugins.configure(config)
    metrics = create_metrics(config)
    if metrics.enabled:
        plugins.register(metrics, "metrics")  # it observes exits through the hooks
    # The records are crio's alone while it runs (see crio.state.owner): kpod asks over CRI.
    owner = await StateOwner.take(Path(config.crio.state_dir), "crio")
    try:
        await _serve_owned(config, plugins, metrics, hooks, listen, reload, ready, notifier)
    finally:
        owner.release()


async def _serve_owned(
    config: Config,
    plugins: Plugins,
    metrics: Metrics,
    hooks: HookDirs,
    listen: Path,
    reload: Callable[[], Config] | None,
    ready: Callable[[], None] | None,
    notifier: Notifier,
) -> None:
    parts = await start_components(config, plugins)
    network = parts.network
    if network is not None and metrics.enabled:
        network = TimedNetwork(network, metrics)
    streaming = StreamServer(config.crio.api)
    deps = Deps(
        store=parts.store,
        config=config,
        plugins=plugins,
        runtimes=parts.runtimes,
        network=network,
        metrics=metrics,
        network_error=parts.network_error,
        state=parts.state,
        spec_defaults=await asyncio.to_thread(_spec_defaults, config),
        streaming=streaming,
        hooks=hooks,
    )
    inspect = InspectServer(deps)
    version_file = Path(config.crio.version_file)
    await asyncio.to_thread(_note_boot_or_upgrade, version_file, parts.state)
    await restore(deps)
    # Finish what a crash interrupted and release what no record names (logged one by one).
    released = await reconcile(deps, repair=True)
    await stop_ended_pods(deps)
    metrics.started(len(parts.state.sandboxes()), len(parts.state.containers()), len(released))
    await asyncio.to_thread(_write_version_file, version_file)
    api = config.crio.api
    server = grpc.aio.server(
        options=[
            ("grpc.max_send_message_length", api.grpc_max_send_msg_size),
            ("grpc.max_receive_message_length", api.grpc_max_recv_msg_size),
        ]
    )
    server.add_generic_rpc_handlers(generic_handlers(deps, HANDLERS))
    try:
        await streaming.start()  # a busy stream port stops crio (ConfigError)
        await metrics.start(deps)  # so does a busy metrics port
        await inspect.start()
        _bind(server, listen)
        await server.start()
        log.info("crio %s serving CRI v1 on %s", __version__, listen)
        _settle()
        # The socket answers from here on: a Type=notify unit is started now.
        notifier.send(READY=1, MAINPID=os.getpid(), STATUS=f"serving CRI on {listen}")
        if ready is not None:
            ready()
        await _wait_for_stop(plugins, reload, notifier, config)
        notifier.send(STOPPING=1, STATUS="stopping")
        log.info("stopping: letting in-flight calls finish for up to %.0fs", STOP_GRACE_SECONDS)
        await server.stop(grace=STOP_GRACE_SECONDS)
    finally:
        await streaming.close()  # ends exec/attach sessions: their processes are killed
        await metrics.close()
        await inspect.close()
        deps.events.close()
        await deps.tasks.close()
        await close_components(parts)
        with contextlib.suppress(FileNotFoundError):
            listen.unlink()
        log.info("crio stopped")


def _settle() -> None:
    """Once start-up is done: what it freed goes back to the kernel, and what it built
    (modules, configuration, records) leaves the collector's view for good."""
    gc.collect()
    gc.freeze()
    release_free_memory()


def config_changes(old: Config, new: Config) -> list[tuple[str, object, object]]:
    """(dotted key, old value, new value) for every key whose value differs."""
    before, after = _flatten(old.model_dump()), _flatten(new.model_dump())
    keys = sorted(set(before) | set(after))
    return [(k, before.get(k), after.get(k)) for k in keys if before.get(k) != after.get(k)]


def _flatten(data: Mapping[str, object], prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _log_reload(old: Config, new: Config) -> None:
    """Say what a reload changed. The running daemon keeps the values it started with
    (its components were built from them); plugins are told through crio_configure."""
    changes = config_changes(old, new)
    if not changes:
        log.info("configuration reloaded: nothing changed")
        return
    for key, before, after in changes:
        log.warning(
            "configuration reloaded: %s changed from %r to %r; it takes effect when crio "
            "restarts (plugins were told through crio_configure)",
            key,
            before,
            after,
        )


async def _wait_for_stop(
    plugins: Plugins,
    reload: Callable[[], Config] | None,
    notifier: Notifier,
    running: Config | None = None,
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_hup() -> None:
        if reload is None:
            return
        notifier.send(RELOADING=1, MONOTONIC_USEC=time.monotonic_ns() // 1000)
        try:
            new = reload()
        except CrioError as exc:
            log.error("reload failed, keeping the running configuration: %s", exc)
            return
        finally:
            notifier.send(READY=1)
        plugins.configure(new)
        if running is not None:
            _log_reload(running, new)

    handlers: Mapping[int, Callable[[], None]] = {
        signal.SIGTERM: stop.set,
        signal.SIGINT: stop.set,
        signal.SIGHUP: on_hup,
    }
    for signum, handler in handlers.items():
        loop.add_signal_handler(signum, handler)
    try:
        await stop.wait()
    finally:
        for signum in handlers:
            loop.remove_signal_handler(signum)
