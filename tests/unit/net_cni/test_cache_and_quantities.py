"""The attachment record on disk, and bandwidth annotations."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from crio.errors import InvalidRequestError
from crio.network import PodNetwork, PortMapping, bandwidth_from_annotations, parse_quantity
from crio_plugins.net_cni.cache import CacheRecord, ResultCache
from crio_plugins.net_cni.network import BANDWIDTH_BURST, capability_args

CID = "b" * 64


def record(**kw: object) -> CacheRecord:
    base: dict[str, object] = {
        "container_id": CID,
        "ifname": "eth0",
        "netns": "/run/netns/x",
        "cni_args": "IgnoreUnknown=1",
        "network": {"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "bridge"}]},
        "capability_args": {"portMappings": [{"hostPort": 1, "containerPort": 2}]},
        "skipped": (1,),
    }
    base.update(kw)
    return CacheRecord(**base)  # type: ignore[arg-type]


def test_record_round_trip(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path / "results")
    pending = record()
    asyncio.run(cache.write(pending))
    assert cache.read(CID, "eth0") == pending
    done = pending.with_result({"cniVersion": "1.0.0", "ips": []})
    asyncio.run(cache.write(done))
    assert list(cache.records()) == [done]
    asyncio.run(cache.remove(CID, "eth0"))
    assert cache.read(CID, "eth0") is None
    asyncio.run(cache.remove(CID, "eth0"))  # idempotent
    assert [p.name for p in (tmp_path / "results").iterdir()] == []


def test_unreadable_records_are_skipped(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path)
    (tmp_path / "junk.json").write_text("{")
    asyncio.run(cache.write(record()))
    assert [r.container_id for r in cache.records()] == [CID]
    with pytest.raises(ValueError, match=r"junk\.json"):
        CacheRecord.from_json(b"{", str(tmp_path / "junk.json"))


def test_cache_refuses_path_like_ids(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError):
        ResultCache(tmp_path).path("../../etc", "eth0")


@pytest.mark.parametrize(
    ("text", "value"),
    [("10M", 10_000_000), ("1Gi", 2**30), ("500k", 500_000), ("1000", 1000), ("1.5M", 1_500_000)],
)
def test_quantities(text: str, value: int) -> None:
    assert parse_quantity(text, "f") == value


@pytest.mark.parametrize("text", ["", "10Q", "abc", "-1M"])
def test_bad_quantities_name_the_field(text: str) -> None:
    with pytest.raises(InvalidRequestError, match=r"^annotations"):
        bandwidth_from_annotations({"kubernetes.io/ingress-bandwidth": text or " "})


def pod(**kw: object) -> PodNetwork:
    return PodNetwork(
        pod_sandbox_id=CID,
        name="p",
        namespace="ns",
        uid="u",
        netns_path="/x",
        **kw,  # type: ignore[arg-type]
    )


def test_capability_args() -> None:
    assert capability_args(pod(), "") == {}
    args = capability_args(
        pod(
            port_mappings=[
                PortMapping(container_port=80, host_port=8080),
                PortMapping(container_port=53, host_port=5353, protocol="UDP", host_ip="127.0.0.1"),
                PortMapping(container_port=9000, host_port=0),  # no hostPort: not passed
            ],
            annotations={"kubernetes.io/egress-bandwidth": "1M"},
        ),
        "10.1.0.0/24,fd00::/64",
    )
    assert args["portMappings"] == [
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"},
    ]
    assert args["bandwidth"] == {"egressRate": 1_000_000, "egressBurst": BANDWIDTH_BURST}
    assert args["ipRanges"] == [[{"subnet": "10.1.0.0/24"}], [{"subnet": "fd00::/64"}]]
    assert args["io.kubernetes.cri.pod-annotations"] == {"kubernetes.io/egress-bandwidth": "1M"}
    explicit = capability_args(pod(ingress_bandwidth=5000), "")
    assert explicit["bandwidth"] == {"ingressRate": 5000, "ingressBurst": BANDWIDTH_BURST}


@pytest.mark.parametrize(
    ("mapping", "field"),
    [
        (PortMapping(container_port=0, host_port=80), "container_port"),
        (PortMapping(container_port=80, host_port=65536), "host_port"),
        (PortMapping(container_port=80, host_port=80, protocol="icmp"), "protocol"),
    ],
)
def test_bad_port_mappings_name_the_field(mapping: PortMapping, field: str) -> None:
    with pytest.raises(InvalidRequestError, match=rf"port_mappings\[0\]\.{field}"):
        capability_args(pod(port_mappings=[mapping]), "")
