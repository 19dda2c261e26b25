"""The guest agent's rtnetlink set-up against the real kernel, in a network namespace of its own."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PLUGIN = Path(__file__).resolve().parents[3] / "plugins" / "runtime_clear"

SCRIPT = r"""
import json, subprocess, sys
sys.path.insert(0, sys.argv[1])
import _guest_rtnl as rtnl
subprocess.run(["ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1"], check=True)
subprocess.run(["ip", "link", "set", "d1", "up"], check=True)
index = rtnl.interface_index("d0")
rtnl.apply([
    rtnl.set_link(rtnl.interface_index("lo"), "lo"),
    rtnl.set_link(index, "d0", mtu=1400),
    rtnl.add_address(index, "d0", "10.88.0.5/16"),
    rtnl.add_address(index, "d0", "fd00:88::5/64"),
    rtnl.add_route("default", "10.88.0.1"),
    rtnl.add_route("10.99.0.0/24", "10.88.0.2"),
])
try:
    rtnl.apply([rtnl.add_address(index, "d0", "10.88.0.5/16")])
    again = ""
except OSError as exc:
    again = exc.strerror
ip = lambda *a: json.loads(subprocess.run(["ip", "-j", *a], capture_output=True, check=True).stdout)
print(json.dumps({"link": ip("link", "show", "d0"), "addr": ip("addr", "show", "d0"),
                  "routes": ip("-4", "route", "show"), "lo": ip("link", "show", "lo"),
                  "again": again}))
"""


def test_links_addresses_and_routes_are_set_as_ip_would() -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs root, unshare and ip")
    # A mount namespace too: sysfs shows the namespace's links once mounted there.
    inner = 'mount -t sysfs sysfs /sys && exec "$0" -I -c "$1" "$2"'
    done = subprocess.run(
        ["unshare", "--net", "--mount", "--propagation", "private", "sh", "-c", inner,
         sys.executable, SCRIPT, str(PLUGIN)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["link"][0]["mtu"] == 1400 and "UP" in got["link"][0]["flags"]
    assert "UP" in got["lo"][0]["flags"]
    addresses = {(a["local"], a["prefixlen"]) for a in got["addr"][0]["addr_info"]}
    assert {("10.88.0.5", 16), ("fd00:88::5", 64)} <= addresses
    routes = {(r["dst"], r.get("gateway", "")) for r in got["routes"]}
    assert {("default", "10.88.0.1"), ("10.99.0.0/24", "10.88.0.2")} <= routes
    assert got["again"] == "ip addr add 10.88.0.5/16 dev d0: File exists"
