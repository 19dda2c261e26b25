"""Several processes on one overlay store: kill mid-apply, shared mount counts, deep images."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from crio.storage import Store
from crio.storage.mount import is_mountpoint
from support.images import busybox_rootfs_tar, digest, gzip_bytes, layer_tar, put_image

KPOD = str(Path(sys.executable).with_name("kpod"))


def _kpod(dirs, *args: str) -> list[str]:
    confd = dirs.base / "crio.conf.d"
    confd.mkdir(exist_ok=True)
    (dirs.base / "crio.conf").touch()
    return [
        KPOD, "--config", str(dirs.base / "crio.conf"), "--config-dir", str(confd),
        "--root", str(dirs.root), "--runroot", str(dirs.runroot),
        "--storage-driver", "overlay", *args,
    ]  # fmt: skip


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll a condition on the file system until it holds (a wait, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _many_files_layer(count: int) -> bytes:
    files = {f"data/{i // 100:03d}/f{i:05d}": (b"%d\n" % i) * 50 for i in range(count)}
    files["zzz/last"] = b"the end\n"
    return layer_tar(files)


def _driver_layers(dirs) -> list[str]:
    home = dirs.root / "overlay"
    return [p.name for p in home.iterdir() if len(p.name) == 64] if home.exists() else []


def _start_applydiff(dirs) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        _kpod(dirs, "applydiff", "-"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_kill_during_apply_leaves_nothing_and_next_open_cleans(dirs) -> None:
    blob = gzip_bytes(_many_files_layer(3000))
    half = len(blob) // 2
    proc = _start_applydiff(dirs)
    try:
        assert proc.stdin is not None
        proc.stdin.write(blob[:half])
        proc.stdin.flush()
        # kpod has created the layer in the driver and is applying; it now waits for input.
        _wait_for(
            lambda: proc.poll() is not None or any(True for _ in _diff_files(dirs)),
            "files of the half-applied layer",
        )
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        (layer_id,) = _driver_layers(dirs)
        marker = dirs.runroot / "overlay-layers" / "incomplete" / f"{layer_id}.lock"
        assert marker.exists()

        async def while_alive() -> None:
            # Another process opening the store must not touch a live writer's layer ...
            store = await Store.open(dirs.root, dirs.runroot, "overlay")
            assert await store.layers() == []  # ... which nobody can see yet
            await store.close()

        asyncio.run(while_alive())
        assert _driver_layers(dirs) == [layer_id]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert _driver_layers(dirs) == [layer_id]  # the dead writer's files are still there

    listed = subprocess.run(
        _kpod(dirs, "layers", "--no-trunc"), capture_output=True, text=True, check=True
    )
    assert layer_id not in listed.stdout  # opening (kpod) cleaned up, and it was never listed
    assert _driver_layers(dirs) == []
    assert not marker.exists()
    assert not list((dirs.root / "overlay" / "l").iterdir())

    done = subprocess.run(
        _kpod(dirs, "applydiff", "-"), input=blob, capture_output=True, check=True
    )
    assert (
        done.stdout.decode().strip()
        in subprocess.run(
            _kpod(dirs, "layers", "--no-trunc"), capture_output=True, text=True, check=True
        ).stdout
    )


def _diff_files(dirs):
    for layer_id in _driver_layers(dirs):
        data = dirs.root / "overlay" / layer_id / "diff" / "data"
        if data.exists():
            yield from data.iterdir()


def test_finished_writer_is_visible_to_others(dirs) -> None:
    blob = gzip_bytes(_many_files_layer(200))
    proc = _start_applydiff(dirs)
    out, err = proc.communicate(blob, timeout=120)
    assert proc.returncode == 0, err
    layer_id = out.decode().strip()

    async def check() -> None:
        store = await Store.open(dirs.root, dirs.runroot, "overlay")
        layer = await store.layer(layer_id)
        assert layer.compressed_digest == digest(blob)
        await store.close()

    asyncio.run(check())


def test_mounts_are_counted_across_processes(dirs) -> None:

    async def setup() -> tuple[str, Path]:
        store = await Store.open(dirs.root, dirs.runroot, "overlay")
        image = await put_image(store, [busybox_rootfs_tar()], name="localhost/bb:1")
        ctr = await store.create_container(image.id, names=["shared"])
        path = await store.mount_container(ctr.id)
        await store.close()
        return ctr.id, path

    ctr_id, path = asyncio.run(setup())
    assert is_mountpoint(path)
    out = subprocess.run(_kpod(dirs, "mount", "shared"), capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(path)

    async def count() -> int:
        store = await Store.open(dirs.root, dirs.runroot, "overlay")
        try:
            return await store.mount_count((await store.container(ctr_id)).layer)
        finally:
            await store.close()

    assert asyncio.run(count()) == 2
    subprocess.run(_kpod(dirs, "umount", "shared"), check=True, capture_output=True)
    assert is_mountpoint(path) and asyncio.run(count()) == 1

    async def last_unmount() -> int:
        store = await Store.open(dirs.root, dirs.runroot, "overlay")
        try:
            return await store.unmount_container(ctr_id)
        finally:
            await store.close()

    assert asyncio.run(last_unmount()) == 0
    assert not is_mountpoint(path)


def test_deep_image_mounts_beyond_a_page_of_options(dirs) -> None:
    depth = 130  # ~55 bytes per absolute lower here: more than a 4 KiB page

    async def go() -> None:
        store = await Store.open(dirs.root, dirs.runroot, "overlay")
        layers = [busybox_rootfs_tar()] + [
            layer_tar({f"layers/{i:03d}": b"%d" % i}) for i in range(1, depth)
        ]
        image = await put_image(store, layers, name="localhost/deep:1")
        ctr = await store.create_container(image.id, names=["deep"])
        lowers = (dirs.root / "overlay" / ctr.layer / "lower").read_text().split(":")
        assert len(lowers) == depth and all(len(x) == 28 for x in lowers)
        root = await store.mount_container(ctr.id)
        try:
            assert (root / "bin/busybox").exists()
            assert sorted(p.name for p in (root / "layers").iterdir())[-1] == f"{depth - 1:03d}"
            (root / "layers" / "written").write_text("upper")
            assert (dirs.root / "overlay" / ctr.layer / "diff/layers/written").exists()
        finally:
            await store.unmount_container(ctr.id)
        assert not is_mountpoint(root)
        image_root = await store.mount_image(image.id)
        try:
            assert (image_root / "layers" / "001").read_text() == "1"
            assert not os.access(image_root / "layers", os.W_OK) or _read_only(image_root)
        finally:
            await store.unmount_image(image.id)
        await store.close()

    asyncio.run(go())


def _read_only(path: Path) -> bool:
    try:
        (path / "probe").write_text("x")
    except OSError:
        return True
    return False


def test_podman_sees_crio_containers_and_whiteouts(dirs) -> None:
    second = layer_tar({"bin/.wh.ls": b"", "etc/.wh..wh..opq": b"", "etc/only": b"1"})

    async def go() -> str:
        store = await Store.open(dirs.root, dirs.runroot, "overlay")
        image = await put_image(store, [busybox_rootfs_tar(), second], name="localhost/wh:1")
        ctr = await store.create_container(image.id, names=["crio-made"])
        root = await store.mount_container(ctr.id)
        try:
            assert not (root / "bin/ls").exists() and (root / "bin/cat").exists()
            assert [p.name for p in (root / "etc").iterdir()] == ["only"]
        finally:
            await store.unmount_container(ctr.id)
        await store.close()
        return ctr.id

    ctr_id = asyncio.run(go())
    listed = dirs.podman("ps", "-a", "--external", "--format", "{{.ID}} {{.Names}}").stdout
    assert f"{ctr_id[:12]} crio-made" in listed
    mounted = dirs.podman("mount", ctr_id).stdout.strip()
    try:
        assert not Path(mounted, "bin/ls").exists()
        assert sorted(p.name for p in Path(mounted, "etc").iterdir()) == ["only"]
    finally:
        dirs.podman("umount", ctr_id)
