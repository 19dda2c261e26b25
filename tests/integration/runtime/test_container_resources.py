"""oom_score_adj below what crio may set (the shared resource cases are in ../conformance)."""

from __future__ import annotations

from pathlib import Path

from crio.api import api_pb2 as api
from support.cri import container_config
from support.node import Node

MiB = 1024 * 1024


def test_negative_oom_score_adj_is_raised_to_what_crio_may_set(node: Node) -> None:
    pod_id = node.cri.run_pod(node.pod())
    resources = api.LinuxContainerResources(oom_score_adj=-997)  # a Guaranteed pod's value
    cid = node.cri.create(pod_id, container_config("c", resources=resources), start=True)
    own = int(Path("/proc/self/oom_score_adj").read_text())
    assert int(node.cri.exec(cid, ["cat", "/proc/1/oom_score_adj"]).stdout) == max(own, 0)
