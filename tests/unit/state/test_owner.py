"""The owner lock of a state directory: one crio, or one kpod while none runs."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from crio.errors import WrongStateError
from crio.state.owner import StateOwner

HOLD = """
import sys, time
from crio.state.owner import StateOwner
owner = StateOwner.try_take(sys.argv[1], sys.argv[2])
print("held" if owner else "busy", flush=True)
time.sleep(60)
"""


def _holder(tmp_path: Path, who: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path), who], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_one_owner_at_a_time_and_the_lock_dies_with_its_holder(tmp_path: Path) -> None:
    assert not StateOwner.held(tmp_path)
    proc = _holder(tmp_path, "crio")
    try:
        assert StateOwner.held(tmp_path)
        assert StateOwner.try_take(tmp_path, "kpod") is None
        assert StateOwner.holder(tmp_path) == f"crio {proc.pid}"
        with pytest.raises(WrongStateError, match="another crio"):
            asyncio.run(StateOwner.take(tmp_path, "crio"))
    finally:
        proc.kill()
        proc.wait()
    owner = StateOwner.try_take(tmp_path, "kpod")  # SIGKILL released it
    assert owner is not None and StateOwner.holder(tmp_path).startswith("kpod ")
    owner.release()


def test_crio_waits_while_kpod_holds_it(tmp_path: Path) -> None:
    proc = _holder(tmp_path, "kpod")

    async def wait_then_release() -> str:
        waiting = asyncio.ensure_future(StateOwner.take(tmp_path, "crio"))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        proc.kill()
        owner = await asyncio.wait_for(waiting, 30)
        owner.release()
        return StateOwner.holder(tmp_path)

    try:
        assert asyncio.run(wait_then_release()).startswith("crio ")
    finally:
        proc.kill()
        proc.wait()
