"""The CRI ImageService over real gRPC on a unix socket, with a real store and registries."""

from __future__ import annotations

import asyncio
import base64
import json
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from crio import config as crio_config
from crio.api import api_pb2 as api
from crio.api import api_pb2_grpc
from crio.plugins import Plugins
from crio.server import HANDLERS
from crio.server.deps import Deps
from crio.server.service import generic_handlers
from crio.storage import Store
from support.image_pull import PASSWORD, USER, Pushed, write_policy
from support.image_shapes import build_layout
from support.registry import Registry, skopeo_push

Stub = api_pb2_grpc.ImageServiceStub


def _crio_conf(
    tmp: Path, search: list[str], insecure: list[str], policy: str
) -> crio_config.Config:
    registries = tmp / "registries.conf"
    registries.write_text(f"unqualified-search-registries = {json.dumps(search)}\n")
    conf = tmp / "crio.conf"
    conf.write_text(
        "[crio]\n"
        f'root = "{tmp}/root"\nrunroot = "{tmp}/runroot"\nstorage_driver = "vfs"\n'
        "[crio.image]\n"
        f'signature_policy = "{policy}"\nregistries_conf = "{registries}"\n'
        f"insecure_registries = {json.dumps(insecure)}\n"
        f'registries_d = "{tmp}"\n'
    )
    (tmp / "crio.conf.d").mkdir(exist_ok=True)
    return crio_config.load(str(conf), str(tmp / "crio.conf.d"))


@asynccontextmanager
async def image_service(
    plugins: Plugins, tmp: Path, search: list[str], insecure: list[str], policy: str = ""
) -> AsyncIterator[tuple[Stub, Store]]:
    policy = policy or write_policy(tmp / "policy.json")
    config = _crio_conf(tmp, search, insecure, policy)
    store = await Store.open(tmp / "root", tmp / "runroot", "vfs", plugins=plugins)
    deps = Deps(config=config, plugins=plugins, runtimes={}, network=None, store=store)
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(generic_handlers(deps, HANDLERS))
    socket = Path(tempfile.mkdtemp(prefix="crio-img-", dir="/tmp")) / "s.sock"
    server.add_insecure_port(f"unix://{socket}")
    await server.start()
    channel = grpc.aio.insecure_channel(f"unix://{socket}")
    try:
        yield Stub(channel), store
    finally:
        await channel.close()
        await server.stop(None)
        await store.close()
        socket.unlink(missing_ok=True)
        socket.parent.rmdir()


