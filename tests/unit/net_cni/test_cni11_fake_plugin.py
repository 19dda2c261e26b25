"""STATUS (CNI 1.1), and crio's start-up gc on a CNI 1.1 list, against a fake plugin.

Debian's plugins (1.1.1) speak CNI up to 1.0.0, so no real plugin here
answers STATUS; ``fake-cni-1.1`` is a few lines of shell that does,
logging what it was sent. crio never sends CNI's GC verb; the DEL of its own
stale attachments is tested with the real plugins in tests/integration/net_cni.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from crio.config import NetworkConfig
from crio.network import PodNetwork
from crio_plugins.net_cni import CNINetwork

FAKE = r"""#!/bin/sh
# fake-cni-1.1: answers like a CNI 1.1 plugin; logs command and stdin.
dir=$(dirname "$0")
stdin=$(cat)
printf '%s %s\n' "$CNI_COMMAND" "$stdin" >> "$dir/calls.log"
case "$CNI_COMMAND" in
STATUS)
    if [ -e "$dir/down" ]; then
        echo '{"cniVersion":"1.1.0","code":50,"msg":"the fake datastore is down"}'
        exit 1
    fi ;;
ADD)
    echo '{"cniVersion":"1.1.0","interfaces":[{"name":"eth0","sandbox":"'"$CNI_NETNS"'"}],
           "ips":[{"address":"10.1.2.3/24","interface":0}]}' ;;
VERSION)
    echo '{"cniVersion":"1.1.0","supportedVersions":["1.0.0","1.1.0"]}' ;;
esac
exit 0
"""


@pytest.fixture
def fake_dir(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    plugin = bin_dir / "fake-cni-1.1"
    plugin.write_text(FAKE)
    plugin.chmod(0o755)
    net_dir = tmp_path / "net.d"
    net_dir.mkdir()
    conf = {"cniVersion": "1.1.0", "name": "fake11", "plugins": [{"type": "fake-cni-1.1"}]}
    (net_dir / "10.conflist").write_text(json.dumps(conf))
    return bin_dir


def network(fake_dir: Path) -> CNINetwork:
    config = NetworkConfig(network_dir=str(fake_dir.parent / "net.d"), plugin_dirs=[str(fake_dir)])
    return CNINetwork(config, fake_dir.parent / "runroot")


def calls(fake_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    lines = (fake_dir / "calls.log").read_text().splitlines()
    return [(line.split(" ", 1)[0], json.loads(line.split(" ", 1)[1])) for line in lines]


def test_status_decides_network_ready(fake_dir: Path) -> None:
    (fake_dir / "down").touch()
    net = network(fake_dir)

    async def scenario() -> None:
        await net.start()
        ready, reason, message = net.ready()
        assert (ready, reason) == (False, "NetworkPluginNotReady")
        assert "the fake datastore is down" in message
        (fake_dir / "down").unlink()
        await net.refresh_status()
        assert net.ready() == (True, "", "")
        await net.close()

    asyncio.run(scenario())
    assert [c[0] for c in calls(fake_dir)] == ["STATUS", "STATUS"]


def test_gc_deletes_only_its_stale_attachments_and_never_sends_gc(fake_dir: Path) -> None:
    # CNI's GC would release every attachment of the network the list leaves out:
    # another runtime's (podman's) too, when it shares the network.
    net = network(fake_dir)
    pods = [
        PodNetwork(pod_sandbox_id=c * 8, name=c, namespace="ns", uid=c, netns_path="/proc/1/ns/net")
        for c in ("a", "b")
    ]

    async def scenario() -> None:
        await net.start()
        for p in pods:
            assert (await net.setup(p)).ips == ("10.1.2.3",)
        await net.gc(["a" * 8])
        await net.close()

    asyncio.run(scenario())
    log = calls(fake_dir)
    assert [c[0] for c in log] == ["STATUS", "ADD", "ADD", "DEL"]
    assert log[3][1]["prevResult"]["ips"][0]["address"] == "10.1.2.3/24"
    assert list(net.records()) == ["a" * 8]
