"""Pull an image of about 100 MB in 5 layers from a loopback registry into an empty store.

Peers, each with a private root per round: crio's pull engine in this
process, ``kpod pull`` (crio's CLI, interpreter start included), ``skopeo copy
docker://... containers-storage:...`` and ``podman pull``. Prints every
round, the medians and the ratios. Never asserts on time.

    .venv/bin/python bench/pull.py [--rounds 5] [--driver overlay] [--mb 100]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from crio.image import registries
from crio.image.pull import ImageSettings, Puller
from crio.image.reference import Reference
from crio.image.transport import ImageDestination
from crio.plugins import Plugins
from crio.storage import Store
from support.registry import Registry, skopeo_push

KPOD = str(Path(sys.executable).with_name("kpod"))


def build_image(root: Path, total_mb: int, layers: int = 5) -> str:
    """An OCI layout: each layer a mix of incompressible and text files (gzip)."""
    import gzip
    import hashlib
    import io
    import json
    import random
    import tarfile

    rng = random.Random(42)
    (root / "blobs/sha256").mkdir(parents=True)

    def blob(data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        (root / "blobs/sha256" / digest).write_bytes(data)
        return "sha256:" + digest

    per_layer = total_mb * 1_000_000 // layers
    descs, diff_ids = [], []
    for n in range(layers):
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            written, i = 0, 0
            while written < per_layer:
                big = i % 50 == 0
                size = rng.randint(2_000_000, 6_000_000) if big else rng.randint(200, 40_000)
                if i % 3 == 0:
                    data = rng.randbytes(size)
                else:
                    words = [b"crio", b"layer", b"bench", b"%d" % n, b"registry", b"pull"]
                    data = b" ".join(rng.choice(words) for _ in range(size // 5))[:size]
                info = tarfile.TarInfo(f"layer{n}/dir{i % 40}/file{i}")
                info.size, info.mode, info.mtime = len(data), 0o644, 1700000000
                tar.addfile(info, io.BytesIO(data))
                written += len(data)
                i += 1
        raw = out.getvalue()
        diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
        packed = gzip.compress(raw, compresslevel=6, mtime=0)
        descs.append(
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": blob(packed),
                "size": len(packed),
            }
        )
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": blob(config),
                "size": len(config),
            },
            "layers": descs,
        }
    ).encode()
    digest = blob(manifest)
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (root / "index.json").write_text(
        json.dumps(
            {
                "schemaVersion": 2,
                "manifests": [
                    {
                        "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "digest": digest,
                        "size": len(manifest),
                        "annotations": {"org.opencontainers.image.ref.name": "v1"},
                    }
                ],
            }
        )
    )
    compressed = sum(d["size"] for d in descs)
    print(f"image: {layers} layers, {total_mb} MB uncompressed, {compressed / 1e6:.1f} MB gzip")
    return f"oci:{root}:v1"


def _cleanup_root(root: Path, runroot: Path, driver: str) -> None:
    # Unmount anything a peer left mounted under its private root, then remove it.
    for base in (runroot, root):
        mounts = [
            line.split()[1]
            for line in Path("/proc/self/mounts").read_text().splitlines()
            if line.split()[1].startswith(str(base))
        ]
        for mount in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", mount], check=False)
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(runroot, ignore_errors=True)


def crio_in_process(
    plugins: Plugins, ref: str, host: str, driver: str, policy: str
) -> Callable[[Path], None]:
    settings = ImageSettings(
        registries=registries.Registries(insecure_extra=(host,)), signature_policy=policy
    )

    def run(base: Path) -> None:
        async def pull() -> None:
            store = await Store.open(base / "root", base / "runroot", driver, plugins=plugins)
            storage = plugins.image_transport("containers-storage")
            assert storage is not None

            async def dest(r: Reference | None, reference: str) -> ImageDestination:
                return await storage.open_destination(str(r), settings.context(store=store))

            try:
                await Puller().pull(plugins, ref, settings, dest, store=store)
            finally:
                await store.close()

        asyncio.run(pull())

    return run


def kpod(ref: str, host: str, driver: str, policy: str) -> Callable[[Path], None]:
    def run(base: Path) -> None:
        conf = base / "crio.conf"
        conf.write_text(
            f'[crio]\nroot = "{base}/root"\nrunroot = "{base}/runroot"\n'
            f'storage_driver = "{driver}"\n'
            f'[crio.image]\nsignature_policy = "{policy}"\ninsecure_registries = ["{host}"]\n'
            f'registries_conf = "{base}/registries.conf"\n'
        )
        (base / "registries.conf").write_text("")
        (base / "conf.d").mkdir()
        subprocess.run(
            [KPOD, "--config", str(conf), "--config-dir", str(base / "conf.d"), "pull", "-q", ref],
            check=True,
            capture_output=True,
        )

    return run


def skopeo(ref: str, driver: str) -> Callable[[Path], None]:
    def run(base: Path) -> None:
        subprocess.run(
            [
                "skopeo",
                "copy",
                "-q",
                "--src-tls-verify=false",
                f"docker://{ref}",
                f"containers-storage:[{driver}@{base}/root+{base}/runroot]{ref}",
            ],
            check=True,
            capture_output=True,
        )

    return run


def podman(ref: str, driver: str) -> Callable[[Path], None]:
    def run(base: Path) -> None:
        subprocess.run(
            [
                "podman",
                "--root",
                f"{base}/root",
                "--runroot",
                f"{base}/runroot",
                "--storage-driver",
                driver,
                "--events-backend",
                "none",
                "--tmpdir",
                f"{base}/tmp",
                "pull",
                "-q",
                "--tls-verify=false",
                ref,
            ],
            check=True,
            capture_output=True,
            env={**os.environ, "CONTAINERS_CONF": "/dev/null"},
        )

    return run


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--driver", default="overlay")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="crio-bench-pull-"))
    registry = Registry(base=work / "registry")
    try:
        source = build_image(work / "layout", args.mb)
        registry.start()
        skopeo_push(source, registry, "bench/big:v1")
        ref = f"{registry.host}/bench/big:v1"
        policy = work / "policy.json"
        policy.write_text('{"default": [{"type": "insecureAcceptAnything"}]}')
        plugins = Plugins()
        plugins.load_entry_points()
        peers = {
            "crio (in process)": crio_in_process(
                plugins, ref, registry.host, args.driver, str(policy)
            ),
            "kpod pull": kpod(ref, registry.host, args.driver, str(policy)),
            "skopeo copy": skopeo(ref, args.driver),
            "podman pull": podman(ref, args.driver),
        }
        times: dict[str, list[float]] = {name: [] for name in peers}
        for round_no in range(1, args.rounds + 1):
            for name, run in peers.items():
                base = work / f"r{round_no}-{name.split()[0]}"
                base.mkdir()
                started = time.perf_counter()
                run(base)
                times[name].append(time.perf_counter() - started)
                _cleanup_root(base / "root", base / "runroot", args.driver)
                shutil.rmtree(base, ignore_errors=True)
            print(
                f"round {round_no}: " + ", ".join(f"{n} {t[-1]:.2f}s" for n, t in times.items()),
                flush=True,
            )
        medians = {name: statistics.median(t) for name, t in times.items()}
        print(f"\nmedians over {args.rounds} rounds ({args.driver}, {args.mb} MB in 5 layers):")
        for name, value in medians.items():
            print(f"  {name:<18} {value:6.2f} s")
        base = medians["crio (in process)"]
        print("ratios (peer / crio in process; > 1 means crio is faster):")
        for name in ("kpod pull", "skopeo copy", "podman pull"):
            print(f"  {name:<18} {medians[name] / base:5.2f}")
    finally:
        registry.cleanup()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