def run(coro_fn: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(coro_fn())


async def expect_code(call: Awaitable[Any], code: grpc.StatusCode, text: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code, info.value.details()
    assert text in (info.value.details() or "")


def test_pull_status_list_remove(
    plugins: Plugins, shapes: dict[str, Pushed], open_registry: Registry, tmp_path: Path
) -> None:
    pushed = shapes["index"]

    async def body() -> None:
        async with image_service(plugins, tmp_path, [open_registry.host], [open_registry.host]) as (
            stub,
            store,
        ):
            spec = api.ImageSpec(image="shapes/index:v1")  # a short name, found by searching
            pulled = await stub.PullImage(api.PullImageRequest(image=spec))
            assert pulled.image_ref == pushed.image.config_digest[7:]
            status = await stub.ImageStatus(api.ImageStatusRequest(image=spec, verbose=True))
            image = status.image
            assert image.id == pulled.image_ref
            assert list(image.repo_tags) == [f"{pushed.repository}:v1"]
            assert f"{pushed.repository}@{pushed.digest}" in image.repo_digests
            assert image.size > 500_000  # busybox
            assert image.uid.value == 1000 and image.username == ""
            assert json.loads(status.info["info"])["imageSpec"]["config"]["User"] == "1000"
            by_id = await stub.ImageStatus(
                api.ImageStatusRequest(image=api.ImageSpec(image=image.id))
            )
            assert by_id.image.id == image.id
            absent = await stub.ImageStatus(
                api.ImageStatusRequest(image=api.ImageSpec(image="nope:1"))
            )
            assert not absent.HasField("image")

            await stub.PullImage(
                api.PullImageRequest(image=api.ImageSpec(image=f"{shapes['oci'].repository}:v1"))
            )
            listed = await stub.ListImages(api.ListImagesRequest())
            assert len(listed.images) == 2
            only = await stub.ListImages(api.ListImagesRequest(filter=api.ImageFilter(image=spec)))
            assert [i.id for i in only.images] == [image.id]

            fs = await stub.ImageFsInfo(api.ImageFsInfoRequest())
            [usage] = fs.image_filesystems
            assert usage.used_bytes.value > 1_000_000 and usage.inodes_used.value > 10
            assert usage.fs_id.mountpoint == str(tmp_path / "root" / "vfs")

            # A container uses the image: removal is refused, and nothing is lost.
            container = await store.create_container(image.id, names=["user"])
            await expect_code(
                stub.RemoveImage(api.RemoveImageRequest(image=spec)),
                grpc.StatusCode.FAILED_PRECONDITION,
                image.id,
            )
            assert (await stub.ImageStatus(api.ImageStatusRequest(image=spec))).HasField("image")
            await store.delete_container(container.id)
            # Two names: removing one only untags.
            await store.tag_image(image.id, "localhost/other:tag")
            await stub.RemoveImage(
                api.RemoveImageRequest(image=api.ImageSpec(image="localhost/other:tag"))
            )
            assert (await stub.ImageStatus(api.ImageStatusRequest(image=spec))).HasField("image")
            await stub.RemoveImage(api.RemoveImageRequest(image=spec))
            assert not (await stub.ImageStatus(api.ImageStatusRequest(image=spec))).HasField(
                "image"
            )
            await stub.RemoveImage(api.RemoveImageRequest(image=spec))  # absent: success

    run(body)


def test_bad_requests_and_refusals(
    plugins: Plugins, shapes: dict[str, Pushed], open_registry: Registry, tmp_path: Path
) -> None:
    reject = write_policy(tmp_path / "reject.json", '{"default": [{"type": "reject"}]}')

    async def body() -> None:
        async with image_service(plugins, tmp_path, [], [open_registry.host], reject) as (
            stub,
            store,
        ):
            await expect_code(
                stub.PullImage(api.PullImageRequest(image=api.ImageSpec(image=""))),
                grpc.StatusCode.INVALID_ARGUMENT,
                "image.image",
            )
            await expect_code(
                stub.PullImage(api.PullImageRequest(image=api.ImageSpec(image="Bad/Name"))),
                grpc.StatusCode.INVALID_ARGUMENT,
                "lowercase",
            )
            await expect_code(
                stub.PullImage(
                    api.PullImageRequest(
                        image=api.ImageSpec(image=f"{shapes['oci'].repository}:v1")
                    )
                ),
                grpc.StatusCode.PERMISSION_DENIED,
                "reject",
            )
            await expect_code(
                stub.PullImage(
                    api.PullImageRequest(
                        image=api.ImageSpec(image="x.example.com/a"), auth=api.AuthConfig(auth="%%")
                    )
                ),
                grpc.StatusCode.INVALID_ARGUMENT,
                "auth.auth",
            )
            assert await store.images() == []

    run(body)


def test_pull_with_cri_auth_and_concurrently(
    plugins: Plugins, basic_registry: Registry, tmp_path: Path
) -> None:
    image = build_layout(tmp_path / "src", "oci", extra=b"cri-auth")
    skopeo_push(image.source, basic_registry, "private/app:v1", creds=f"{USER}:{PASSWORD}")
    ref = f"{basic_registry.host}/private/app:v1"

    async def body() -> None:
        async with image_service(plugins, tmp_path, [], [basic_registry.host]) as (stub, _store):
            spec = api.ImageSpec(image=ref)
            await expect_code(
                stub.PullImage(api.PullImageRequest(image=spec)),
                grpc.StatusCode.PERMISSION_DENIED,
                "401",
            )
            encoded = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            requests = [
                api.PullImageRequest(
                    image=spec, auth=api.AuthConfig(username=USER, password=PASSWORD)
                ),
                api.PullImageRequest(image=spec, auth=api.AuthConfig(auth=encoded)),
            ] * 2
            results = await asyncio.gather(*(stub.PullImage(r) for r in requests))
            assert {r.image_ref for r in results} == {image.config_digest[7:]}

    run(body)
