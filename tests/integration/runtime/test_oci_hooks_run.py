"""OCI hooks from hooks_dir, run by real runc and crun: every stage, every ``when`` condition.

The hook program is a script that appends its stage (its first argument),
the container state the runtime gives it on stdin, and whether the state's
bundle still had its config.json, to a log.
startContainer hooks run inside the container (their path resolves there),
so that stage's hook is the container's own /bin/sh writing into its rootfs.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crio.api import api_pb2 as api
from support.cri import container_config
from support.daemon import CrioProcess
from support.node import HANDLERS, Node, start_node, stop_node

HOST_STAGES = ("prestart", "createRuntime", "createContainer", "poststart", "poststop")
#: Appends one JSON line: its stage, the state on stdin, whether the bundle was there.
RECORDER = """#!/usr/bin/python3
import json, os, sys
state = json.load(sys.stdin)
present = os.path.exists(os.path.join(state.get("bundle", "/nonexistent"), "config.json"))
line = json.dumps({"stage": sys.argv[1], "state": state, "bundle_present": present})
with open("{log}", "a") as log:
    log.write(line + "\\n")
"""


def _hook(stages: list[str], args: list[str], when: dict[str, Any], path: str) -> str:
    doc = {"version": "1.0.0", "hook": {"path": path, "args": args}, "when": when,
           "stages": stages}  # fmt: skip
    return json.dumps(doc)


def _hooks_layout(base: Path) -> dict[str, dict[str, Any]]:
    log = base / "hooks.log"
    program = base / "record-hook"
    program.write_text(RECORDER.replace("{log}", str(log)))
    program.chmod(0o755)
    usr, etc = base / "hooks-usr", base / "hooks-etc"
    usr.mkdir()
    etc.mkdir()
    record = str(program)
    for stage in HOST_STAGES:
        (usr / f"10-{stage}.json").write_text(
            _hook([stage], ["record-hook", stage], {"always": True}, record)
        )
    # Masked by the file of the same name in the later directory.
    (usr / "20-when.json").write_text(_hook(["prestart"], ["x", "masked"], {"always": True},
                                            record))  # fmt: skip
    files = {
        "10-startContainer.json": _hook(
            ["startContainer"],
            ["sh", "-c", "cat > /dev/null; echo startContainer >> /hook.log"],
            {"always": True},
            "/bin/sh",
        ),
        "20-when.json": _hook(
            ["prestart"],
            ["record-hook", "annotated"],
            {"annotations": {r"^org\.example\.hook$": "^yes$"}},
            record,
        ),
        "30-command.json": _hook(
            ["prestart"], ["record-hook", "command"], {"commands": ["(^|/)sleep$"]}, record
        ),
        "40-binds.json": _hook(
            ["prestart"], ["record-hook", "binds"], {"hasBindMounts": True}, record
        ),
        "50-never.json": _hook(["prestart"], ["record-hook", "never"], {"always": False}, record),
    }
    for name, text in files.items():
        (etc / name).write_text(text)
    return {"crio.runtime": {"hooks_dir": [str(usr), str(etc)]}}


@pytest.fixture(scope="module")
def hooked() -> Iterator[Node]:
    node = start_node(_hooks_layout)
    try:
        yield node
    finally:
        stop_node(node)


def _calls(node: Node, cid: str) -> list[tuple[str, dict[str, Any]]]:
    calls = []
    for line in (node.base / "hooks.log").read_text().splitlines():
        doc = json.loads(line)
        if doc["state"].get("id") == cid:
            assert doc["bundle_present"], doc  # poststop too: the bundle goes after it
            calls.append((doc["stage"], doc["state"]))
    return calls


def _bundle(node: Node, cid: str) -> str:
    reply = node.cri.rt.ContainerStatus(api.ContainerStatusRequest(container_id=cid, verbose=True))
    return str(json.loads(reply.info["info"])["bundle"])


@pytest.mark.parametrize("handler", HANDLERS)
def test_every_stage_runs_with_the_container_state(hooked: Node, handler: str) -> None:
    node = hooked
    pod_id = node.cri.run_pod(node.pod(), runtime_handler=handler)
    cid = node.cri.create(pod_id, container_config("plain", ["sleep", "3600"]), start=True)
    bundle = _bundle(node, cid)
    assert node.cri.exec(cid, ["cat", "/hook.log"]).stdout == b"startContainer\n"
    node.cri.stop(cid)
    node.cri.remove(cid)  # poststop runs at the runtime's delete
    calls = _calls(node, cid)
    stages = [stage for stage, _ in calls]
    # prestart hooks in file-name order: the always-hooks, then the matching command hook.
    assert stages == ["prestart", "command", "createRuntime", "createContainer", "poststart",
                      "poststop"], stages  # fmt: skip
    states = dict(calls)
    # (runc and crun disagree on the status they report before poststop.)
    assert states["poststart"]["pid"] > 0
    assert states["poststop"]["status"] == "stopped"
    assert {state["bundle"] for _, state in calls} == {bundle}
    assert states["prestart"]["annotations"]["io.kubernetes.cri-o.ContainerID"] == cid


@pytest.mark.parametrize("handler", HANDLERS)
def test_annotations_and_bind_mounts_choose_hooks(
    hooked: Node, handler: str, tmp_path: Path
) -> None:
    node = hooked
    pod_id = node.cri.run_pod(node.pod(), runtime_handler=handler)
    config = container_config(
        "chosen",
        ["sh", "-c", "sleep 3600"],
        mounts=[api.Mount(container_path="/data", host_path=str(tmp_path))],
    )
    config.annotations["org.example.hook"] = "yes"
    cid = node.cri.create(pod_id, config, start=True)
    prestart = [stage for stage, _ in _calls(node, cid) if stage not in HOST_STAGES]
    # Not "command" (args[0] is sh), never "never", never the masked file's "x".
    assert prestart == ["annotated", "binds"]
    node.cri.stop(cid)
    node.cri.remove(cid)


def test_a_bad_hook_file_stops_crio_naming_it() -> None:
    crio = CrioProcess(lambda base: {"crio.runtime": {"hooks_dir": [str(base / "hooks")]}})
    try:
        (crio.base / "hooks").mkdir()
        bad = crio.base / "hooks" / "bad.json"
        bad.write_text(_hook(["prestart"], [], {"always": True}, "/no/such/hook"))
        done = subprocess.run(crio.command(), capture_output=True, text=True, timeout=120)
        assert done.returncode == 1
        assert (
            f"crio.runtime.hooks_dir: hook file {bad}: hook.path: /no/such/hook is not an "
            "executable file"
        ) in done.stderr, done.stderr
    finally:
        crio.cleanup()
