#!/usr/bin/env python3
"""The kill-restart soak: ``--kills N`` SIGKILLs of a real crio under a churn of pods.

The same harness as ``tests/integration/chaos/test_kill_restart.py`` (see
``tests/support/chaos.py``), run longer. Printed: kills, operations (calls
acknowledged, failed, cut off by a kill), lost objects (acknowledged and
then missing or in an impossible state), resurrected and ghost objects,
unexpected errors, and leaked objects: what the host still holds of the run
once everything was removed through CRI and crio stopped. Also the time
crio took to come back (start to serving, restore and repair included).

Run as root: ``.venv/bin/python bench/chaos.py [--kills 200] [--pods 50] [--workers 6]``.
Nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support.chaos_env import chaos_env, crio_check, leftovers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--pods", type=int, default=50, help="most pods at a time")
    parser.add_argument("--workers", type=int, default=6, help="client threads")
    parser.add_argument("--seed", type=int, default=int.from_bytes(os.urandom(4), "big"))
    parser.add_argument("--check-every", type=int, default=10, help="crio check every N kills")
    parser.add_argument("--min-gap", type=float, default=0.3, help="seconds between kills, least")
    parser.add_argument("--max-gap", type=float, default=2.0, help="seconds between kills, most")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/chaos.py needs root (real runc, conmon, CNI, mounts)", file=sys.stderr)
        return 2
    started = time.monotonic()
    with chaos_env(
        max_pods=args.pods, workers=args.workers, seed=args.seed, check_every=args.check_every
    ) as chaos:
        counts = chaos.run(args.kills, between=(args.min_gap, args.max_gap))
        chaos.remove_everything()
        code, report = crio_check(chaos.crio)
        chaos.stop()
        left = leftovers(chaos)
        restarts = chaos.restart_seconds
    leaked = sum(len(items) for items in left.values())
    counts.leaked = leaked
    print(f"seed {args.seed}, {args.pods} pods at most, {args.workers} workers")
    print(counts.line())
    print(f"objects acknowledged: pods and containers {len(chaos.ever)}")
    if restarts:
        print(
            f"restart to serving: median {statistics.median(restarts) * 1000:.0f} ms, "
            f"max {max(restarts) * 1000:.0f} ms"
        )
    print(f"crio check at the end: exit {code}" + ("" if code == 0 else f"\n{report}"))
    for kind, items in left.items():
        print(f"leaked {kind}: {items[:5]}{' ...' if len(items) > 5 else ''}")
    for problem in counts.problems[:50]:
        print(f"problem: {problem}")
    print(f"wall time {time.monotonic() - started:.0f} s")
    failed = counts.lost or counts.resurrected or counts.ghosts or counts.unexpected or leaked
    return 1 if failed or code else 0


if __name__ == "__main__":
    sys.exit(main())
