"""Where the time of storing a layer goes: CPU per stage of crio's apply, on this machine.

Usage: .venv/bin/python bench/layer_costs.py [--mb 100] [--dir /dev/shm] [--runs 3]

The image of bench/store.py (5 gzip layers, ~9,000 files) goes through each
stage of the pipeline alone, in one thread, best of --runs (CPU time of the
thread, so the figures hold on a loaded machine): sha256 of the blobs,
inflating them (zlib-ng, and the system zlib for comparison), sha256 of the
tars, tar parsing (the sans-I/O reader), tar-split (with its CRC-64), the
per-member decisions, then the whole apply (files included) from plain tars,
and fsync of the store's metadata files. Then the five layers applied one
after the other and in five threads at once, to show what the GIL lets two
cores share. Prints figures only; asserts nothing.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import shutil
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from store import LAYERS, _layer  # the same generated image as bench/store.py
from zlib_ng import zlib_ng

from crio.storage._applier import apply_tar
from crio.storage._files import atomic_write
from crio.storage._streams import LayerReader, ReadAhead
from crio.storage.driver import WhiteoutFormat
from crio.storage.tarapply import ApplyPolicy, plan
from crio.storage.tarsplit import TarSplitWriter
from crio.storage.tarstream import NEED_DATA, End, Member, TarReader

POLICY = ApplyPolicy(WhiteoutFormat.OVERLAY)
CHUNK = 128 << 10


def _cpu(work: Callable[[], object], runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.thread_time()
        work()
        best = min(best, time.thread_time() - start)
    return best


def _events(tars: list[bytes], split: bool, decide: bool) -> None:
    for tar in tars:
        reader, writer = TarReader(), TarSplitWriter()
        view = memoryview(tar)
        for at in range(0, len(tar) + 1, CHUNK):
            reader.receive_data(bytes(view[at : at + CHUNK]) or b"")
            while (event := reader.next_event()) is not NEED_DATA:
                if split:
                    writer.feed(event)
                if decide and type(event) is Member:
                    plan(event.header, POLICY)  # type: ignore[union-attr]
                if type(event) is End:
                    break


def _inflate(module: object, blobs: list[bytes]) -> None:
    for blob in blobs:
        obj = module.decompressobj(31)  # type: ignore[attr-defined]
        rest = blob
        while rest:
            obj.decompress(rest, CHUNK)
            rest = obj.unconsumed_tail


def _apply_all(work: Path, sources: list[bytes], threads: bool, gz: bool) -> float:
    """Wall time to apply every layer, one after the other or in one thread each."""
    dirs = [Path(tempfile.mkdtemp(dir=work)) for _ in sources]

    def one(i: int) -> None:
        stream = ReadAhead(LayerReader(io.BytesIO(sources[i]))) if gz else io.BytesIO(sources[i])
        apply_tar(dirs[i], stream, POLICY)  # type: ignore[arg-type]
        if gz:
            stream.close()

    start = time.perf_counter()
    if threads:
        workers = [threading.Thread(target=one, args=(i,)) for i in range(len(sources))]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    else:
        for i in range(len(sources)):
            one(i)
    elapsed = time.perf_counter() - start
    for directory in dirs:
        shutil.rmtree(directory)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=100.0)
    parser.add_argument("--dir", default="/dev/shm", help="where files are written")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    tars = [_layer(i, args.mb) for i in range(LAYERS)]
    blobs = [gzip.compress(t, 6, mtime=0) for t in tars]
    raw, packed = sum(map(len, tars)), sum(map(len, blobs))
    members = sum(t.count(b"ustar\x0000") for t in tars)
    work = Path(tempfile.mkdtemp(prefix="crio-costs-", dir=args.dir))
    print(
        f"{LAYERS} layers: {raw / 1e6:.1f} MB of tar, {packed / 1e6:.1f} MB gzip, ~{members} files"
    )
    try:
        runs = args.runs
        parse = _cpu(lambda: _events(tars, False, False), runs)
        split = _cpu(lambda: _events(tars, True, False), runs) - parse
        decide = _cpu(lambda: _events(tars, False, True), runs) - parse

        def apply_plain() -> None:
            for tar in tars:
                target = Path(tempfile.mkdtemp(dir=work))
                apply_tar(target, io.BytesIO(tar), POLICY)
                shutil.rmtree(target)

        whole = _cpu(apply_plain, runs)
        files = whole - parse - split - decide
        rows = [
            ("sha256 of the blobs", _cpu(lambda: [hashlib.sha256(b) for b in blobs], runs), packed),
            ("inflate (zlib-ng)", _cpu(lambda: _inflate(zlib_ng, blobs), runs), raw),
            ("inflate (system zlib)", _cpu(lambda: _inflate(zlib, blobs), runs), raw),
            ("sha256 of the tars", _cpu(lambda: [hashlib.sha256(t) for t in tars], runs), raw),
            ("tar parsing (events)", parse, raw),
            ("tar-split (CRC-64 incl.)", split, raw),
            ("member decisions (plan)", decide, raw),
            ("files: create, write, chown, utime", files, raw),
        ]
        print(f"\nCPU per stage, one thread, best of {runs} (files on {args.dir}):")
        for name, seconds, size in rows:
            print(
                f"  {name:<36} {seconds * 1000:7.0f} ms  {seconds / size * 1e9:5.2f} ns/byte"
                f"  {seconds / members * 1e6:6.1f} us/file"
            )
        pipeline = sum(s for n, s, _ in rows if "system" not in n)
        print(f"  {'sum (crio apply of the image)':<36} {pipeline * 1000:7.0f} ms")
        fsyncs = []
        for size in (200_000, 2_000):  # a tar-split file, a layers.json
            start = time.perf_counter()
            for i in range(10):
                atomic_write(work / f"meta{i}", os.urandom(size))
            fsyncs.append((time.perf_counter() - start) / 10)
        print(
            f"  {'atomic write + fsync (tar-split, json)':<36} "
            f"{fsyncs[0] * 1000:7.2f} / {fsyncs[1] * 1000:.2f} ms each; a pull does 2 per layer"
        )
        one = min(_apply_all(work, blobs, False, True) for _ in range(runs))
        together = min(_apply_all(work, blobs, True, True) for _ in range(runs))
        print(
            f"\napplying the {LAYERS} gzip layers (inflate + hash thread and apply thread each):\n"
            f"  one after the other {one:.2f} s, all at once {together:.2f} s: "
            f"{one / together:.2f}x on {os.cpu_count()} cores"
            f" (load average {os.getloadavg()[0]:.1f})"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
