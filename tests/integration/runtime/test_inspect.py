"""The inspection API of a running crio through ``crio status``: /info, /config, /containers."""

from __future__ import annotations

import json
import subprocess
import tomllib
from pathlib import Path

from crio.api import api_pb2 as api
from support.cri import container_config
from support.node import Node


def status(node: Node, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        node.crio.command("status", *args), capture_output=True, text=True, timeout=60
    )


def test_status_info_config_and_containers(node: Node, tmp_path: Path) -> None:
    info = json.loads(status(node, "info").stdout)
    assert info["storage_root"] == str(node.base / "root")
    assert info["cgroup_driver"] == "cgroupfs"
    assert info["storage_driver"] in ("overlay", "vfs")
    assert set(info) >= {"storage_image", "default_id_mappings"}

    config = tomllib.loads(status(node, "config").stdout)
    assert config["crio"]["api"]["listen"] == str(node.crio.socket)

    pod_config = node.pod()
    pod_id = node.cri.run_pod(pod_config, runtime_handler="runc")
    (tmp_path / "data").mkdir()
    ctr_config = container_config("web", ["sleep", "3600"], labels={"tier": "web"})
    ctr_config.mounts.append(
        api.Mount(container_path="/data", host_path=str(tmp_path / "data"), readonly=True)
    )
    cid = node.cri.create(pod_id, ctr_config, start=True)
    ctr = json.loads(status(node, "containers", cid).stdout)
    cri = node.cri.status(cid)
    assert ctr["sandbox"] == pod_id and ctr["name"] == "web"
    assert ctr["pid"] > 0 and Path(f"/proc/{ctr['pid']}").exists()
    assert ctr["root"] and Path(ctr["root"]).is_dir()
    assert ctr["labels"]["tier"] == "web" and ctr["log_path"] == cri.log_path
    assert ctr["ip_addresses"] == [] and ctr["host_network"] is True
    assert ctr["created_time"] == cri.created_at
    assert {"container_path": "/data", "host_path": str(tmp_path / "data"), "readonly": True,
            "propagation": "private"} in ctr["mounts"]  # fmt: skip

    missing = status(node, "containers", "f" * 64)
    assert missing.returncode == 1
    assert f"container with ID: {'f' * 64} not found" in missing.stderr


def test_status_without_crio_says_so(tmp_path: Path) -> None:
    from support.daemon import CRIO

    result = subprocess.run(
        [CRIO, "--config", "/dev/null", "status", "--socket", str(tmp_path / "none.sock"), "info"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert "is crio running?" in result.stderr
