"""Running CNI plugin executables: the only I/O of the CNI protocol.

:func:`run_operation` drives a :class:`~crio_plugins.net_cni.protocol.Operation`
with real processes; :func:`plugin_version` asks one plugin ``VERSION``;
:func:`status` sends CNI 1.1's STATUS to every plugin of a list. crio never
sends GC (see ``CNINetwork.gc``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from crio_plugins.net_cni.confdir import NetworkList, find_plugin
from crio_plugins.net_cni.protocol import (
    GC_VERSIONS,
    CNIPluginError,
    Operation,
    Result,
    VersionInfo,
    command_env,
    parse_failure,
    parse_version_info,
    plugin_stdin,
)

__all__ = ["PluginRunner", "plugin_version", "run_operation", "status"]

log = logging.getLogger("crio.net_cni")


@dataclass(frozen=True, slots=True)
class PluginRunner:
    """Finds plugins in ``plugin_dirs`` and runs them with a time limit.

    :param timeout: seconds one plugin may run before it is killed; the
        failure then names the plugin and the limit.
    """

    plugin_dirs: Sequence[str]
    timeout: float = 120.0

    @property
    def cni_path(self) -> str:
        return ":".join(d.rstrip("/") or "/" for d in self.plugin_dirs)

    def _environ(self, extra: Mapping[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
        env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        env.update(extra)
        return env

    async def run(
        self, kind: str, env: Mapping[str, str], stdin: bytes, network: str
    ) -> tuple[int, bytes, bytes]:
        """Run plugin ``kind``; returns (exit status, stdout, stderr).

        :raises CNIPluginError: the plugin is not found, cannot start or times out.
        """
        command = env.get("CNI_COMMAND", "?")
        path = find_plugin(kind, self.plugin_dirs)
        if path is None:
            msg = f"plugin {kind!r} not found in {', '.join(self.plugin_dirs)}"
            raise CNIPluginError(kind, command, network, 0, msg)
        try:
            proc = await asyncio.create_subprocess_exec(
                path,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self._environ(env),
                cwd="/",
            )
        except OSError as exc:
            raise CNIPluginError(kind, command, network, 0, f"cannot run {path}: {exc}") from exc
        try:
            async with asyncio.timeout(self.timeout):
                stdout, stderr = await proc.communicate(stdin)
        except TimeoutError:
            msg = f"{path} did not finish within {self.timeout:g}s and was killed"
            raise CNIPluginError(kind, command, network, 0, msg) from None
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        assert proc.returncode is not None
        if stderr:
            log.debug("CNI %s %s stderr: %s", kind, command, stderr.decode(errors="replace"))
        return proc.returncode, stdout, stderr


async def run_operation(runner: PluginRunner, op: Operation) -> Result | None:
    """Run every invocation of ``op``; returns the final result (ADD) or the cached one.

    :raises CNIPluginError: a plugin failed; the rest of the list was not run.
    """
    while (inv := op.next_invocation()) is not None:
        status_, stdout, stderr = await runner.run(inv.plugin_type, inv.env, inv.stdin, op.name)
        op.receive(status_, stdout, stderr)
    return op.result


async def plugin_version(runner: PluginRunner, kind: str) -> VersionInfo:
    """Ask plugin ``kind`` which spec versions it supports (``VERSION``)."""
    env = command_env("VERSION", runner.cni_path)
    stdin = b'{"cniVersion":"1.0.0"}'
    status_, stdout, stderr = await runner.run(kind, env, stdin, "-")
    if status_ != 0:
        raise parse_failure(kind, "VERSION", "-", status_, stdout, stderr)
    return parse_version_info(stdout, kind)


async def _each_plugin(
    runner: PluginRunner, network: NetworkList, command: str, extra: Mapping[str, object]
) -> None:
    env = command_env(command, runner.cni_path)
    for plugin in network.plugins:
        kind = str(plugin["type"])
        stdin = plugin_stdin(network.name, network.cni_version, plugin, {}, None, extra)
        status_, stdout, stderr = await runner.run(kind, env, stdin, network.name)
        if status_ != 0:
            raise parse_failure(kind, command, network.name, status_, stdout, stderr)


async def status(runner: PluginRunner, network: NetworkList) -> bool:
    """Send ``STATUS``; False when the list's version has none; raises if a plugin is not ready."""
    if network.cni_version not in GC_VERSIONS:
        return False
    await _each_plugin(runner, network, "STATUS", {})
    return True
