"""The metrics interface: configuration, labels, the lazy import, the Prometheus series."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from crio import config, metrics
from crio.errors import ConfigError
from crio.events import ContainerEvent


def load(tmp_path: Path, text: str) -> config.Config:
    path = tmp_path / "crio.conf"
    path.write_text(text)
    return config.load(str(path), str(tmp_path))


def test_collectors_are_the_ones_the_configuration_accepts() -> None:
    assert set(metrics.COLLECTORS) == set(config.MetricsConfig().metrics_collectors)


def test_unknown_collector_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, '[crio.metrics]\nmetrics_collectors = ["operations", "gpus"]\n')
    assert "crio.metrics.metrics_collectors" in str(caught.value)
    assert "'gpus'" in str(caught.value)


def test_enabled_metrics_need_a_listener(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, "[crio.metrics]\nenable_metrics = true\nmetrics_port = 0\n")
    assert "crio.metrics.enable_metrics" in str(caught.value)
    cfg = load(
        tmp_path,
        '[crio.metrics]\nenable_metrics = true\nmetrics_port = 0\nmetrics_socket = "/run/m.sock"\n',
    )
    assert cfg.crio.metrics.metrics_socket == "/run/m.sock"


def test_relative_socket_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, '[crio.metrics]\nmetrics_socket = "m.sock"\n')
    assert "crio.metrics.metrics_socket" in str(caught.value)


@pytest.mark.parametrize(
    ("reference", "registry"),
    [
        ("docker.io/library/busybox:1", "docker.io"),
        ("docker://quay.io/x/y@sha256:" + "a" * 64, "quay.io"),
        ("localhost:5000/x", "localhost:5000"),
        ("localhost/busybox", "localhost"),
        ("127.0.0.1:33/a/b:1", "127.0.0.1:33"),
        ("busybox", "docker.io"),
        ("busybox:latest", "docker.io"),
        ("library/busybox", "docker.io"),
        ("oci:/srv/layout:tag", "oci"),
        ("docker-archive:/tmp/x.tar", "docker-archive"),
    ],
)
def test_pulls_are_counted_per_registry(reference: str, registry: str) -> None:
    assert metrics.registry_of(reference) == registry


def test_disabled_metrics_record_nothing_and_import_no_client() -> None:
    code = (
        "import sys; from crio import config, metrics, daemon; "
        "m = metrics.create(config.Config()); m.rpc_done('Version', 'OK', 0.1); "
        "assert not m.enabled; assert 'prometheus_client' not in sys.modules, 'imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_prometheus_series_follow_reports() -> None:
    cfg = config.Config.model_validate({"crio": {"metrics": {"enable_metrics": True}}})
    recorder = metrics.create(cfg)
    assert recorder.enabled
    recorder.rpc_done("RunPodSandbox", "OK", 0.02)
    recorder.rpc_done("RunPodSandbox", "INTERNAL", 1.5)
    recorder.image_pulled("quay.io", 1234, 3.0, True)
    recorder.image_pulled("quay.io", 10, 0.5, False)
    recorder.network_done("ADD", 0.018, True)
    recorder.started(2, 5, 1)
    hook = recorder.crio_container_exited  # type: ignore[attr-defined]
    hook(container=ContainerEvent("c1", "p1", "n", "i", 137, "OOMKilled"))
    hook(container=ContainerEvent("c2", "p1", "n", "i", 1, "Error"))
    get = recorder.registry.get_sample_value  # type: ignore[attr-defined]
    assert get("crio_grpc_requests_total", {"rpc": "RunPodSandbox", "code": "OK"}) == 1
    assert get("crio_grpc_requests_total", {"rpc": "RunPodSandbox", "code": "INTERNAL"}) == 1
    assert get("crio_grpc_request_duration_seconds_count", {"rpc": "RunPodSandbox"}) == 2
    assert (
        get("crio_grpc_request_duration_seconds_bucket", {"rpc": "RunPodSandbox", "le": "0.025"})
        == 1
    )
    assert get("crio_image_pull_bytes_total", {"registry": "quay.io"}) == 1244
    assert get("crio_image_pulls_total", {"registry": "quay.io", "result": "failure"}) == 1
    assert get("crio_image_pull_duration_seconds_count", {"registry": "quay.io"}) == 1
    assert get("crio_network_operations_total", {"operation": "ADD", "result": "success"}) == 1
    assert get("crio_startup_recovered_objects", {"kind": "container"}) == 5
    assert get("crio_startup_released_objects") == 1
    assert get("crio_containers_oom_kills_total") == 1


def test_metrics_server_answers_only_at_metrics(tmp_path: Path) -> None:
    sock = tmp_path / "m.sock"
    cfg = config.Config.model_validate(
        {
            "crio": {
                "metrics": {"enable_metrics": True, "metrics_port": 0, "metrics_socket": str(sock)}
            }
        }
    )
    recorder = metrics.create(cfg)

    async def ask(path: str) -> bytes:
        await recorder.start(None)
        try:
            reader, writer = await asyncio.open_unix_connection(str(sock))
            writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            data = await reader.read()
            writer.close()
            return data
        finally:
            await recorder.close()

    assert asyncio.run(ask("/metrics")).startswith(b"HTTP/1.1 200 ")
    assert asyncio.run(ask("/nope")).startswith(b"HTTP/1.1 404 ")
    assert not sock.exists()
