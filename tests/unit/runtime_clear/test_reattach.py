"""VM.reattach against a fake agent whose first connection never answers.

A real guest wedges that way only by chance (a crash and a quick restart,
under load); tests/integration/runtime_clear/test_clear_recovery.py covers
reattaching to a real VM. Here the agent's side is a unix socket speaking
the real wire protocol (``_wire``), so the retry can be shown every time.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from crio.errors import OCIRuntimeError
from crio_plugins.runtime_clear import _wire
from crio_plugins.runtime_clear import vm as vm_module
from crio_plugins.runtime_clear.vm import VM, VMSpec


class FakeAgentSilentAtFirst:
    """Accepts connections on ``path``; stays silent on the first ``silent`` of them,
    answers ``ping`` and ``resume`` on the later ones."""

    def __init__(self, path: Path, silent: int) -> None:
        self.path, self.silent, self.connections = path, silent, 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        answering = self.connections > self.silent
        conn = _wire.Connection(_wire.Role.GUEST)
        while data := await reader.read(65536):
            conn.receive_data(data)
            while (message := conn.next_event()) is not _wire.NEED_DATA:
                if answering and isinstance(message, _wire.Request):
                    result = {"replayed": 0, "complete": True, "last": 0}
                    if message.op == "ping":
                        result = {"version": _wire.PROTOCOL_VERSION, "kernel": "fake"}
                    writer.write(conn.send(_wire.Reply(message.id, result=result)))
                    await writer.drain()
        writer.close()


def _reattach(tmp_path: Path, silent: int) -> tuple[int, list[str]]:
    spec = VMSpec(run_dir=tmp_path / "vm", kernel=tmp_path / "k", initrd=tmp_path / "i")
    spec.run_dir.mkdir()
    supervisor = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    agent = FakeAgentSilentAtFirst(spec.run_dir / "agent.sock", silent)

    async def go() -> list[str]:
        server = await asyncio.start_unix_server(agent.serve, path=str(agent.path))
        try:
            vm = await VM.reattach(spec, "tcg", supervisor.pid)
            try:
                return [vm.ready["kernel"]]
            finally:
                vm._watch.cancel()
                assert vm.agent is not None
                await vm.agent.close()
        finally:
            server.close()
            await server.wait_closed()

    try:
        answer = asyncio.run(go())
        return agent.connections, answer
    finally:
        supervisor.kill()
        supervisor.wait()


def test_an_agent_silent_on_the_first_connection_is_reached_on_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vm_module, "REATTACH_ANSWER", 0.3)
    connections, answer = _reattach(tmp_path, silent=1)
    assert (connections, answer) == (2, ["fake"])


def test_an_agent_that_never_answers_fails_the_reattach_instead_of_hanging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vm_module, "REATTACH_ANSWER", 0.2)
    monkeypatch.setattr(vm_module, "REATTACH_TIMEOUT", 0.5)
    with pytest.raises(OCIRuntimeError, match=r"did not answer in 0\.5s"):
        _reattach(tmp_path, silent=100)
