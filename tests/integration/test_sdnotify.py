"""A real crio under a stand-in service manager: READY once it serves, RELOADING, STOPPING."""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path

from crio.api import api_pb2 as api
from support.daemon import CrioProcess


def _receive(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.splitlines())


def test_ready_reload_and_stopping_are_notified(crio: CrioProcess, tmp_path: Path) -> None:
    address = str(crio.base / "notify.sock")
    manager = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    manager.bind(address)
    manager.settimeout(60)
    with manager:
        crio.start("--log-format", "json", wait=False, env={"NOTIFY_SOCKET": address})
        ready = _receive(manager)
        assert ready["READY"] == "1" and ready["STATUS"].startswith("serving CRI on ")
        assert ready["MAINPID"] == str(crio.proc.pid)  # type: ignore[union-attr]
        # READY means serving: the first call succeeds without waiting.
        with crio.channel() as channel:
            reply = crio.runtime_stub(channel).Version(api.VersionRequest(), timeout=5)
            assert reply.runtime_name == "crio"
        (crio.base / "50-reload.conf").write_text('[crio.image]\npause_image = "x/pause:9"\n')
        crio.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
        assert "RELOADING" in _receive(manager)
        assert _receive(manager) == {"READY": "1"}
        assert crio.stop() == 0
        assert _receive(manager)["STOPPING"] == "1"
    records = [json.loads(line) for line in crio.log_text().splitlines() if line.startswith("{")]
    assert any(r.get("rpc") == "Version" and r.get("code") == "OK" for r in records)
    [changed] = [r["msg"] for r in records if r["msg"].startswith("configuration reloaded")]
    assert (
        "crio.image.pause_image changed from 'registry.k8s.io/pause:3.9' to 'x/pause:9'" in changed
    )
    assert "takes effect when crio restarts" in changed
