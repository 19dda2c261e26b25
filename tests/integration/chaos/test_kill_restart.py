"""The kill-restart churn: 20 SIGKILLs of a real crio in the middle of 50 pods' lives.

Worker threads create, start, exec in, stop and remove pods and containers
(host network and a private bridge network) and pull and remove an image
from a local registry, while crio is killed at random instants and
restarted (see :mod:`support.chaos`). After each restart every pod and
container crio acknowledged must be listed, in a state its history allows,
none acknowledged as removed may reappear, and ``crio check`` must find the
store and state clean. At the end everything is removed through CRI and the
host must hold nothing of this run: mounts, namespace pins, veths, leases,
iptables rules, cgroups, conmon processes, records, lock files.
"""

from __future__ import annotations

import os
import shutil

import pytest

from support.chaos_env import chaos_env, crio_check, leftovers

KILLS = 20
#: Calls acknowledged between two kills, whatever the machine's load.
ACKNOWLEDGED_BETWEEN = 10

pytestmark = pytest.mark.slow

for tool in ("docker-registry", "skopeo"):
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed", allow_module_level=True)


def test_kills_lose_and_leak_nothing() -> None:
    seed = int.from_bytes(os.urandom(4), "big")
    with chaos_env(max_pods=50, workers=6, seed=seed, check_every=10) as chaos:
        counts = chaos.run(KILLS, between=(0.3, 1.5), acknowledged_between=ACKNOWLEDGED_BETWEEN)
        print(f"seed {seed}: {counts.line()}")
        chaos.remove_everything()
        code, report = crio_check(chaos.crio)
        chaos.stop()
        left = leftovers(chaos)
    assert counts.kills == KILLS
    # The kills did land in the middle of calls, and the churn did work.
    assert counts.cut_off > 0 and counts.acknowledged >= ACKNOWLEDGED_BETWEEN * KILLS, counts.line()
    assert (counts.lost, counts.resurrected, counts.ghosts, counts.unexpected) == (0, 0, 0, 0), (
        counts.problems
    )
    assert code == 0, report
    assert left == {}
