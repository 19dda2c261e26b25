"""What storing an image costs: crio's layer apply against GNU tar and skopeo.

Usage (root): .venv/bin/python bench/store.py [--runs 3] [--mb 100] [--mount-runs 20] [--dir D]

A generated image of about --mb MB (uncompressed) in 5 gzip layers, each
with ~2,000 small files and one large file (random bytes, so the large files
do not compress away), is stored these ways, each into a fresh directory,
in interleaved rounds:

- crio image: crio's copy engine from the OCI layout into its store (overlay),
  as a pull applies an image: every layer at once, each while its bytes are
  read (decompress, hash both sides, safe extraction, tar-split, metadata),
  recorded parents first. The counterpart of the skopeo line.
- crio one by one: ``Store.put_layer`` for each layer after the other.
- GNU tar: ``tar -xzf`` of the same blobs into plain directories, one after
  the other, and all five at once (extraction only: no digests, no
  metadata, no tar-split).
- skopeo: ``skopeo copy oci:DIR containers-storage:[overlay@ROOT+RUNROOT]``
  of the same image (what podman/CRI-O's storage does for a pull).

Wall time and CPU time (user + system, every thread or child) are printed.
Then the time to mount a container's root file system on a 60-layer image
(``Store.mount_container`` + unmount, reference counting included) and the
bare overlay mount syscall for the same layer.

Then the same per graph driver (bench/store_drivers.py: --drivers, --guest
for devicemapper and an NFS-shared store in a qemu guest).

Figures are medians over --runs; prints ratios; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import store_drivers

from crio.image.copy import CopyOptions, copy_image
from crio.image.transport import TransportContext
from crio.plugins import Plugins
from crio.storage import Store
from crio.storage.mount import unmount
from support.images import busybox_rootfs_tar, digest, layer_tar, put_image, write_oci_layout

LAYERS = 5


@dataclass(frozen=True)
class Figure:
    wall: float
    cpu: float


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


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def _crio_apply(base: Path, blobs: list[bytes], diff_ids: list[str]) -> Figure:
    store = await Store.open(base / "root", base / "run", "overlay")
    start, cpu = time.perf_counter(), _cpu_self()
    parent = None
    for blob, diff_id in zip(blobs, diff_ids, strict=True):
        layer = await store.put_layer(
            blob, parent=parent, diff_digest=diff_id, compressed_digest=digest(blob)
        )
        parent = layer.id
    figure = Figure(time.perf_counter() - start, _cpu_self() - cpu)
    await store.close()
    return figure


async def _crio_image(base: Path, oci: Path, plugins: Plugins) -> Figure:
    store = await Store.open(base / "root", base / "run", "overlay", plugins=plugins)
    context = TransportContext(store=store)
    layout, storage = plugins.image_transport("oci"), plugins.image_transport("containers-storage")
    assert layout is not None and storage is not None
    start, cpu = time.perf_counter(), _cpu_self()
    source = await layout.open_source(f"{oci}:b", context)
    dest = await storage.open_destination("localhost/bench:1", context)
    try:
        await copy_image(source, dest, CopyOptions())
    finally:
        await dest.close()
        await source.close()
    figure = Figure(time.perf_counter() - start, _cpu_self() - cpu)
    await store.close()
    return figure


def _tar_apply(base: Path, blob_paths: list[Path], together: bool = False) -> Figure:
    start, cpu = time.perf_counter(), _cpu_children()
    procs = []
    for i, path in enumerate(blob_paths):
        target = base / f"layer{i}"
        target.mkdir(parents=True)
        command = ["tar", "--numeric-owner", "--xattrs", "-xzf", str(path), "-C", str(target)]
        procs.append(subprocess.Popen(command))
        if not together:
            procs[-1].wait()
    for proc in procs:
        if proc.wait() != 0:
            raise SystemExit(f"tar failed: {proc.args}")
    return Figure(time.perf_counter() - start, _cpu_children() - cpu)


def _skopeo(base: Path, oci: Path, env: dict[str, str]) -> Figure:
    ref = f"containers-storage:[overlay@{base}/root+{base}/run]localhost/bench:1"
    start, cpu = time.perf_counter(), _cpu_children()
    subprocess.run(
        ["skopeo", "--policy", str(oci.parent / "policy.json"), "copy", "-q", f"oci:{oci}:b", ref],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    return Figure(time.perf_counter() - start, _cpu_children() - cpu)


def _cleanup(base: Path) -> None:
    with open("/proc/self/mountinfo") as handle:
        points = [line.split()[4] for line in handle if f" {base}/" in line]
    for point in sorted(points, reverse=True):
        unmount(point)
    shutil.rmtree(base, ignore_errors=True)


async def _mount_bench(work: Path, runs: int) -> tuple[float, float]:
    store = await Store.open(work / "root", work / "run", "overlay")
    layers = [busybox_rootfs_tar()] + [layer_tar({f"l/{i:02d}": b"%d" % i}) for i in range(1, 60)]
    image = await put_image(store, layers, name="localhost/deep:60")
    ctr = await store.create_container(image.id, names=["bench"])
    full, bare = [], []
    for _ in range(runs + 2):
        start = time.perf_counter()
        await store.mount_container(ctr.id)
        full.append(time.perf_counter() - start)
        await store.unmount_container(ctr.id)
        start = time.perf_counter()
        await store.driver.get(ctr.layer)
        bare.append(time.perf_counter() - start)
        await store.driver.put(ctr.layer)
    await store.close()
    return _median(full[2:]) * 1000, _median(bare[2:]) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mb", type=float, default=100.0)
    parser.add_argument("--mount-runs", type=int, default=20)
    parser.add_argument(
        "--dir", default="/var/tmp", help="where the stores go (/dev/shm: CPU cost without disk)"
    )
    store_drivers.add_arguments(parser)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/store.py needs root (overlay mounts, skopeo into containers-storage)")

    work = Path(tempfile.mkdtemp(prefix="crio-bench-store-", dir=args.dir))
    try:
        print(f"generating a ~{args.mb:.0f} MB image in {LAYERS} layers ...", flush=True)
        tars = [_layer(i, args.mb) for i in range(LAYERS)]
        oci = write_oci_layout(work / "oci", tars, ref="b")
        blobs = [
            (work / "oci/blobs/sha256" / d.partition(":")[2]).read_bytes()
            for d in oci.layer_digests
        ]
        blob_paths = [work / "oci/blobs/sha256" / d.partition(":")[2] for d in oci.layer_digests]
        raw = sum(len(t) for t in tars)
        packed = sum(len(b) for b in blobs)
        files = sum(t.count(b"ustar\x0000") for t in tars)
        print(f"stores under {work}")
        print(f"image: {raw / 1e6:.1f} MB uncompressed, {packed / 1e6:.1f} MB gzip, ~{files} files")
        (work / "policy.json").write_text('{"default":[{"type":"insecureAcceptAnything"}]}')
        (work / "storage.conf").write_text(
            f'[storage]\ndriver = "overlay"\ngraphroot = "{work}/x"\nrunroot = "{work}/y"\n'
        )
        (work / "registries.conf").write_text("")
        env = {
            **os.environ,
            "CONTAINERS_STORAGE_CONF": str(work / "storage.conf"),
            "CONTAINERS_REGISTRIES_CONF": str(work / "registries.conf"),
        }
        plugins = Plugins()
        plugins.load_entry_points()
        peers: dict[str, Callable[[Path], Figure]] = {
            "crio image (layers at once)": lambda base: asyncio.run(
                _crio_image(base, work / "oci", plugins)
            ),
            "crio put_layer one by one": lambda base: asyncio.run(
                _crio_apply(base, blobs, list(oci.diff_ids))
            ),
            "GNU tar -xzf one by one": lambda base: _tar_apply(base, blob_paths),
            "GNU tar -xzf all at once": lambda base: _tar_apply(base, blob_paths, together=True),
            "skopeo copy": lambda base: _skopeo(base, work / "oci", env),
        }
        figures: dict[str, list[Figure]] = {name: [] for name in peers}
        for run in range(args.runs):
            for number, (name, peer) in enumerate(peers.items()):
                base = work / f"r{run}-{number}"
                figures[name].append(peer(base))
                _cleanup(base)
            line = ", ".join(f"{n.split(' (')[0]} {f[-1].wall:.2f}s" for n, f in figures.items())
            print(f"run {run + 1}: {line}", flush=True)
        mb = raw / 1e6
        wall = {name: _median([f.wall for f in got]) for name, got in figures.items()}
        cpu = {name: _median([f.cpu for f in got]) for name, got in figures.items()}
        print()
        print(f"storing {LAYERS} layers, {mb:.1f} MB (median of {args.runs}, {args.dir}):")
        for name in peers:
            print(
                f"  {name:<28} {wall[name]:6.2f} s  {mb / wall[name]:6.1f} MB/s"
                f"   CPU {cpu[name]:5.2f} s"
            )
        image, one = wall["crio image (layers at once)"], wall["crio put_layer one by one"]
        tar_one, tar_all = wall["GNU tar -xzf one by one"], wall["GNU tar -xzf all at once"]
        print(
            f"  ratio crio image/tar one by one {image / tar_one:.2f}   "
            f"crio image/tar all at once {image / tar_all:.2f}   "
            f"crio one by one/tar one by one {one / tar_one:.2f}   "
            f"crio image/skopeo {image / wall['skopeo copy']:.2f}"
        )
        full, bare = asyncio.run(_mount_bench(work / "mount", args.mount_runs))
        _cleanup(work / "mount")
        print()
        print(f"mount a container rootfs on a 60-layer image (median of {args.mount_runs}):")
        print(f"  Store.mount_container  {full:6.2f} ms  (lock files, mountpoints.json, mount)")
        print(f"  overlay driver get     {bare:6.2f} ms  (the mount(2) alone)")
    finally:
        _cleanup(work)
    store_drivers.run(args)


if __name__ == "__main__":
    main()
