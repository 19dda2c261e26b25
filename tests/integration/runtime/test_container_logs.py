"""Container logs under load: kubelet-style rotation while a container writes fast, log_size_max."""

from __future__ import annotations

import os
import re
from pathlib import Path

from crio.api import api_pb2 as api
from support.cri import container_config, wait_until
from support.node import Node

#: Writes numbered lines as fast as the shell can.
FAST_WRITER = ["sh", "-c", "i=0; while :; do echo line-$i; i=$((i+1)); done"]
RECORD = re.compile(r"^\S+ (stdout|stderr) ([PF]) (.*)$")


def _lines(*paths: Path) -> list[str]:
    """The container's lines from CRI log files: P records joined with what follows."""
    found, partial = [], ""
    for path in paths:
        for text in path.read_text().splitlines():
            match = RECORD.match(text)
            assert match, f"{path}: not a CRI log record: {text!r}"
            partial += match.group(3)
            if match.group(2) == "F":
                found.append(partial)
                partial = ""
    return found


def _numbers(*paths: Path) -> list[int]:
    lines = _lines(*paths)
    assert all(line.startswith("line-") for line in lines), lines[:5]
    return [int(line.removeprefix("line-")) for line in lines]


def _last_number(path: Path) -> int:
    numbers = [int(n) for n in re.findall(r" F line-(\d+)$", path.read_text(), re.M)]
    return numbers[-1] if numbers else -1


def test_rotation_under_a_fast_writer_loses_nothing(node: Node, handler: str) -> None:
    pod_id = node.cri.run_pod(node.pod(), runtime_handler=handler)
    cid = node.cri.create(pod_id, container_config("chatty", FAST_WRITER), start=True)
    log_path = Path(node.cri.status(cid).log_path)
    rotated = []
    for generation in range(1, 4):
        wait_until(lambda: _last_number(log_path) > 2000 * len(rotated) + 500)
        target = log_path.with_name(f"0.log.{generation}")
        os.rename(log_path, target)  # as the kubelet rotates: rename, then reopen
        node.cri.rt.ReopenContainerLog(api.ReopenContainerLogRequest(container_id=cid))
        rotated.append(target)
        assert log_path.exists()
    wait_until(lambda: _last_number(log_path) > 0)
    node.cri.stop(cid)
    numbers = _numbers(*rotated, log_path)
    # Every line, whole, once, in order across the rotated files and the live one.
    assert numbers == list(range(numbers[0], numbers[-1] + 1))
    assert numbers[0] == 0
    for path in rotated:
        assert path.stat().st_size > 0, f"{path} got no lines"


def test_log_size_max_truncates_through_conmon(make_node: object, handler: str) -> None:
    node: Node = make_node({"crio.runtime": {"log_size_max": 8192}})  # type: ignore[operator]
    pod_id = node.cri.run_pod(node.pod(), runtime_handler=handler)
    cid = node.cri.create(pod_id, container_config("chatty", FAST_WRITER), start=True)
    log_path = Path(node.cri.status(cid).log_path)
    wait_until(lambda: _last_number(log_path) > 5000)
    node.cri.stop(cid)
    assert log_path.stat().st_size <= 8192 + 4096  # truncated, give or take a write
    assert _lines(log_path)  # what is left are CRI records
