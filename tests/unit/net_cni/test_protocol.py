"""The CNI protocol without I/O: requests built, outputs parsed, lists driven."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest

from crio.errors import InvalidRequestError, PluginError
from crio_plugins.net_cni.protocol import (
    Attachment,
    CNIPluginError,
    CNIProtocolError,
    Operation,
    format_cni_args,
    parse_failure,
    parse_result,
    parse_version_info,
    plugin_skipped,
    plugin_stdin,
)

CID = "a" * 64
NETNS = "/run/netns/pod"

# What Debian's bridge 1.1.1 printed for an ADD (cniVersion 1.0.0).
BRIDGE_100 = b"""{
    "cniVersion": "1.0.0",
    "interfaces": [
        {"name": "cni0", "mac": "2e:71:7a:7f:3b:80"},
        {"name": "vethd8c7617d", "mac": "4a:ce:6f:b9:4d:f8"},
        {"name": "eth0", "mac": "0a:a7:0d:94:8b:5d", "sandbox": "/run/netns/pod"}
    ],
    "ips": [{"interface": 2, "address": "10.85.0.2/16", "gateway": "10.85.0.1"}],
    "routes": [{"dst": "0.0.0.0/0"}],
    "dns": {}
}"""

# The 0.4.0 shape: ips carry "version".
BRIDGE_040 = json.dumps(
    {
        "cniVersion": "0.4.0",
        "interfaces": [{"name": "eth0", "mac": "0a:a7:0d:94:8b:5d", "sandbox": NETNS}],
        "ips": [
            {"version": "6", "address": "fd00::5/64", "interface": 0},
            {"version": "4", "address": "10.85.0.5/16", "gateway": "10.85.0.1", "interface": 0},
        ],
        "dns": {"nameservers": ["10.85.0.1"], "search": ["svc.local"], "domain": "local"},
    }
).encode()

CONFLIST: dict[str, Any] = {
    "cniVersion": "1.0.0",
    "name": "crio",
    "plugins": [
        {
            "type": "bridge",
            "bridge": "cni0",
            "capabilities": {"ipRanges": True},
            "ipam": {"type": "host-local"},
        },
        {"type": "portmap", "capabilities": {"portMappings": True}},
        {"type": "tuning"},
    ],
}

PORTS = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]


def attachment(**caps: Any) -> Attachment:
    return Attachment(
        container_id=CID,
        netns=NETNS,
        ifname="eth0",
        cni_args=format_cni_args([("K8S_POD_NAMESPACE", "ns"), ("K8S_POD_NAME", "p")]),
        capability_args=caps,
    )


def op(command: str, caps: dict[str, Any] | None = None, **kw: Any) -> Operation:
    return Operation(
        command,
        CONFLIST["name"],
        CONFLIST["cniVersion"],
        CONFLIST["plugins"],
        attachment(**(caps or {})),
        "/usr/lib/cni:/opt/cni/bin",
        **kw,
    )


def test_add_chains_prev_result_and_filters_runtime_config() -> None:
    add = op("ADD", {"portMappings": PORTS, "ipRanges": [[{"subnet": "10.9.0.0/24"}]]})
    first = add.next_invocation()
    assert first is not None and first.plugin_type == "bridge"
    assert first.env == {
        "CNI_COMMAND": "ADD",
        "CNI_PATH": "/usr/lib/cni:/opt/cni/bin",
        "CNI_CONTAINERID": CID,
        "CNI_NETNS": NETNS,
        "CNI_IFNAME": "eth0",
        "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p",
    }
    conf = json.loads(first.stdin)
    assert conf["name"] == "crio" and conf["cniVersion"] == "1.0.0"
    assert conf["runtimeConfig"] == {"ipRanges": [[{"subnet": "10.9.0.0/24"}]]}
    assert "prevResult" not in conf
    add.receive(0, BRIDGE_100, b"")

    second = add.next_invocation()
    assert second is not None and second.plugin_type == "portmap"
    conf = json.loads(second.stdin)
    assert conf["runtimeConfig"] == {"portMappings": PORTS}
    assert conf["prevResult"] == json.loads(BRIDGE_100)
    # A plugin may change the result; the next one sees the change.
    portmap_out = BRIDGE_100.replace(b"vethd8c7617d", b"vethchanged0")
    add.receive(0, portmap_out, b"")

    third = add.next_invocation()
    assert third is not None and third.plugin_type == "tuning"
    conf = json.loads(third.stdin)
    assert "runtimeConfig" not in conf
    assert conf["prevResult"]["interfaces"][1]["name"] == "vethchanged0"
    add.receive(0, portmap_out, b"")
    assert add.next_invocation() is None
    assert add.result is not None
    assert add.result.pod_ips() == ("10.85.0.2",)


def test_add_leaves_out_portmap_without_host_ports() -> None:
    add = op("ADD")
    assert add.skipped == frozenset({1})
    kinds = []
    while (inv := add.next_invocation()) is not None:
        kinds.append(inv.plugin_type)
        add.receive(0, BRIDGE_100, b"")
    assert kinds == ["bridge", "tuning"]


def test_del_runs_backwards_with_the_cached_result() -> None:
    cached = json.loads(BRIDGE_100)
    delete = op("DEL", {"portMappings": PORTS}, skipped=(), cached=cached)
    seen = []
    while (inv := delete.next_invocation()) is not None:
        conf = json.loads(inv.stdin)
        assert inv.env["CNI_COMMAND"] == "DEL"
        assert conf["prevResult"] == cached
        seen.append(inv.plugin_type)
        delete.receive(0, b"", b"")
    assert seen == ["tuning", "portmap", "bridge"]


def test_del_keeps_adds_choice_of_plugins() -> None:
    delete = op("DEL", skipped=(1,), cached=None)
    seen = []
    while (inv := delete.next_invocation()) is not None:
        assert "prevResult" not in json.loads(inv.stdin)
        seen.append(inv.plugin_type)
        delete.receive(0, b"", b"")
    assert seen == ["tuning", "bridge"]


def test_failure_stops_the_list_with_the_plugins_words() -> None:
    add = op("ADD")
    add.next_invocation()
    out = b'{"cniVersion":"1.0.0","code":7,"msg":"invalid config: bad bridge","details":"x"}'
    with pytest.raises(CNIPluginError) as info:
        add.receive(1, out, b"log line")
    err = info.value
    assert (err.plugin, err.command, err.code) == ("bridge", "ADD", 7)
    assert err.msg == "invalid config: bad bridge" and err.details == "x"
    assert str(err) == (
        "CNI plugin bridge ADD (network crio) failed: invalid config: bad bridge; x"
    )
    assert isinstance(err, PluginError)
    assert add.next_invocation() is None


def test_del_keep_going_collects_errors() -> None:
    delete = op("DEL", skipped=(), keep_going=True)
    seen = []
    while (inv := delete.next_invocation()) is not None:
        seen.append(inv.plugin_type)
        delete.receive(1, b'{"code": 999, "msg": "nope"}', b"")
    assert seen == ["tuning", "portmap", "bridge"]
    assert [e.plugin for e in delete.errors] == ["tuning", "portmap", "bridge"]


def test_check_needs_a_result_and_version() -> None:
    with pytest.raises(CNIProtocolError, match="needs the result of ADD"):
        op("CHECK")
    with pytest.raises(CNIProtocolError, match=r"0\.4\.0"):
        Operation(
            "CHECK",
            "n",
            "0.3.1",
            [{"type": "bridge"}],
            attachment(),
            "/x",
            cached={"cniVersion": "0.3.1"},
        )
    check = op("CHECK", skipped=(1,), cached=json.loads(BRIDGE_100))
    inv = check.next_invocation()
    assert inv is not None and json.loads(inv.stdin)["prevResult"]["cniVersion"] == "1.0.0"
    check.receive(0, b"", b"")


def test_protocol_misuse_is_refused() -> None:
    add = op("ADD")
    with pytest.raises(RuntimeError):
        add.receive(0, b"", b"")
    add.next_invocation()
    with pytest.raises(RuntimeError):
        add.next_invocation()
    with pytest.raises(ValueError):
        op("ADD", keep_going=True)


def test_add_result_must_be_valid() -> None:
    add = op("ADD")
    add.next_invocation()
    with pytest.raises(CNIProtocolError, match=r"bridge.*cniVersion '0.4.0', expected '1.0.0'"):
        add.receive(0, BRIDGE_040, b"")


def test_parse_result_040_with_versions_and_dns() -> None:
    result = parse_result(BRIDGE_040, "0.4.0", "bridge")
    assert result.pod_ips() == ("10.85.0.5", "fd00::5")  # IPv4 first
    assert result.ips[1].gateway == ipaddress.ip_address("10.85.0.1")
    assert result.dns.nameservers == ("10.85.0.1",)
    assert result.dns.search == ("svc.local",) and result.dns.domain == "local"
    assert [i.name for i in result.pod_interfaces()] == ["eth0"]


def test_parse_result_031_and_ipam_only() -> None:
    doc = {"cniVersion": "0.3.1", "ips": [{"version": "4", "address": "10.1.0.9/24"}]}
    result = parse_result(json.dumps(doc).encode(), "0.3.1", "host-local")
    assert result.pod_ips() == ("10.1.0.9",)
    assert result.raw == doc


def test_host_side_addresses_are_not_pod_ips() -> None:
    doc = json.loads(BRIDGE_100)
    doc["ips"].append({"interface": 0, "address": "10.85.0.1/16"})
    assert parse_result(doc, "1.0.0", "bridge").pod_ips() == ("10.85.0.2",)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"ips": [{"address": "10.0.0.300/24"}]}, r"ips\[0\].address"),
        ({"ips": [{"address": "10.0.0.3"}]}, "no prefix length"),
        ({"ips": [{"address": "10.0.0.3/24", "version": "6"}]}, r"ips\[0\].version"),
        ({"ips": [{"address": "10.0.0.3/24", "interface": 9}]}, r"ips\[0\].interface"),
        ({"ips": [{"address": "10.0.0.3/24", "gateway": "fd00::1"}]}, "not IPv4"),
        ({"interfaces": [{"mac": "x"}]}, r"interfaces\[0\] needs"),
        ({"routes": [{"dst": "nope"}]}, r"routes\[0\]"),
        ({"dns": {"nameservers": "1.1.1.1"}}, "dns.nameservers"),
        ({"ips": {}}, "'ips' must be a list"),
    ],
)
def test_parse_result_rejects(change: dict[str, Any], message: str) -> None:
    doc = {"cniVersion": "1.0.0", **change}
    with pytest.raises(CNIProtocolError, match=message):
        parse_result(json.dumps(doc).encode(), "1.0.0", "bridge")


def test_parse_result_rejects_non_json() -> None:
    with pytest.raises(CNIProtocolError, match="not JSON"):
        parse_result(b"panic: oops", "1.0.0", "bridge")


def test_failure_without_json_uses_stderr_or_status() -> None:
    err = parse_failure("x", "DEL", "n", 2, b"", b"segfault\n")
    assert err.msg == "segfault"
    err = parse_failure("x", "DEL", "n", 2, b"", b"")
    assert err.msg == "exited with status 2 and printed nothing"


def test_version_info() -> None:
    out = b'{"cniVersion":"1.0.0","supportedVersions":["0.3.1","0.4.0","1.0.0"]}'
    info = parse_version_info(out, "portmap")
    assert info.supported_versions == ("0.3.1", "0.4.0", "1.0.0")
    assert parse_version_info(b'{"cniVersion":"0.1.0"}', "old").supported_versions == ("0.1.0",)
    with pytest.raises(CNIProtocolError):
        parse_version_info(b"[]", "x")


def test_cni_args_and_ids_are_checked() -> None:
    assert format_cni_args([("A", "b")]) == "IgnoreUnknown=1;A=b"
    with pytest.raises(InvalidRequestError, match="K8S_POD_NAME"):
        format_cni_args([("K8S_POD_NAME", "a;b")])
    with pytest.raises(InvalidRequestError, match="pod_sandbox_id"):
        Attachment(container_id="../x", netns=NETNS)
    with pytest.raises(InvalidRequestError, match="interface name"):
        Attachment(container_id=CID, netns=NETNS, ifname="a" * 16)


def test_plugin_skipped_rules() -> None:
    portmap = {"type": "portmap", "capabilities": {"portMappings": True}}
    assert plugin_skipped(portmap, {})
    assert not plugin_skipped(portmap, {"portMappings": PORTS})
    bandwidth = {"type": "bandwidth", "capabilities": {"bandwidth": True}}
    assert plugin_skipped(bandwidth, {"portMappings": PORTS})
    assert not plugin_skipped(bandwidth, {"bandwidth": {"ingressRate": 1000}})
    assert not plugin_skipped({"type": "bandwidth", "ingressRate": 10, "ingressBurst": 10}, {})
    assert not plugin_skipped({"type": "bridge"}, {})


def test_plugin_stdin_overrides_name_version_and_stale_runtime_config() -> None:
    plugin = {"type": "x", "name": "other", "cniVersion": "0.1.0", "runtimeConfig": {"a": 1}}
    conf = json.loads(plugin_stdin("net", "1.0.0", plugin, {"a": 2}, None))
    assert conf == {"type": "x", "name": "net", "cniVersion": "1.0.0"}
