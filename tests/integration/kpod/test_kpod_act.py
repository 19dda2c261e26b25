"""kpod's acting commands on what crio made: crio sees each change at once and after a restart."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import subprocess
from pathlib import Path

import grpc
import pytest

from crio.api import api_pb2 as api
from support.cri import container_config, wait_until
from support.kpod import KPOD, kpod, run_kpod
from support.node import Node

LONG = 20000  # longer than conmon's buffer: the log holds it as partial (P) records
TALK = [
    "sh",
    "-c",
    f"head -c {LONG} /dev/zero | tr '\\0' a; echo; echo oops >&2; echo last; exec sleep 3600",
]


def _on_terminal(node: Node, *args: str) -> tuple[int, bytes]:
    """Run kpod with stdin and stdout on a pty; (exit status, what the terminal showed)."""
    main, child = pty.openpty()
    base = ["--config", str(node.crio.config), "--config-dir", str(node.crio.base)]
    try:
        proc = subprocess.run(
            [KPOD, *base, *args], stdin=child, stdout=child, stderr=subprocess.PIPE, timeout=120
        )
    finally:
        os.close(child)
    shown = b""
    with contextlib.suppress(OSError):  # EIO once drained
        while data := os.read(main, 65536):
            shown += data
    os.close(main)
    return proc.returncode, shown


def _state(node: Node, cid: str) -> int:
    return node.cri.status(cid).state


def test_logs_exec_stats_pause_kill_wait(node: Node) -> None:
    pod_id = node.cri.run_pod(node.pod(name="act"), runtime_handler="runc")
    talker = node.cri.create(pod_id, container_config("talker", TALK), start=True)
    log_path = Path(node.cri.status(talker).log_path)
    wait_until(lambda: b"last" in log_path.read_bytes(), what="the log")

    logs = kpod(node.crio, "logs", talker)
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout.splitlines() == ["a" * LONG, "last"] and logs.stderr == "oops\n"
    tail = kpod(node.crio, "logs", "--tail", "1", "--timestamps", talker)
    (shown_line,) = (tail.stdout + tail.stderr).splitlines()  # the last of both streams
    assert shown_line.startswith("20") and shown_line.split(" ", 1)[1] in ("last", "oops")
    assert kpod(node.crio, "logs", "--since", "2099-01-01T00:00:00Z", talker).stdout == ""
    assert kpod(node.crio, "logs", "--since", "1h", talker).stdout.endswith("last\n")

    shown = kpod(
        node.crio,
        "exec",
        "-e",
        "FOO=bar",
        "-w",
        "/tmp",
        "-u",
        "1000:1001",
        talker,
        "sh",
        "-c",
        "echo $FOO; pwd; id -u; id -g; exit 7",
    )
    assert (shown.returncode, shown.stdout.split()) == (7, ["bar", "/tmp", "1000", "1001"])
    on_tty = _on_terminal(node, "exec", "-t", talker, "sh", "-c", "tty; exit 3")
    assert on_tty[0] == 3 and b"/dev/pts/" in on_tty[1], on_tty
    echoed = run_kpod(node.crio, "exec", "-i", talker, "cat", input=b"hello through stdin")
    assert (echoed.returncode, echoed.stdout) == (0, "hello through stdin")
    assert kpod(node.crio, "exec", "-u", "nobody-here", talker, "true").returncode == 125
    assert kpod(node.crio, "exec", "nosuch", "true").returncode == 1

    stats = kpod(node.crio, "stats", "--no-stream", "-i", "0.2", "--format", "json", talker)
    row = json.loads(stats.stdout)
    assert row["ID"] == talker[:12] and int(row["PIDs"]) >= 1 and " / " in row["MemUsage"]
    assert row["CPUPerc"].endswith("%") and " / " in row["BlockIO"]
    table = kpod(node.crio, "stats", "--no-stream", "-i", "0.2").stdout.splitlines()
    assert table[0].split()[:4] == ["CONTAINER", "ID", "NAME", "CPU"]

    assert kpod(node.crio, "pause", talker).returncode == 0
    assert "(Paused)" in kpod(node.crio, "ps").stdout
    assert _state(node, talker) == api.CONTAINER_RUNNING  # CRI has no paused state
    refused = kpod(node.crio, "exec", talker, "true")
    assert refused.returncode == 1 and "paused" in refused.stderr
    assert kpod(node.crio, "pause", talker).returncode == 1
    assert kpod(node.crio, "unpause", talker).returncode == 0
    assert "(Paused)" not in kpod(node.crio, "ps").stdout
    assert node.cri.exec(talker, ["true"]).exit_code == 0

    # A paused container still stops through crio (the stop thaws it).
    assert kpod(node.crio, "pause", talker).returncode == 0
    node.cri.stop(talker, timeout=5)
    assert node.cri.status(talker).state == api.CONTAINER_EXITED

    victim = node.cri.create(pod_id, container_config("victim"), start=True)
    assert kpod(node.crio, "kill", "-s", "SIGUSR9", victim).returncode == 125
    assert kpod(node.crio, "kill", "-s", "KILL", victim).returncode == 0
    wait_until(lambda: _state(node, victim) == api.CONTAINER_EXITED, what="crio saw the kill")
    assert node.cri.status(victim).exit_code == 137
    assert kpod(node.crio, "kill", victim).returncode == 1  # not running any more

    waiter = node.cri.create(pod_id, container_config("waiter", ["sh", "-c", "sleep 1; exit 4"]))
    node.cri.start(waiter)
    waited = kpod(node.crio, "wait", waiter)
    assert (waited.returncode, waited.stdout) == (4, "4\n")
    assert kpod(node.crio, "wait", victim).stdout == "137\n"
    node.cri.stop_pod(pod_id)
    node.cri.remove_pod(pod_id)


def test_start_stop_rm_through_crio_and_without_it(node: Node) -> None:
    pod_id = node.cri.run_pod(node.pod(name="life"), runtime_handler="crun")
    running = node.cri.create(pod_id, container_config("up"), start=True)
    created = node.cri.create(pod_id, container_config("later"))
    hello = node.cri.create(pod_id, container_config("hello", ["sh", "-c", "echo hi; exit 5"]))

    # crio runs: kpod asks it over CRI, and CRI shows the change at once.
    assert kpod(node.crio, "start", created).returncode == 0
    assert _state(node, created) == api.CONTAINER_RUNNING
    started = kpod(node.crio, "start", "-a", hello)
    assert (started.returncode, started.stdout) == (5, "hi\n")
    assert kpod(node.crio, "start", hello).returncode == 1  # exited: CRI starts once
    refused = kpod(node.crio, "rm", running)
    assert refused.returncode == 1 and "stop it first" in refused.stderr
    assert kpod(node.crio, "stop", "-t", "1", running).returncode == 0
    assert node.cri.status(running).state == api.CONTAINER_EXITED
    assert kpod(node.crio, "rm", running).returncode == 0
    with pytest.raises(grpc.RpcError):
        node.cri.status(running)
    assert kpod(node.crio, "rm", "nosuch").returncode == 1

    # crio stopped: kpod takes the owner lock and runs crio's handlers; crio reads it back.
    doomed = node.cri.create(pod_id, container_config("doomed"), start=True)
    fresh = node.cri.create(pod_id, container_config("fresh"))

    def change_while_down() -> None:
        for args in (("stop", "-t", "0", created), ("rm", "-f", doomed), ("start", fresh)):
            result = kpod(node.crio, *args)
            assert result.returncode == 0, (args, result.stderr)
        listed = kpod(node.crio, "ps", "-q", "--no-trunc", "--filter", "pod=life")
        assert listed.stdout.split() == [fresh]

    node.restart(between=change_while_down)
    assert {c.id for c in node.cri.containers(pod_sandbox_id=pod_id)} == {created, hello, fresh}
    assert node.cri.status(created).state == api.CONTAINER_EXITED
    assert node.cri.status(fresh).state == api.CONTAINER_RUNNING
    # crio watches the exit of the container kpod started while it was down.
    assert kpod(node.crio, "kill", fresh).returncode == 0
    wait_until(lambda: _state(node, fresh) == api.CONTAINER_EXITED, what="crio saw the exit")
    node.cri.stop_pod(pod_id)
    node.cri.remove_pod(pod_id)
