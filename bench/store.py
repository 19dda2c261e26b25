"""What storing an image costs: crio's layer apply against GNU tar and skopeo.

Usage (root): .venv/bin/python bench/store.py [--runs 3] [--mb 100] [--mount-runs 20] [--dir D]

A generated image of about --mb MB (uncompressed) in 5 gzip layers, each
with ~2,000 small files and one large file (random bytes, so the large files
do not compress away), is stored three ways, each into a fresh directory:

- crio: ``Store.put_layer`` for each layer on the overlay driver: decompress,
  hash both sides, safe extraction, tar-split, atomic metadata.
- GNU tar: ``tar -xzf`` of the same blobs into plain directories (extraction
  only: no digests, no metadata, no tar-split).
- skopeo: ``skopeo copy oci:DIR containers-storage:[overlay@ROOT+RUNROOT]``
  of the same image (what podman/CRI-O's storage does for a pull).

Then the time to mount a container's root file system on a 60-layer image
(``Store.mount_container`` + unmount, reference counting included) and the
bare overlay mount syscall for the same layer.

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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from crio.storage import Store
from crio.storage.mount import unmount
from support.images import busybox_rootfs_tar, digest, layer_tar, put_image, write_oci_layout

LAYERS = 5


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


async def _crio_apply(base: Path, blobs: list[bytes], diff_ids: list[str]) -> float:
    store = await Store.open(base / "root", base / "run", "overlay")
    start = time.perf_counter()
    parent = None
    for blob, diff_id in zip(blobs, diff_ids, strict=True):
        layer = await store.put_layer(
            blob, parent=parent, diff_digest=diff_id, compressed_digest=digest(blob)
        )
        parent = layer.id
    elapsed = time.perf_counter() - start
    await store.close()
    return elapsed


def _tar_apply(base: Path, blob_paths: list[Path]) -> float:
    start = time.perf_counter()
    for i, path in enumerate(blob_paths):
        target = base / f"layer{i}"
        target.mkdir(parents=True)
        subprocess.run(
            ["tar", "--numeric-owner", "--xattrs", "-xzf", str(path), "-C", str(target)],
            check=True,
        )
    return time.perf_counter() - start


def _skopeo(base: Path, oci: Path, env: dict[str, str]) -> float:
    ref = f"containers-storage:[overlay@{base}/root+{base}/run]localhost/bench:1"
    start = time.perf_counter()
    subprocess.run(
        ["skopeo", "--policy", str(oci.parent / "policy.json"), "copy", "-q", f"oci:{oci}:b", ref],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


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
        crio_t, tar_t, skopeo_t = [], [], []
        for run in range(args.runs):
            base = work / f"crio{run}"
            crio_t.append(asyncio.run(_crio_apply(base, blobs, list(oci.diff_ids))))
            _cleanup(base)
            base = work / f"tar{run}"
            tar_t.append(_tar_apply(base, blob_paths))
            _cleanup(base)
            base = work / f"skopeo{run}"
            skopeo_t.append(_skopeo(base, work / "oci", env))
            _cleanup(base)
            figures = f"crio {crio_t[-1]:.2f}s  tar {tar_t[-1]:.2f}s  skopeo {skopeo_t[-1]:.2f}s"
            print(f"run {run + 1}: {figures}", flush=True)
        c, t, s = _median(crio_t), _median(tar_t), _median(skopeo_t)
        mb = raw / 1e6
        print()
        print(f"layer apply, {LAYERS} layers, {mb:.1f} MB (median of {args.runs}):")
        print(f"  crio Store.put_layer  {c:6.2f} s   {mb / c:6.1f} MB/s")
        print(f"  GNU tar -xzf          {t:6.2f} s   {mb / t:6.1f} MB/s")
        print(f"  skopeo copy           {s:6.2f} s   {mb / s:6.1f} MB/s")
        print(f"  ratio crio/tar {c / t:.2f}   crio/skopeo {c / s:.2f}")
        full, bare = asyncio.run(_mount_bench(work / "mount", args.mount_runs))
        _cleanup(work / "mount")
        print()
        print(f"mount a container rootfs on a 60-layer image (median of {args.mount_runs}):")
        print(f"  Store.mount_container  {full:6.2f} ms  (lock files, mountpoints.json, mount)")
        print(f"  overlay driver get     {bare:6.2f} ms  (the mount(2) alone)")
    finally:
        _cleanup(work)


if __name__ == "__main__":
    main()
