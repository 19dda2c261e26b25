"""The driver contract: a store reopens whole after a restart and after a SIGKILL mid-apply."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import threading

from support.images import busybox_rootfs_tar, gzip_bytes, layer_tar, put_image


def test_a_restart_finds_every_layer_and_container(contract) -> None:
    async def make() -> tuple[str, str, list[str]]:
        store = await contract.open()
        try:
            extra = layer_tar({"etc/motd": b"restart\n"}, dirs=["etc"])
            image = await put_image(store, [busybox_rootfs_tar(), extra], name="localhost/re:1")
            ctr = await store.create_container(image.id, names=["survivor"])
            root = await store.mount_container(ctr.id)
            (root / "kept").write_bytes(b"before the restart")
            await store.unmount_container(ctr.id)
            return image.id, ctr.id, [x.id for x in await store.layers()]
        finally:
            await store.close()

    image_id, ctr_id, layer_ids = asyncio.run(make())
    # Another process (kpod) opens the same store from scratch and mounts the container.
    path = contract.run_kpod("mount", "survivor").strip()
    with open(os.path.join(path, "kept"), "rb") as handle:
        assert handle.read() == b"before the restart"
    with open(os.path.join(path, "etc/motd"), "rb") as handle:
        assert handle.read() == b"restart\n"

    async def reopen() -> None:
        store = await contract.open()
        try:
            assert (await store.image("localhost/re:1")).id == image_id
            assert [x.id for x in await store.layers()] == layer_ids
            for layer_id in layer_ids:
                assert await store.driver.exists(layer_id)
            layer = (await store.container(ctr_id)).layer
            assert await store.mount_count(layer) == 1  # kpod's mount, counted on disk
            assert await store.unmount_container(ctr_id) == 0
        finally:
            await store.close()

    asyncio.run(reopen())


def _big_layer() -> bytes:
    # Incompressible, so that half the gzip blob is far more than a pipe holds.
    noise = random.Random(14).randbytes
    return layer_tar({f"data/{i // 100:03d}/f{i:05d}": noise(1000) for i in range(400)})


def test_a_sigkill_mid_apply_leaves_nothing(contract) -> None:
    blob = gzip_bytes(_big_layer())
    proc = subprocess.Popen(
        contract.kpod("applydiff", "-"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdin is not None
        # Once the pipe took half the blob, kpod has read all but the pipe's
        # buffer of it: the layer exists in the driver and is being applied.
        fed = threading.Thread(target=proc.stdin.write, args=(blob[: len(blob) // 2],))
        fed.start()
        fed.join(120)
        proc.stdin.flush()
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        incomplete = contract.runroot / f"{contract.driver}-layers" / "incomplete"
        (marker,) = incomplete.iterdir()
        layer_id = marker.name.removesuffix(".lock")

        async def while_alive() -> None:
            store = await contract.open()  # another opener leaves a live writer alone
            try:
                assert await store.layers() == []
                assert layer_id in await store.driver.layers()
            finally:
                await store.close()

        asyncio.run(while_alive())
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL

    async def after() -> None:
        store = await contract.open()  # the next opener cleans up
        try:
            assert await store.layers() == []
            assert layer_id not in await store.driver.layers()
            assert not marker.exists()
            layer = await store.put_layer(blob)  # and the same blob applies whole
            assert [x.id for x in await store.layers()] == [layer.id]
        finally:
            await store.close()

    asyncio.run(after())
