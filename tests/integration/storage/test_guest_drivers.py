"""devicemapper and NFS image stores for real, in a qemu guest whose kernel has them.

This host's kernel has neither device-mapper nor nfsd, so one guest
(tests/support/storage_guest.py: the pod-VM Debian kernel, TCG here) runs,
in a single pytest process:

* the whole graph-driver contract (tests/contract) against devicemapper, on
  a thin pool on loop files on the guest's scratch disk;
* tests/integration/storage/test_in_guest_pods.py: crio with
  storage_driver = "devicemapper" pulling an image and running a container
  that writes to its rootfs; the driver on an operator's pool
  (dm.thinpooldev); and crio running a pod from an image that exists only
  on a real NFS export (the guest's nfsd, mounted over NFSv4).

The results come back as JUnit XML; each test here checks its share of them.
Skips, with the reason, only where qemu or the guest kernel is missing.
"""

from __future__ import annotations

import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.storage_guest import SCRATCH, GuestUnavailable, storage_guest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

REPO = Path(__file__).resolve().parents[3]
#: Small enough for the scratch disk and quick mkfs under TCG; each one is tested.
CONTRACT_OPTIONS = ("dm.basesize=256M", "dm.loopdatasize=3G", "dm.loopmetadatasize=64M",
                    "dm.fs=ext4", "dm.min_free_space=5%")  # fmt: skip


@dataclass
class GuestRun:
    cases: dict[str, tuple[str, str]]  # "file::name" -> (outcome, message)
    output: str
    seconds: float

    def of(self, prefix: str) -> dict[str, tuple[str, str]]:
        return {k: v for k, v in self.cases.items() if k.startswith(prefix)}

    def explain(self, cases: dict[str, tuple[str, str]]) -> str:
        bad = {k: v for k, v in cases.items() if v[0] != "passed"}
        return "\n".join(f"{k}: {o}: {m}" for k, (o, m) in bad.items()) or self.output[-3000:]


def _parse(xml: str) -> dict[str, tuple[str, str]]:
    cases: dict[str, tuple[str, str]] = {}
    for case in ET.fromstring(xml).iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"skipped": "skipped"}.get(child.tag, "failed")
                message = (child.get("message") or "") + "\n" + (child.text or "")[-2000:]
        cases[name] = (outcome, message)
    return cases


@pytest.fixture(scope="module")
def guest_run() -> Iterator[GuestRun]:
    try:
        with storage_guest() as guest:
            started = time.monotonic()
            options = " ".join(f"--driver-option {o}" for o in CONTRACT_OPTIONS)
            result = guest.run(
                ["sh", "-c",
                 f"{sys.executable} -m pytest -p no:cacheprovider -p pytest_timeout -q -rA "
                 f"--durations=20 "
                 f"--junitxml={SCRATCH}/junit.xml tests/contract "
                 f"tests/integration/storage/test_in_guest_pods.py --driver devicemapper "
                 f"--driver-root {SCRATCH} {options} 2>&1 | tail -60; "
                 f"cat {SCRATCH}/junit.xml"],
                # No plugin autoload: importing hypothesis and friends costs minutes under TCG.
                env=["CRIO_STORAGE_GUEST=1", "PYTHONDONTWRITEBYTECODE=1", "HOME=/run",
                     "PYTEST_DISABLE_PLUGIN_AUTOLOAD=1"],
                cwd=str(REPO), timeout=3000,
            )  # fmt: skip
            seconds = time.monotonic() - started
            text = result.stdout.decode(errors="replace")
            head, _, xml = text.partition("<?xml")
            print(f"\nguest pytest: {seconds:.0f}s (boot {guest.vm.boot_seconds:.0f}s)\n{head}")
            cases = _parse("<?xml" + xml) if xml else {}
            yield GuestRun(cases, head + result.stderr.decode(errors="replace"), seconds)
    except GuestUnavailable as exc:
        pytest.skip(str(exc))


def test_devicemapper_passes_the_whole_contract_in_the_guest(guest_run: GuestRun) -> None:
    contract = guest_run.of("tests.contract")
    assert len(contract) == 10, guest_run.explain(contract)
    assert all(outcome == "passed" for outcome, _ in contract.values()), guest_run.explain(contract)


def test_crio_pulls_and_runs_a_pod_on_devicemapper_in_the_guest(guest_run: GuestRun) -> None:
    case = guest_run.of("tests.integration.storage.test_in_guest_pods::test_a_pod_pulls")
    assert [o for o, _ in case.values()] == ["passed"], guest_run.explain(case)


def test_crio_runs_a_pod_from_an_image_only_on_nfs_in_the_guest(guest_run: GuestRun) -> None:
    case = guest_run.of("tests.integration.storage.test_in_guest_pods::test_a_pod_runs_from")
    assert [o for o, _ in case.values()] == ["passed"], guest_run.explain(case)


def test_a_given_thin_pool_is_used_and_an_occupied_one_refused_in_the_guest(
    guest_run: GuestRun,
) -> None:
    case = guest_run.of("tests.integration.storage.test_in_guest_pods::test_a_given_thin_pool")
    assert [o for o, _ in case.values()] == ["passed"], guest_run.explain(case)
