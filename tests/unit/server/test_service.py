"""The gRPC wrapper and the info RPCs, served in-process on a unix socket."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from crio import config
from crio.api import api_pb2 as api
from crio.api import api_pb2_grpc
from crio.errors import NotFoundError
from crio.plugins import Plugins
from crio.server import HANDLERS
from crio.server.deps import Deps
from crio.server.service import generic_handlers


class ReadyRuntime:
    def ready(self) -> tuple[bool, str, str]:
        return True, "", ""


class SickRuntime:
    def ready(self) -> tuple[bool, str, str]:
        return False, "RuntimeBinaryMissing", "runtime /nope is not an executable file"


class NetworkWithoutConfig:
    pod_cidr = ""

    def ready(self) -> tuple[bool, str, str]:
        return False, "NetworkPluginNotReady", "cni config uninitialized"

    async def update_pod_cidr(self, pod_cidr: str) -> None:
        self.pod_cidr = pod_cidr


def make_deps(**changes: Any) -> Deps:
    fields: dict[str, Any] = {
        "config": config.Config(),
        "plugins": Plugins(),
        "runtimes": {"runc": ReadyRuntime()},
        "network": NetworkWithoutConfig(),
    }
    fields.update(changes)
    return Deps(**fields)


Scenario = Callable[[grpc.aio.Channel], Awaitable[None]]


def serve(deps: Deps, scenario: Scenario, handlers: dict[str, Any] | None = None) -> None:
    async def main() -> None:
        with tempfile.TemporaryDirectory(prefix="crio-u-") as tmp:
            path = Path(tmp) / "s.sock"
            server = grpc.aio.server()
            server.add_generic_rpc_handlers(generic_handlers(deps, handlers or HANDLERS))
            server.add_insecure_port(f"unix://{path}")
            await server.start()
            try:
                async with grpc.aio.insecure_channel(f"unix://{path}") as channel:
                    await scenario(channel)
            finally:
                await server.stop(None)

    asyncio.run(main())


def test_version() -> None:
    async def scenario(channel: grpc.aio.Channel) -> None:
        reply = await api_pb2_grpc.RuntimeServiceStub(channel).Version(api.VersionRequest())
        assert reply.runtime_name == "crio"
        assert reply.runtime_api_version == "v1"
        assert reply.version == "0.1.0"
        assert reply.runtime_version

    serve(make_deps(), scenario)


def test_status_reports_conditions_from_plugins() -> None:
    async def scenario(channel: grpc.aio.Channel) -> None:
        stub = api_pb2_grpc.RuntimeServiceStub(channel)
        reply = await stub.Status(api.StatusRequest())
        conditions = {c.type: c for c in reply.status.conditions}
        assert not conditions["RuntimeReady"].status
        assert conditions["RuntimeReady"].reason == "RuntimeBinaryMissing"
        assert "handler sick" in conditions["RuntimeReady"].message
        assert not conditions["NetworkReady"].status
        assert conditions["NetworkReady"].reason == "NetworkPluginNotReady"
        assert not reply.info
        verbose = await stub.Status(api.StatusRequest(verbose=True))
        assert '"listen": "/var/run/crio/crio.sock"' in verbose.info["config"]

    serve(make_deps(runtimes={"runc": ReadyRuntime(), "sick": SickRuntime()}), scenario)


def test_status_all_ready() -> None:
    class Ready(NetworkWithoutConfig):
        def ready(self) -> tuple[bool, str, str]:
            return True, "", ""

    async def scenario(channel: grpc.aio.Channel) -> None:
        reply = await api_pb2_grpc.RuntimeServiceStub(channel).Status(api.StatusRequest())
        assert [(c.type, c.status) for c in reply.status.conditions] == [
            ("RuntimeReady", True),
            ("NetworkReady", True),
        ]

    serve(make_deps(network=Ready()), scenario)


def test_runtime_config_reports_cgroupfs() -> None:
    async def scenario(channel: grpc.aio.Channel) -> None:
        stub = api_pb2_grpc.RuntimeServiceStub(channel)
        reply = await stub.RuntimeConfig(api.RuntimeConfigRequest())
        assert reply.linux.cgroup_driver == api.CgroupDriver.CGROUPFS

    serve(make_deps(), scenario)


def test_update_runtime_config_stores_and_validates_pod_cidr() -> None:
    deps = make_deps()

    async def scenario(channel: grpc.aio.Channel) -> None:
        stub = api_pb2_grpc.RuntimeServiceStub(channel)

        def request(cidr: str) -> api.UpdateRuntimeConfigRequest:
            return api.UpdateRuntimeConfigRequest(
                runtime_config=api.RuntimeConfig(network_config=api.NetworkConfig(pod_cidr=cidr))
            )

        await stub.UpdateRuntimeConfig(request("10.88.0.0/16,fd00::/64"))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.UpdateRuntimeConfig(request("10.88.0.0/99"))
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "pod_cidr" in info.value.details()

    serve(deps, scenario)
    assert deps.node.pod_cidr == "10.88.0.0/16,fd00::/64"
    assert deps.network.pod_cidr == "10.88.0.0/16,fd00::/64"


def test_rpcs_without_handler_answer_unimplemented() -> None:
    async def scenario(channel: grpc.aio.Channel) -> None:
        runtime = api_pb2_grpc.RuntimeServiceStub(channel)
        images = api_pb2_grpc.ImageServiceStub(channel)
        for call in (runtime.ListPodSandbox(api.ListPodSandboxRequest()),):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call
            assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED
        # Image RPCs are served; without a store they say so.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await images.ListImages(api.ListImagesRequest())
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE
        stream = runtime.GetContainerEvents(api.GetEventsRequest())
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in stream:
                pass
        assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED

    # Served by crio, but not in this table: a missing handler is what is tested.
    missing = ("ListPodSandbox", "GetContainerEvents")
    serve(make_deps(), scenario, {k: v for k, v in HANDLERS.items() if k not in missing})


def test_errors_map_to_status_codes_and_bugs_to_internal() -> None:
    async def missing(deps: Deps, req: Any) -> Any:
        raise NotFoundError("container abc not found")

    async def buggy(deps: Deps, req: Any) -> Any:
        return {}["nothing"]

    async def scenario(channel: grpc.aio.Channel) -> None:
        stub = api_pb2_grpc.RuntimeServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.ContainerStatus(api.ContainerStatusRequest(container_id="abc"))
        assert info.value.code() is grpc.StatusCode.NOT_FOUND
        assert info.value.details() == "container abc not found"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Version(api.VersionRequest())
        assert info.value.code() is grpc.StatusCode.INTERNAL
        assert "KeyError" in info.value.details()

    serve(make_deps(), scenario, {"ContainerStatus": missing, "Version": buggy})


def test_undecodable_request_is_invalid_argument() -> None:
    async def scenario(channel: grpc.aio.Channel) -> None:
        raw = channel.unary_unary(
            "/runtime.v1.RuntimeService/Version",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await raw(b"\xff\xff\xff\xff")
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT

    serve(make_deps(), scenario)


def test_handler_for_an_rpc_the_proto_lacks_is_refused() -> None:
    with pytest.raises(ValueError, match="NoSuchRpc"):
        generic_handlers(make_deps(), {"NoSuchRpc": HANDLERS["Version"]})
