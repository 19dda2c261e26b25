"""Storing an image per graph driver: crio against skopeo with the same driver.

Usage (root): .venv/bin/python bench/store_drivers.py [--runs 3] [--mb 100]
                  [--mount-runs 20] [--dir D] [--drivers overlay,vfs,btrfs,aufs]
                  [--guest] [--guest-mb 20]
(``bench/store.py`` runs it after its overlay figures.)

The image of bench/store.py (about --mb MB in 5 gzip layers) is stored,
for each driver, each time into a fresh directory (btrfs: on a btrfs file
system on a loop file):

- crio: ``Store.put_layer`` for each layer: decompress, hash both sides,
  safe extraction, tar-split, atomic metadata.
- skopeo: ``skopeo copy oci:DIR containers-storage:[DRIVER@ROOT+RUNROOT]`` of
  the same image (what podman's and CRI-O's storage do for a pull), same driver.
- GNU tar (once, driver-independent): ``tar -xzf`` of the same blobs.

Then, per driver, on a 60-layer image: the time to create a container's
rootfs (``Store.create_container``) and to mount it (``Store.mount_container``
+ unmount, reference counting included) next to the driver's bare ``get``.

``--guest`` runs the same in the storage guest (qemu, TCG here: figures are
slow in absolute terms, compare them with each other) for what this
kernel lacks: devicemapper, and an image store shared over NFS ("nfs":
the writer applies into an NFS-mounted store; a node creates and mounts a
container of the 60-layer image from it, against the same image local).

Figures are medians over --runs; prints ratios; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from crio.storage import Store
from support.contract import TOOL_OPTIONS, DriverEnv, driver_env, unmount_under
from support.images import busybox_rootfs_tar, digest, layer_tar, put_image, write_oci_layout

LAYERS = 5
HOST_DRIVERS = ("overlay", "vfs", "btrfs", "aufs")
#: Small enough for a quick mkfs under TCG.
GUEST_DM_OPTIONS = ("dm.basesize=2G", "dm.loopdatasize=8G", "dm.loopmetadatasize=128M")


def _layer(index: int, megabytes: float) -> bytes:
    rng = random.Random(index)
    share = megabytes * 1_000_000 / LAYERS
    big = int(share * 0.45)
    files: dict[str, bytes] = {f"big/blob{index}.bin": rng.randbytes(big)}
    small_budget = share - big
    i = 0
    words = [rng.randbytes(8).hex().encode() for _ in range(256)]
    while small_budget > 0:
        size = rng.randint(200, 12_000)
        text = b" ".join(rng.choice(words) for _ in range(size // 17 + 1))[:size]
        files[f"usr/share/l{index}/d{i // 200:03d}/file{i:05d}.txt"] = text
        small_budget -= size
        i += 1
    return layer_tar(files)


def _median(values: list[float]) -> float:
    return statistics.median(values)


class Image:
    """The generated image: tars, gzip blobs, an OCI layout for skopeo."""

    def __init__(self, work: Path, megabytes: float) -> None:
        self.tars = [_layer(i, megabytes) for i in range(LAYERS)]
        self.oci = write_oci_layout(work / "oci", self.tars, ref="b")
        blobs = work / "oci/blobs/sha256"
        self.paths = [blobs / d.partition(":")[2] for d in self.oci.layer_digests]
        self.blobs = [p.read_bytes() for p in self.paths]
        self.mb = sum(len(t) for t in self.tars) / 1e6
        (work / "policy.json").write_text('{"default":[{"type":"insecureAcceptAnything"}]}')
        (work / "registries.conf").write_text("")
        self.work = work


async def _open(root: Path, driver: str, options: Sequence[str] = (), shared: Sequence[Path] = ()):
    return await Store.open(root / "root", root / "run", driver, options, image_stores=shared)


async def _crio_apply(root: Path, driver: str, options: Sequence[str], image: Image) -> float:
    store = await _open(root, driver, options)
    try:
        start = time.perf_counter()
        parent = None
        for blob, diff_id in zip(image.blobs, image.oci.diff_ids, strict=True):
            layer = await store.put_layer(
                blob, parent=parent, diff_digest=diff_id, compressed_digest=digest(blob)
            )
            parent = layer.id
        return time.perf_counter() - start
    finally:
        await store.close()


async def _empty(root: Path, driver: str, options: Sequence[str]) -> None:
    """Remove a store through crio's driver (it reads what skopeo's wrote too)."""
    store = await _open(root, driver, options)
    try:
        for container in await store.containers():
            await store.delete_container(container.id)
        for image in await store.images():
            await store.delete_image(image.id, force=True)
        for layer in reversed(await store.layers()):
            await store.delete_layer(layer.id)
    finally:
        await store.close()
    unmount_under(root)
    shutil.rmtree(root, ignore_errors=True)


def _skopeo(root: Path, env: DriverEnv, image: Image) -> float:
    root.mkdir(parents=True, exist_ok=True)
    conf = root / "storage.conf"
    conf.write_text(f'[storage]\ndriver = "{env.name}"\ngraphroot = "{root}/x"\n'
                    f'runroot = "{root}/y"\n')  # fmt: skip
    environ = {**os.environ, "CONTAINERS_STORAGE_CONF": str(conf), "TMPDIR": str(root),
               "CONTAINERS_REGISTRIES_CONF": str(image.work / "registries.conf")}  # fmt: skip
    options = ",".join([*env.options, *TOOL_OPTIONS.get(env.name, ())])
    store = f"{env.name}@{root}/root+{root}/run" + (f":{options}" if options else "")
    start = time.perf_counter()
    subprocess.run(
        ["skopeo", "--policy", str(image.work / "policy.json"), "copy", "-q",
         f"oci:{image.oci.path}:b", f"containers-storage:[{store}]localhost/bench:1"],
        check=True, env=environ, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return time.perf_counter() - start


def _tar_apply(base: Path, image: Image) -> float:
    start = time.perf_counter()
    for i, path in enumerate(image.paths):
        target = base / f"layer{i}"
        target.mkdir(parents=True)
        subprocess.run(
            ["tar", "--numeric-owner", "--xattrs", "-xzf", str(path), "-C", str(target)],
            check=True,
        )
    return time.perf_counter() - start


async def _fill_deep(store: Store) -> str:
    layers = [busybox_rootfs_tar()] + [layer_tar({f"l/{i:02d}": b"%d" % i}) for i in range(1, 60)]
    image = await put_image(store, layers, name="localhost/deep:60")
    return image.id


async def _rootfs_bench(store: Store, image_id: str, runs: int) -> tuple[float, float, float]:
    """Medians (ms): create a container, mount+unmount it, the driver's bare get."""
    create, full, bare = [], [], []
    for i in range(runs + 1):
        start = time.perf_counter()
        ctr = await store.create_container(image_id, names=[f"bench{i}"])
        create.append(time.perf_counter() - start)
        start = time.perf_counter()
        await store.mount_container(ctr.id)
        full.append(time.perf_counter() - start)
        await store.unmount_container(ctr.id)
        start = time.perf_counter()
        await store.driver.get(ctr.layer)
        bare.append(time.perf_counter() - start)
        await store.driver.put(ctr.layer)
        await store.delete_container(ctr.id)
    return (_median(create[1:]) * 1000, _median(full[1:]) * 1000, _median(bare[1:]) * 1000)


