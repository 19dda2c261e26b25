"""A clear pod outlives crio restarts and crashes; a VM that dies takes its containers along.

One pod VM for this module: crio is restarted (SIGTERM, then SIGKILL) while a
container keeps logging; afterwards its qemu is killed behind crio's back.
This module's VM boots (``vm_template = false``); the others restore theirs
from a template (``test_clear_template.py`` has the template's own cases).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crio.api import api_pb2 as api
from support.cri import container_config
from support.node import Node, start_node, stop_node
from support.vm import vm_assets_or_skip

pytestmark = pytest.mark.slow

TICKER = "i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.3; done"


class Pod:
    def __init__(self, node: Node, vm_root: Path) -> None:
        self.node, self.vm_root = node, vm_root
        self.pod_id = ""
        self.ticker = ""
        self.log_path = Path()

    def vm_dir(self) -> Path:
        return next(self.vm_root.iterdir())

    def ticks(self) -> list[int]:
        log = self.log_path.read_text() if self.log_path.exists() else ""
        return [int(line.rsplit(" ", 1)[1]) for line in log.splitlines() if " tick " in line]


def _wait(predicate: Any, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def pod() -> Iterator[Pod]:
    assets = vm_assets_or_skip()
    vm_root = Path(tempfile.mkdtemp(prefix="crio-vmr-", dir="/tmp"))
    node = start_node(
        {
            "crio.runtime.runtimes.clear": {
                "runtime_type": "vm",
                "runtime_root": str(vm_root),
                "kernel": str(assets.kernel),
                "initrd": str(assets.initrd),
                "boot_timeout": 300,
                "vm_template": False,
            },
            # The 2017 trust mechanism: untrusted pods go to the VM handler.
            "crio.runtime": {"runtime_untrusted_workload": "clear"},
        }
    )
    node.use_loopback_network()
    made = Pod(node, vm_root)
    try:
        untrusted = {"io.kubernetes.cri-o.TrustedSandbox": "false"}
        made.pod_id = node.cri.run_pod(node.pod(host_network=False, annotations=untrusted))
        made.ticker = node.cri.create(
            made.pod_id, container_config("ticker", ["sh", "-c", TICKER]), start=True
        )
        made.log_path = Path(node.cri.status(made.ticker).log_path)
        yield made
    finally:
        try:
            stop_node(made.node)
        finally:
            mounts = Path("/proc/self/mountinfo").read_text()
            shutil.rmtree(vm_root, ignore_errors=True)
            assert str(vm_root) not in mounts


def test_an_untrusted_pod_went_to_the_vm_handler(pod: Pod) -> None:
    assert pod.node.cri.pod_status(pod.pod_id).runtime_handler == "clear"
    release = pod.node.cri.exec(pod.ticker, ["uname", "-r"]).stdout.decode().strip()
    assert release == vm_assets_or_skip().kernel_release


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["restart", "crash"])
def test_the_pod_vm_and_its_container_outlive_crio(pod: Pod, sig: int) -> None:
    _wait(lambda: len(pod.ticks()) >= 2, "ticks in the log")
    supervisor = json.loads((pod.vm_dir() / "supervisor.json").read_text())
    down: dict[str, int] = {}

    def while_down() -> None:
        time.sleep(1.5)  # the container goes on ticking; the agent keeps its output
        down["last"] = max(pod.ticks())

    before = pod.ticks()
    pod.node.restart(sig, between=while_down)
    assert Path(f"/proc/{supervisor['qemu_pid']}").exists(), "crio's restart stopped the VM"
    status = pod.node.cri.status(pod.ticker)
    assert status.state == api.CONTAINER_RUNNING
    # Output made while crio was down is logged after all, and logging goes on.
    _wait(lambda: max(pod.ticks()) > down["last"] + 3, "ticks after the restart")
    ticks = pod.ticks()
    unique = sorted(set(ticks))
    assert unique == list(range(len(unique))), f"a tick was lost: {ticks}"
    if sig == signal.SIGTERM:
        # A clean stop saves what it handled: nothing is delivered twice. After a
        # crash, up to a second of output may be logged again, never lost.
        assert ticks == unique, f"a tick was logged twice: {ticks}"
    assert ticks[: len(before)] == before
    assert pod.node.cri.exec(pod.ticker, ["echo", "still here"]).stdout == b"still here\n"


def test_zz_a_vm_killed_behind_crios_back_takes_its_containers_along(pod: Pod) -> None:
    supervisor = json.loads((pod.vm_dir() / "supervisor.json").read_text())
    os.kill(supervisor["qemu_pid"], signal.SIGKILL)
    _wait(lambda: pod.node.cri.status(pod.ticker).state == api.CONTAINER_EXITED, "the exit")
    status = pod.node.cri.status(pod.ticker)
    assert status.reason == "VMDied"
    assert "qemu exited" in status.message or "signal" in status.message, status.message
    assert status.exit_code == 137
    pod.node.cri.stop_pod(pod.pod_id)
    pod.node.cri.remove_pod(pod.pod_id)
    assert not list(pod.vm_root.iterdir())
    for pid in (supervisor["supervisor_pid"], *supervisor["virtiofsd_pids"]):
        assert not Path(f"/proc/{pid}").exists() or _zombie(pid), f"{pid} outlived its VM"


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True
