"""Pull an image of about 100 MB in 5 layers from a loopback registry into an empty store.

Peers, in interleaved rounds, each into a private root per round:

- ``crio daemon``: CRI PullImage to a running crio (its own root; the image
  is removed again between rounds, untimed); the daemon's CPU is read from
  /proc.
- ``crio in process``: crio's pull engine in this process.
- ``kpod pull``: crio's CLI (interpreter start and imports included).
- ``skopeo copy docker://... containers-storage:...`` and ``podman pull``.

Prints every round, then medians of wall time and CPU time (user + system
of every thread or child process; the registry's own CPU is not counted for
anyone), the ratios, and the machine's load average. Never asserts on time.

    .venv/bin/python bench/pull.py [--rounds 5] [--driver overlay] [--mb 100]
"""

from __future__ import annotations

import argparse
import asyncio
import os
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

from crio.api import api_pb2 as api
from crio.image import registries
from crio.image.pull import ImageSettings, Puller
from crio.image.reference import Reference
from crio.image.transport import ImageDestination
from crio.plugins import Plugins
from crio.storage import Store
from support.daemon import CrioProcess
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


@dataclass(frozen=True)
class Figure:
    wall: float
    cpu: float


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _child(command: list[str], **kwargs: object) -> Callable[[Path], Figure]:
    """A peer that runs one command (``{base}`` in an argument is the round's directory)."""

    def run(base: Path) -> Figure:
        argv = [arg.replace("{base}", str(base)) for arg in command]
        start, cpu = time.perf_counter(), _cpu_children()
        subprocess.run(argv, check=True, capture_output=True, **kwargs)  # type: ignore[call-overload]
        return Figure(time.perf_counter() - start, _cpu_children() - cpu)

    return run


def crio_in_process(
    plugins: Plugins, ref: str, host: str, driver: str, policy: str
) -> Callable[[Path], Figure]:
    settings = ImageSettings(
        registries=registries.Registries(insecure_extra=(host,)), signature_policy=policy
    )

    async def pull(base: Path) -> None:
        store = await Store.open(base / "root", base / "runroot", driver, plugins=plugins)
        storage = plugins.image_transport("containers-storage")
        assert storage is not None

        async def dest(r: Reference | None, reference: str) -> ImageDestination:
            return await storage.open_destination(str(r), settings.context(store=store))

        try:
            await Puller().pull(plugins, ref, settings, dest, store=store)
        finally:
            await store.close()

    def run(base: Path) -> Figure:
        start, cpu = time.perf_counter(), _cpu_self()
        asyncio.run(pull(base))
        return Figure(time.perf_counter() - start, _cpu_self() - cpu)

    return run


class CrioDaemon:
    """A crio serving CRI on a private socket, with its own root; PullImage per round."""

    def __init__(self, ref: str, host: str, driver: str, policy: str) -> None:
        self.ref = ref
        empty = Path(policy).with_name("registries-empty.conf")
        empty.write_text("")
        self.crio = CrioProcess(
            {
                "crio": {"storage_driver": driver},
                "crio.image": {
                    "signature_policy": policy,
                    "insecure_registries": [host],
                    "registries_conf": str(empty),
                },
            }
        )
        self.crio.start()
        assert self.crio.proc is not None
        self.pid = self.crio.proc.pid

    def __call__(self, base: Path) -> Figure:
        with self.crio.channel() as channel:
            stub = self.crio.image_stub(channel)
            start, cpu = time.perf_counter(), _cpu_of(self.pid)
            reply = stub.PullImage(
                api.PullImageRequest(image=api.ImageSpec(image=self.ref)), timeout=600
            )
            figure = Figure(time.perf_counter() - start, _cpu_of(self.pid) - cpu)
            stub.RemoveImage(api.RemoveImageRequest(image=api.ImageSpec(image=reply.image_ref)))
        return figure

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def cleanup(self) -> None:
        self.crio.cleanup()