def bench_driver(name: str, image: Image, args: argparse.Namespace, options: Sequence[str]) -> None:
    root = None if name == "btrfs" else Path(args.dir)
    with driver_env(name, root, options) as env:
        if env.skip:
            print(f"{name:13} not run: {env.skip}", flush=True)
            return
        crio_t, skopeo_t = [], []
        for run in range(args.runs):
            root_dir = env.base / f"c{run}"
            crio_t.append(asyncio.run(_crio_apply(root_dir, name, env.options, image)))
            asyncio.run(_empty(root_dir, name, env.options))
            root_dir = env.base / f"s{run}"
            skopeo_t.append(_skopeo(root_dir, env, image))
            asyncio.run(_empty(root_dir, name, env.options))

        async def deep() -> tuple[float, float, float]:
            store = await _open(env.base / "deep", name, env.options)
            try:
                return await _rootfs_bench(store, await _fill_deep(store), args.mount_runs)
            finally:
                await store.close()
                await _empty(env.base / "deep", name, env.options)

        create, full, bare = asyncio.run(deep())
        c, s = _median(crio_t), _median(skopeo_t)
        print(f"{name:13} apply crio {c:6.2f}s ({image.mb / c:5.1f} MB/s)  skopeo {s:6.2f}s  "
              f"crio/skopeo {c / s:4.2f} | 60 layers: create {create:7.1f} ms  "
              f"mount {full:7.1f} ms  driver get {bare:7.1f} ms", flush=True)  # fmt: skip


