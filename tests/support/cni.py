"""Private CNI surroundings for a test: its own bridge, subnet, IPAM dir, netns names.

Several test runs share this host, so everything a test makes has a random
name, and the leak checks look only at the test's own objects: its bridge's
veths, its host-local leases, iptables rules and chains that name its
network, and its netns.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import secrets
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CNIEnv", "iptables_leftovers", "make_netns", "remove_netns"]

PLUGIN_DIRS = ["/usr/lib/cni", "/opt/cni/bin"]


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=check)


def make_netns(name: str) -> str:
    """A named network namespace with ``lo`` up; returns its path under /run/netns."""
    _run("ip", "netns", "add", name)
    _run("ip", "-n", name, "link", "set", "lo", "up")
    return f"/run/netns/{name}"


def remove_netns(name: str) -> None:
    _run("ip", "netns", "del", name, check=False)


def chain_names(network: str, container_id: str) -> tuple[str, str]:
    """The bridge ipMasq chain and the portmap DNAT chain for one attachment."""
    digest = hashlib.sha512((network + container_id).encode()).hexdigest()
    return f"CNI-{digest[:24]}", f"CNI-DN-{digest[:21]}"


def iptables_leftovers(
    network: str, container_ids: Iterable[str], binary: str = "iptables"
) -> list[str]:
    """nat-table rules and chains that belong to these attachments."""
    text = _run(binary, "-t", "nat", "-S", check=False).stdout
    marks = []
    for cid in container_ids:
        marks.append(f'id: \\"{cid}\\"')
        marks.extend(chain_names(network, cid))
    return [line for line in text.splitlines() if any(m in line for m in marks)]


def _delete_iptables(network: str, container_ids: Iterable[str]) -> None:
    ids = list(container_ids)
    chains = {c for cid in ids for c in chain_names(network, cid)}
    for binary in ("iptables", "ip6tables"):
        for line in iptables_leftovers(network, ids, binary):
            if line.startswith("-A "):
                subprocess.run(
                    f"{binary} -t nat -D {line[3:]}", shell=True, capture_output=True, check=False
                )
        for chain in chains:
            _run(binary, "-t", "nat", "-F", chain, check=False)
            _run(binary, "-t", "nat", "-X", chain, check=False)


@dataclass
class CNIEnv:
    """One private network: bridge, /24 subnet, conflist dir, IPAM dir, runroot."""

    base: Path
    name: str = field(default_factory=lambda: f"crio-t-{secrets.token_hex(4)}")
    bridge: str = field(default_factory=lambda: f"cbr{secrets.token_hex(4)}")
    subnet: str = field(
        default_factory=lambda: f"10.{random.randint(100, 250)}.{random.randint(0, 255)}.0/24"
    )
    netns_names: list[str] = field(default_factory=list)
    container_ids: list[str] = field(default_factory=list)
    #: Other links a test saw the plugins make (e.g. bandwidth's ifb), removed at cleanup.
    links: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.net_dir = self.base / "net.d"
        self.ipam_dir = self.base / "ipam"
        self.runroot = self.base / "runroot"
        self.net_dir.mkdir(parents=True, exist_ok=True)

    def conflist(
        self,
        *,
        portmap: bool = True,
        bandwidth: bool = False,
        ip_ranges: bool = False,
        version: str = "1.0.0",
    ) -> dict[str, Any]:
        """bridge + host-local (+ portmap, bandwidth); with ``ip_ranges`` the
        range comes only from the pod CIDR (host-local 1.1.1 appends runtime
        ranges to static ones, which gives a pod two addresses)."""
        ipam: dict[str, Any] = {
            "type": "host-local",
            "dataDir": str(self.ipam_dir),
            "routes": [{"dst": "0.0.0.0/0"}],
        }
        bridge: dict[str, Any] = {
            "type": "bridge",
            "bridge": self.bridge,
            "isGateway": True,
            "ipMasq": True,
            "hairpinMode": True,
            "ipam": ipam,
        }
        if ip_ranges:
            bridge["capabilities"] = {"ipRanges": True}
        else:
            ipam["ranges"] = [[{"subnet": self.subnet}]]
        plugins: list[dict[str, Any]] = [bridge]
        if portmap:
            plugins.append({"type": "portmap", "capabilities": {"portMappings": True}})
        if bandwidth:
            plugins.append({"type": "bandwidth", "capabilities": {"bandwidth": True}})
        return {"cniVersion": version, "name": self.name, "plugins": plugins}

    def write(self, doc: dict[str, Any] | str, filename: str = "10-test.conflist") -> Path:
        path = self.net_dir / filename
        tmp = path.with_name(f".{filename}.tmp")
        tmp.write_text(doc if isinstance(doc, str) else json.dumps(doc))
        os.replace(tmp, path)
        return path

    def netns(self) -> str:
        name = f"crio-t-{secrets.token_hex(5)}"
        self.netns_names.append(name)
        return make_netns(name)

    def new_id(self) -> str:
        cid = secrets.token_hex(32)
        self.container_ids.append(cid)
        return cid

    def leases(self) -> list[str]:
        """host-local lease files (one per allocated address) of this network."""
        directory = self.ipam_dir / self.name
        if not directory.is_dir():
            return []
        return sorted(p.name for p in directory.iterdir() if p.name[0].isdigit() or ":" in p.name)

    def veths(self) -> list[str]:
        """Host-side interfaces still enslaved to this test's bridge."""
        out = _run("ip", "-o", "link", "show", "master", self.bridge, check=False).stdout
        return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if line]

    def leftovers(self) -> dict[str, list[str]]:
        """Everything this test's attachments could have left behind."""
        return {
            "veths": self.veths(),
            "leases": self.leases(),
            "iptables": iptables_leftovers(self.name, self.container_ids)
            + iptables_leftovers(self.name, self.container_ids, "ip6tables"),
        }

    def cleanup(self) -> None:
        """Remove what the test made, whatever state it ended in."""
        for name in self.netns_names:
            remove_netns(name)
        _delete_iptables(self.name, self.container_ids)
        for link in [*self.links, self.bridge]:
            _run("ip", "link", "del", link, check=False)
