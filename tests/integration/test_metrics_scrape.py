"""Prometheus metrics of a real crio: scraped over TCP and a unix socket, moving with activity."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from crio.api import api_pb2 as api
from support.cri import EventWatch, container_config, rpc_error
from support.images import busybox_rootfs_tar, layer_tar, write_oci_layout
from support.node import Node, start_node, stop_node
from support.registry import Registry, free_port, running, skopeo_push

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=30)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(self._path)


def scrape(connection: http.client.HTTPConnection) -> tuple[str, Samples]:
    connection.request("GET", "/metrics")
    response = connection.getresponse()
    body = response.read().decode()
    assert response.status == 200, body
    assert response.getheader("Content-Type", "").startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return body, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def registry() -> Iterator[Registry]:
    with running() as started:
        yield started


@pytest.fixture
def metrics_node(registry: Registry) -> Iterator[Node]:
    port = free_port()
    started = start_node(
        {
            "crio.metrics": {"enable_metrics": True, "metrics_port": port},
            "crio.image": {"insecure_registries": [registry.host]},
        }
    )
    started.use_loopback_network()
    started.metrics_port = port  # type: ignore[attr-defined]
    try:
        yield started
    finally:
        stop_node(started)


def _tcp(node: Node) -> tuple[str, Samples]:
    return scrape(http.client.HTTPConnection("127.0.0.1", node.metrics_port, timeout=30))  # type: ignore[attr-defined]


def test_series_move_with_activity(metrics_node: Node, registry: Registry, tmp_path: Path) -> None:
    node = metrics_node
    _, before = _tcp(node)
    assert value(before, "crio_containers", state="running") == 0
    assert value(before, "crio_startup_recovered_objects", kind="container") == 0
    assert value(before, "crio_storage_images") >= 1  # the seeded busybox and pause images
    assert value(before, "crio_storage_used_bytes") > 0

    pod_id = node.cri.run_pod(node.pod(host_network=False), runtime_handler="runc")
    cid = node.cri.create(pod_id, container_config("web", ["sleep", "3600"]), start=True)
    assert rpc_error(node.cri.status, "no-such-container").code() is grpc.StatusCode.NOT_FOUND
    _, during = _tcp(node)
    assert value(during, "crio_containers", state="running") == 1
    assert value(during, "crio_pod_sandboxes", state="ready") == 1
    assert value(during, "crio_grpc_requests_total", rpc="RunPodSandbox", code="OK") == 1
    assert value(during, "crio_grpc_requests_total", rpc="ContainerStatus", code="NOT_FOUND") == 1
    assert value(during, "crio_grpc_request_duration_seconds_count", rpc="CreateContainer") == 1
    assert value(during, "crio_network_operations_total", operation="ADD", result="success") == 1
    assert value(during, "crio_network_operation_duration_seconds_count", operation="ADD") == 1

    # An OOM kill is counted when the runtime reports the exit.
    hog = container_config(
        "hog", ["tail", "/dev/zero"],
        resources=api.LinuxContainerResources(memory_limit_in_bytes=16 * 1024 * 1024),
    )  # fmt: skip
    hog_id = node.cri.create(pod_id, hog)
    with EventWatch(node.cri) as events:
        node.cri.start(hog_id)
        events.wait(hog_id, api.CONTAINER_STOPPED_EVENT)
    _, after_oom = _tcp(node)
    assert value(after_oom, "crio_containers_oom_kills_total") == 1
    assert value(after_oom, "crio_containers", state="exited") == 1

    # A pull from a registry is counted under that registry with the bytes it moved.
    extra = layer_tar({"srv/data": os.urandom(200_000)})  # not in the store yet
    layout = write_oci_layout(tmp_path / "layout", [busybox_rootfs_tar(), extra])
    skopeo_push(f"oci:{layout.path}:latest", registry, "metrics/busybox:1")
    image = api.ImageSpec(image=f"{registry.host}/metrics/busybox:1")
    node.crio.image_stub(node._channel).PullImage(api.PullImageRequest(image=image))
    _, pulled = _tcp(node)
    new_layer = layout.path / "blobs/sha256" / layout.layer_digests[1].partition(":")[2]
    # Only the new layer was downloaded: the busybox layer is in the store already.
    got = value(pulled, "crio_image_pull_bytes_total", registry=registry.host)
    assert got == new_layer.stat().st_size
    assert value(pulled, "crio_image_pulls_total", registry=registry.host, result="success") == 1
    assert value(pulled, "crio_image_pull_duration_seconds_count", registry=registry.host) == 1

    # A restart reports what it recovered.
    node.restart()
    _, restarted = _tcp(node)
    assert value(restarted, "crio_startup_recovered_objects", kind="pod_sandbox") == 1
    assert value(restarted, "crio_startup_recovered_objects", kind="container") == 2
    assert value(restarted, "crio_containers", state="running") == 1
    assert value(restarted, "crio_grpc_requests_total", rpc="RunPodSandbox", code="OK") == 0

    node.cri.stop_pod(pod_id)
    node.cri.remove_pod(pod_id)
    _, gone = _tcp(node)
    assert value(gone, "crio_network_operations_total", operation="DEL", result="success") == 1
    assert value(gone, "crio_containers", state="running") == 0
    assert value(gone, "crio_containers", state="exited") == 0
    del cid


def test_unix_socket_and_chosen_collectors(tmp_path: Path) -> None:
    sock = f"/tmp/crio-metrics-{tmp_path.name[-8:]}.sock"
    node = start_node(
        {
            "crio.metrics": {
                "enable_metrics": True,
                "metrics_port": 0,
                "metrics_socket": sock,
                "metrics_collectors": ["operations"],
            }
        }
    )
    try:
        node.cri.pods()
        body, samples = scrape(_UnixConnection(sock))
        assert value(samples, "crio_grpc_requests_total", rpc="ListPodSandbox", code="OK") == 1
        assert "crio_containers" not in body and "crio_storage" not in body
        assert oct(Path(sock).stat().st_mode & 0o777) == "0o660"
    finally:
        stop_node(node)
    assert not Path(sock).exists()


def test_debians_prometheus_scrapes_what_crio_serves(tmp_path: Path) -> None:
    """The real consumer: Debian's promtool lints the exposition, and Debian's prometheus
    scrapes crio over TCP and stores the same values crio served."""
    from support import prometheus

    try:
        _, promtool = prometheus.ensure()
    except prometheus.PrometheusUnavailable as exc:
        pytest.skip(str(exc))
    port = free_port()
    node = start_node({"crio.metrics": {"enable_metrics": True, "metrics_port": port}})
    try:
        for _ in range(3):
            node.cri.pods()
        rpc_error(node.cri.status, "no-such-container")
        body, served = scrape(http.client.HTTPConnection("127.0.0.1", port, timeout=30))
        lint = subprocess.run(
            [str(promtool), "check", "metrics"], input=body, capture_output=True, text=True
        )
        assert lint.returncode == 0 and not lint.stdout.strip(), lint.stdout + lint.stderr
        with prometheus.running({"crio": f"127.0.0.1:{port}"}, tmp_path / "prometheus") as server:
            target = server.wait_for_scrape("crio")
            assert (target["health"], target["lastError"]) == ("up", ""), target
            names = ("crio_grpc_requests_total", "crio_storage_images", "crio_containers")
            stored = {name: server.query(f'{name}{{job="crio"}}') for name in names}
    finally:
        stop_node(node)
    # Scrapes add no RPCs, so the values stood still between crio's answer and prometheus'.
    for name, series in stored.items():
        ours = {labels: v for (sample, labels), v in served.items() if sample == name}
        theirs = {
            tuple(pair for pair in labels if pair[0] not in ("instance", "job")): v
            for labels, v in series.items()
        }
        assert ours and theirs == ours, (name, ours, theirs)
    assert value(served, "crio_grpc_requests_total", rpc="ListPodSandbox", code="OK") == 3
    assert value(served, "crio_grpc_requests_total", rpc="ContainerStatus", code="NOT_FOUND") == 1