def bench_nfs(image: Image, args: argparse.Namespace) -> None:
    """A writer applies into an NFS-mounted store; a node uses a 60-layer image from it."""
    from support.nfs import nfs_export  # the guest has nfsd, this host does not

    scratch = Path(args.dir)
    export, client = scratch / "nfs-export", Path("/run/nfs-bench")
    with nfs_export(export, client, read_only=False):
        local_t, nfs_t = [], []
        for run in range(args.runs):
            local_t.append(asyncio.run(_crio_apply(scratch / f"l{run}", "overlay", (), image)))
            asyncio.run(_empty(scratch / f"l{run}", "overlay", ()))
            nfs_t.append(asyncio.run(_crio_apply(client / f"w{run}", "overlay", (), image)))
            asyncio.run(_empty(client / f"w{run}", "overlay", ()))

        async def node_bench(shared: bool) -> tuple[float, float, float]:
            writer = await _open(export / "deep" if shared else scratch / "node", "overlay")
            image_id = await _fill_deep(writer)
            await writer.close()
            stores = [client / "deep/root"] if shared else []
            node = await _open(scratch / "node", "overlay", (), stores)
            try:
                return await _rootfs_bench(node, image_id, args.mount_runs)
            finally:
                await node.close()

        over_nfs = asyncio.run(node_bench(True))
        local = asyncio.run(node_bench(False))
    lt, nt = _median(local_t), _median(nfs_t)
    print(f"{'nfs writer':13} apply into the NFS-mounted store {nt:6.2f}s  local disk "
          f"{lt:6.2f}s  nfs/local {nt / lt:4.2f}")  # fmt: skip
    print(f"{'nfs node':13} 60-layer image on the NFS store: create {over_nfs[0]:7.1f} ms  "
          f"mount {over_nfs[1]:7.1f} ms | same image in the node's store: "
          f"create {local[0]:7.1f} ms  mount {local[1]:7.1f} ms")  # fmt: skip


def run_in_guest(args: argparse.Namespace) -> None:
    from support.storage_guest import SCRATCH, GuestUnavailable, storage_guest

    try:
        with storage_guest() as guest:
            accel = guest.vm.accel
            print(f"storage guest booted in {guest.vm.boot_seconds:.1f}s ({accel}): devicemapper "
                  "and nfs there (compare figures within the guest)", flush=True)  # fmt: skip
            argv = [sys.executable, str(Path(__file__).resolve()), "--in-guest",
                    "--drivers", "devicemapper,nfs", "--runs", str(args.runs),
                    "--mb", str(args.guest_mb), "--mount-runs", str(max(3, args.mount_runs // 4)),
                    "--dir", SCRATCH]  # fmt: skip
            result = guest.run(argv, env=["PYTHONDONTWRITEBYTECODE=1", "HOME=/run"], timeout=7200)
            print(result.stdout.decode(errors="replace"), end="")
            if result.exit_code:
                print(result.stderr.decode(errors="replace")[-3000:])
    except GuestUnavailable as exc:
        print(f"guest drivers not run: {exc}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags bench/store.py shares with this script."""
    parser.add_argument("--drivers", default=",".join(HOST_DRIVERS))
    parser.add_argument("--guest", action="store_true", help="also devicemapper and NFS in a guest")
    parser.add_argument("--guest-mb", type=float, default=20.0)
    parser.add_argument("--in-guest", action="store_true", help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> None:
    """The per-driver figures (the part bench/store.py runs after its own)."""
    work = Path(tempfile.mkdtemp(prefix="crio-bench-drivers-", dir=args.dir))
    try:
        image = Image(work, args.mb)
        print(f"\nper driver: {image.mb:.1f} MB image, {sum(map(len, image.blobs)) / 1e6:.1f} MB "
              f"gzip; medians of {args.runs} (apply) and {args.mount_runs} (rootfs)")  # fmt: skip
        if not args.in_guest:
            tar_t = []
            for run_number in range(args.runs):
                tar_t.append(_tar_apply(work / f"tar{run_number}", image))
                shutil.rmtree(work / f"tar{run_number}", ignore_errors=True)
            t = _median(tar_t)
            print(f"{'GNU tar -xzf':13} {t:6.2f}s ({image.mb / t:5.1f} MB/s): the extraction floor")
        for name in [d for d in args.drivers.split(",") if d]:
            if name == "nfs":
                bench_nfs(image, args)
            else:
                options = GUEST_DM_OPTIONS if name == "devicemapper" else ()
                bench_driver(name, image, args, options)
        if args.guest and not args.in_guest:
            run_in_guest(args)
    finally:
        unmount_under(work)
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mb", type=float, default=100.0)
    parser.add_argument("--mount-runs", type=int, default=20)
    parser.add_argument("--dir", default="/var/tmp", help="where stores go (/dev/shm: CPU cost)")
    add_arguments(parser)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/store_drivers.py needs root (mounts, loop devices, skopeo)")
    run(args)


if __name__ == "__main__":
    main()
