"""kpod ps, pods and inspect over what crio made through CRI, with crio running and stopped."""

from __future__ import annotations

import json

from crio.api import api_pb2 as api
from support.cri import container_config, wait_until
from support.kpod import kpod, run_kpod
from support.node import Node

UNTIL_TOLD = ["sh", "-c", "while [ ! -e /tmp/die ]; do sleep 0.05; done; exit 3"]


def test_ps_pods_and_inspect_follow_crio(node: Node) -> None:
    pod_id = node.cri.run_pod(node.pod(name="web", labels={"app": "web"}), runtime_handler="runc")
    running = node.cri.create(
        pod_id, container_config("srv", UNTIL_TOLD, labels={"tier": "front"}), start=True
    )
    created = node.cri.create(pod_id, container_config("later"))
    done = node.cri.create(pod_id, container_config("once", ["true"]), start=True)
    wait_until(lambda: node.cri.status(done).state == api.CONTAINER_EXITED, what="exit")

    ps = run_kpod(node.crio, "ps")
    assert ps.returncode == 0, ps.stderr
    header, *lines = ps.stdout.splitlines()
    assert header.split()[:3] == ["CONTAINER", "ID", "IMAGE"] and "NAMES" in header
    assert [line.split()[0] for line in lines] == [running[:12]]
    assert "Up " in lines[0] and "k8s_srv_web_crio-test_" in lines[0]
    assert '"sh -c while [ ! -e …"' in lines[0]  # Docker's 20-column command

    every = kpod(node.crio, "ps", "-a", "-q", "--no-trunc").stdout.split()
    assert sorted(every) == sorted([running, created, done])
    rows = [
        json.loads(x)
        for x in kpod(node.crio, "ps", "-a", "--format", "json").stdout.split("\n")
        if x
    ]
    by_id = {r["ID"]: r for r in rows}
    assert by_id[created[:12]]["Status"] == "Created"
    assert by_id[done[:12]]["Status"].startswith("Exited (0) ")
    assert by_id[running[:12]]["State"] == "running"

    def ids(*args: str) -> list[str]:
        result = kpod(node.crio, "ps", "-a", "-q", *args)
        assert result.returncode == 0, result.stderr
        return result.stdout.split()

    assert ids("--filter", "status=exited") == [done[:12]]
    assert ids("--filter", "label=tier=front") == [running[:12]]
    assert ids("--filter", "name=once") == [done[:12]]
    assert ids("--filter", f"id={created[:6]}") == [created[:12]]
    assert sorted(ids("--filter", "pod=web")) == sorted(x[:12] for x in (running, created, done))
    assert len(ids("--filter", "ancestor=localhost/busybox:latest")) == 3
    assert ids("--filter", "ancestor=nothing:here") == []
    bad = kpod(node.crio, "ps", "--filter", "status=sleepy")
    assert bad.returncode == 125 and "status" in bad.stderr

    table = kpod(node.crio, "ps", "--pod", "--size", "--format", "table {{.ID}}\\t{{.PodName}}")
    assert table.stdout.splitlines()[0].split() == ["CONTAINER", "ID", "POD", "NAME"]
    sized = kpod(node.crio, "ps", "--size").stdout
    assert "virtual" in sized and "SIZE" in sized

    pods = kpod(node.crio, "pods", "--format", "{{.Name}} {{.Status}} {{.Containers}}")
    assert "web Ready 3" in pods.stdout.splitlines()
    assert run_kpod(
        node.crio, "pods", "-q", "--no-trunc", "-f", "label=app=web"
    ).stdout.split() == [pod_id]

    info = json.loads(kpod(node.crio, "inspect", running).stdout)[0]
    assert info["Id"] == running and info["State"]["Running"] and info["State"]["Pid"] > 0
    assert info["Path"] == "sh" and info["Config"]["Labels"] == {"tier": "front"}
    assert info["Pod"] == pod_id and info["Runtime"] == "runc"
    fmt = kpod(node.crio, "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", done)
    assert fmt.stdout.strip() == "exited 0"
    pod = json.loads(kpod(node.crio, "inspect", "--type", "pod", "web").stdout)[0]
    assert pod["Id"] == pod_id and {c["Id"] for c in pod["Containers"]} == {running, created, done}
    image = kpod(node.crio, "inspect", "--type", "image", "-f", "{{.Id}}", "localhost/busybox")
    assert image.returncode == 0 and image.stdout.startswith("sha256:")
    missing = run_kpod(node.crio, "inspect", running, "nosuchthing")
    assert missing.returncode == 1 and "No such object: nosuchthing" in missing.stderr
    assert len(json.loads(missing.stdout)) == 1
    assert kpod(node.crio, "inspect", "-f", "{{.Nope}}", running).returncode == 125

    # crio down: a container that exits meanwhile shows as exited from the runtime's state.
    rootfs = json.loads(
        node.cri.rt.ContainerStatus(
            api.ContainerStatusRequest(container_id=running, verbose=True)
        ).info["info"]
    )["rootfs"]

    def exit_while_down() -> None:
        with open(f"{rootfs}/tmp/die", "w"):
            pass
        wait_until((node.base / "exits" / running).exists, what="conmon's exit file")
        state = run_kpod(
            node.crio, "inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", running
        )
        assert state.stdout.strip() == "exited 3", state.stderr
        assert kpod(node.crio, "ps", "-q").stdout == ""

    node.restart(between=exit_while_down)
    assert node.cri.status(running).exit_code == 3
    node.cri.stop_pod(pod_id)
    node.cri.remove_pod(pod_id)
    assert kpod(node.crio, "ps", "-a", "-q").stdout == ""
