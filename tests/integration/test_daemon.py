"""The crio process: its socket, its RPCs over the socket, its signals."""

from __future__ import annotations

import signal
import socket
import stat
import subprocess
import time

import grpc
import pytest

from crio.api import api_pb2 as api
from support.daemon import CrioProcess, write_config
from support.vendor import DEMO_REASON, write_vendor_distribution


def test_serves_version_status_and_unimplemented_then_stops_on_sigterm(
    crio: CrioProcess,
) -> None:
    crio.start()
    mode = crio.socket.stat().st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o660
    with crio.channel() as channel:
        runtime = crio.runtime_stub(channel)
        version = runtime.Version(api.VersionRequest())
        assert (version.runtime_name, version.runtime_api_version) == ("crio", "v1")
        status = runtime.Status(api.StatusRequest())
        conditions = {c.type: c for c in status.status.conditions}
        assert conditions["RuntimeReady"].status
        # The private network_dir is empty: no CNI config yet.
        assert not conditions["NetworkReady"].status
        assert conditions["NetworkReady"].reason == "NetworkPluginNotReady"
        assert str(crio.base / "net.d") in conditions["NetworkReady"].message
        with pytest.raises(grpc.RpcError) as info:
            runtime.ListMetricDescriptors(api.ListMetricDescriptorsRequest())
        assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED
    assert crio.stop(signal.SIGTERM) == 0
    assert not crio.socket.exists()
    assert "done in" in crio.log_text()  # one debug line per RPC with its duration


def test_network_ready_once_a_config_appears(crio: CrioProcess) -> None:
    crio.start()
    (crio.base / "net.d" / "10-test.conflist").write_text(
        '{"cniVersion": "1.0.0", "name": "t", "plugins": [{"type": "loopback"}]}'
    )
    with crio.channel() as channel:
        status = crio.runtime_stub(channel).Status(api.StatusRequest())
    assert {c.type: c.status for c in status.status.conditions}["NetworkReady"]


def test_stale_socket_is_replaced(crio: CrioProcess) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(crio.socket))
    stale.close()  # the file stays, nobody listens
    crio.start()
    with crio.channel() as channel:
        crio.runtime_stub(channel).Version(api.VersionRequest())


def test_second_crio_on_a_live_socket_is_refused(crio: CrioProcess) -> None:
    crio.start()
    second = subprocess.run(crio.command(), capture_output=True, text=True, timeout=60)
    assert second.returncode == 1
    assert "another process is serving on" in second.stderr
    assert "Traceback" not in second.stderr
    with crio.channel() as channel:  # the first one is unharmed
        crio.runtime_stub(channel).Version(api.VersionRequest())


def test_sighup_reloads_and_keeps_serving(crio: CrioProcess) -> None:
    crio.start()
    assert crio.proc is not None
    crio.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "configuration reloaded" not in crio.log_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "configuration reloaded" in crio.log_text()
    with crio.channel() as channel:
        crio.runtime_stub(channel).Version(api.VersionRequest())
    assert crio.stop(signal.SIGINT) == 0


def test_broken_config_stops_crio_with_one_line(crio: CrioProcess) -> None:
    write_config(crio.base / "99-bad.conf", {"crio.runtime": {"ctr_stop_timeout": "soon"}})
    result = subprocess.run(crio.command(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"crio: {crio.base / '99-bad.conf'}: crio.runtime.ctr_stop_timeout: got 'soon', "
        "expected a valid integer, unable to parse string as an integer"
    ]


def test_unknown_runtime_type_stops_crio_naming_file_and_key(crio: CrioProcess) -> None:
    drop_in = write_config(
        crio.base / "50-kata.conf", {"crio.runtime.runtimes.kata": {"runtime_type": "kata"}}
    )
    result = subprocess.run(crio.command(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith(
        f"crio: {drop_in}: crio.runtime.runtimes.kata.runtime_type: "
        "no plugin provides runtime_type 'kata'"
    )
    assert not crio.socket.exists()


def test_vendor_runtime_from_its_own_distribution_is_used(crio: CrioProcess) -> None:
    site = write_vendor_distribution(crio.base / "site")
    write_config(
        crio.base / "50-demo.conf", {"crio.runtime.runtimes.demo": {"runtime_type": "demo"}}
    )
    crio.start(env={"PYTHONPATH": str(site)})
    with crio.channel() as channel:
        status = crio.runtime_stub(channel).Status(api.StatusRequest())
    ready = {c.type: c for c in status.status.conditions}["RuntimeReady"]
    assert not ready.status
    assert ready.reason == DEMO_REASON
    assert ready.message == "handler demo: demo runtime demo says hello"