def kpod(ref: str, host: str, driver: str, policy: str, work: Path) -> Callable[[Path], Figure]:
    conf = work / "kpod.conf"
    conf.write_text(
        '[crio]\nroot = "{base}/root"\nrunroot = "{base}/runroot"\n'
        f'storage_driver = "{driver}"\n'
        f'[crio.image]\nsignature_policy = "{policy}"\ninsecure_registries = ["{host}"]\n'
        f'registries_conf = "{work}/registries.conf"\n'
    )
    (work / "registries.conf").write_text("")
    (work / "conf.d").mkdir()
    peer = _child([KPOD, "--config", "{base}/crio.conf", "--config-dir", f"{work}/conf.d",
                   "pull", "-q", ref])  # fmt: skip

    def run(base: Path) -> Figure:
        (base / "crio.conf").write_text(conf.read_text().replace("{base}", str(base)))
        return peer(base)

    return run


def skopeo(ref: str, driver: str) -> Callable[[Path], Figure]:
    return _child(
        [
            "skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{ref}",
            f"containers-storage:[{driver}@{{base}}/root+{{base}}/runroot]{ref}",
        ]
    )  # fmt: skip


def podman(ref: str, driver: str) -> Callable[[Path], Figure]:
    return _child(
        [
            "podman", "--root", "{base}/root", "--runroot", "{base}/runroot",
            "--storage-driver", driver, "--events-backend", "none", "--tmpdir", "{base}/tmp",
            "pull", "-q", "--tls-verify=false", ref,
        ],
        env={**os.environ, "CONTAINERS_CONF": "/dev/null"},
    )  # fmt: skip


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
        daemon = CrioDaemon(ref, registry.host, args.driver, str(policy))
        rss_idle = daemon.rss_mb()
        peers: dict[str, Callable[[Path], Figure]] = {
            "crio daemon": daemon,
            "crio in process": crio_in_process(
                plugins, ref, registry.host, args.driver, str(policy)
            ),
            "kpod pull": kpod(ref, registry.host, args.driver, str(policy), work),
            "skopeo copy": skopeo(ref, args.driver),
            "podman pull": podman(ref, args.driver),
        }
        figures: dict[str, list[Figure]] = {name: [] for name in peers}
        try:
            for round_no in range(1, args.rounds + 1):
                for name, run in peers.items():
                    base = work / f"r{round_no}-{name.split()[-1]}"
                    base.mkdir()
                    figures[name].append(run(base))
                    _cleanup_root(base / "root", base / "runroot", args.driver)
                    shutil.rmtree(base, ignore_errors=True)
                print(
                    f"round {round_no}: "
                    + ", ".join(f"{n} {f[-1].wall:.2f}s" for n, f in figures.items()),
                    flush=True,
                )
            rss_after = daemon.rss_mb()
        finally:
            daemon.cleanup()
        wall = {name: statistics.median(f.wall for f in got) for name, got in figures.items()}
        cpu = {name: statistics.median(f.cpu for f in got) for name, got in figures.items()}
        print(f"\nmedians over {args.rounds} rounds ({args.driver}, {args.mb} MB in 5 layers):")
        for name in peers:
            print(f"  {name:<16} {wall[name]:6.2f} s   CPU {cpu[name]:5.2f} s")
        print("ratios (peer / crio daemon; > 1 means crio is faster):")
        for name in ("skopeo copy", "podman pull", "crio in process", "kpod pull"):
            print(
                f"  {name:<16} wall {wall[name] / wall['crio daemon']:5.2f}"
                f"   CPU {cpu[name] / cpu['crio daemon']:5.2f}"
            )
        print(f"crio daemon RSS: {rss_idle:.1f} MB idle, {rss_after:.1f} MB after the pulls")
        print("load average (1, 5, 15 min): " + " ".join(f"{x:.1f}" for x in os.getloadavg()))
    finally:
        registry.cleanup()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
