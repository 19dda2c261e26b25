"""kpod's read commands on containers of every handler while crio serves them.

kpod observes runc and crun containers itself (files and /proc); a pod VM's
agent answers crio's connection alone, so for VM containers kpod asks the
running crio over CRI. Before that, ``kpod inspect`` of a VM container hung.
kpod runs as its own process here, so that a hang fails the case instead of
the package.
"""

from __future__ import annotations

import json

import pytest

from crio.api import api_pb2 as api
from support.conformance import Case
from support.kpod import run_kpod

pytestmark = pytest.mark.slow


def _kpod(case: Case, *args: str) -> str:
    result = run_kpod(case.node.crio, *args, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_ps_inspect_and_stats_see_a_running_then_exited_container(case: Case) -> None:
    cid = case.run()
    inspected = json.loads(_kpod(case, "inspect", "--type", "container", cid))
    state = inspected[0]["State"]
    assert (state["Status"], state["Running"]) == ("running", True)
    assert state["Pid"] > 0
    assert cid[:12] in _kpod(case, "ps", "--format", "{{.ID}} {{.State}}").split()
    assert f"{cid[:12]} running" in _kpod(case, "ps", "--format", "{{.ID}} {{.State}}")
    stats = _kpod(case, "stats", "--no-stream", "--format", "{{.ID}} {{.PIDs}}", cid)
    shown_id, pids = stats.split()
    assert shown_id == cid[:12]
    # crio's CRI stats (a VM's, which kpod asks crio for) carry no process count.
    assert pids == "--" if case.in_vm else int(pids) >= 1

    case.cri.rt.StopContainer(api.StopContainerRequest(container_id=cid, timeout=0), timeout=120)
    state = json.loads(_kpod(case, "inspect", "--type", "container", cid))[0]["State"]
    assert (state["Status"], state["Running"], state["Pid"]) == ("exited", False, 0)
    assert state["ExitCode"] == case.cri.status(cid).exit_code
    assert f"{cid[:12]} exited" in _kpod(case, "ps", "-a", "--format", "{{.ID}} {{.State}}")
