"""Debian's Prometheus server and promtool, unpacked for the tests: crio's metrics as a
real Prometheus reads them.

The package is fetched with ``apt-get download`` from the host's Debian
sources and unpacked with ``dpkg-deb -x`` into a cache directory, so nothing
is installed on the host: no service starts, no user is made, and the only
server running is the one a test starts, on loopback, with its own
configuration and data directory. ``python -m support.prometheus`` (``make
prometheus``) fetches it ahead of the tests.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["PACKAGE", "Prometheus", "PrometheusUnavailable", "ensure", "find", "running"]

PACKAGE = "prometheus"
#: Where the unpacked package is kept (override with CRIO_TEST_PROMETHEUS).
CACHE = Path(os.environ.get("CRIO_TEST_PROMETHEUS", "/var/tmp/crio-test/prometheus"))


class PrometheusUnavailable(Exception):
    """The package cannot be had here (no apt source has it, or the download failed)."""


def _binaries(root: Path) -> tuple[Path, Path]:
    return root / "usr/bin/prometheus", root / "usr/bin/promtool"


def find() -> tuple[Path, Path] | None:
    """(prometheus, promtool) from the cache, or None when not fetched yet."""
    found = _binaries(CACHE / "root")
    return found if all(os.access(path, os.X_OK) for path in found) else None


def ensure() -> tuple[Path, Path]:
    """Fetch and unpack the package once (concurrent callers wait for the first).

    :raises PrometheusUnavailable:
    """
    found = find()
    if found:
        return found
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    with open(CACHE.parent / f"{CACHE.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = find()
        if found:
            return found
        work = Path(tempfile.mkdtemp(prefix=f"{CACHE.name}.", dir=CACHE.parent))
        try:
            fetched = subprocess.run(
                ["apt-get", "download", "-q", PACKAGE], cwd=work, capture_output=True, text=True
            )
            debs = sorted(work.glob(f"{PACKAGE}_*.deb"))
            if fetched.returncode != 0 or not debs:
                raise PrometheusUnavailable(
                    f"apt-get download {PACKAGE} failed: {fetched.stderr.strip()[-300:]}"
                )
            subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(work / "root")], check=True)
            debs[0].unlink()
            shutil.rmtree(CACHE, ignore_errors=True)
            work.rename(CACHE)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    found = find()
    if not found:
        raise PrometheusUnavailable(f"{PACKAGE} unpacked into {CACHE} has no prometheus binary")
    return found


@dataclass
class Prometheus:
    """A running server: its HTTP API on loopback."""

    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def api(self, path: str, **query: str) -> Any:
        """The ``data`` of an API answer (``status`` must be ``success``)."""
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        with urllib.request.urlopen(url, timeout=10) as response:
            answer = json.load(response)
        assert answer["status"] == "success", answer
        return answer["data"]

    def query(self, expression: str) -> dict[tuple[tuple[str, str], ...], float]:
        """An instant query: each series' labels (without ``__name__``) to its value."""
        result = self.api("query", query=expression)["result"]
        return {
            tuple(sorted((k, v) for k, v in item["metric"].items() if k != "__name__")): float(
                item["value"][1]
            )
            for item in result
        }

    def wait_for_scrape(self, job: str, timeout: float = 60) -> dict[str, Any]:
        """The job's target once its first scrape has finished (this server scrapes
        nothing made before it started); its ``health`` and ``lastError`` say how it went."""
        found: list[dict[str, Any]] = []

        def scraped() -> bool:
            found[:] = [
                target
                for target in self.api("targets", state="active")["activeTargets"]
                if target["labels"].get("job") == job and target.get("health") != "unknown"
            ]
            return bool(found)

        self.until(scraped, f"a scrape of {job}", timeout)
        return found[0]

    def until(self, condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
        """Poll ``condition()`` while the server runs. :raises AssertionError: it is not
        true in ``timeout`` seconds, or the server exited (with the end of its log)."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise AssertionError(
                    f"prometheus: no {what}; its log:\n{self.log.read_text()[-2000:]}"
                )
            time.sleep(0.1)


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def running(targets: dict[str, str], work: Path, interval: str = "1s") -> Iterator[Prometheus]:
    """Start Debian's prometheus scraping ``targets`` (job name to ``host:port``) every
    ``interval``, with its data under ``work``; stopped (by its PID) when done."""
    from support.registry import free_port

    prometheus, _ = ensure()
    work.mkdir(parents=True, exist_ok=True)
    jobs = "".join(
        f"  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']\n"
        for job, target in targets.items()
    )
    config = work / "prometheus.yml"
    config.write_text(
        f"global:\n  scrape_interval: {interval}\n  scrape_timeout: {interval}\n"
        f"scrape_configs:\n{jobs}"
    )
    port = free_port()
    log = work / "prometheus.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                str(prometheus),
                f"--config.file={config}",
                f"--storage.tsdb.path={work / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=info",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=work,
        )
    server = Prometheus(port, process, log)
    try:
        server.until(lambda: _ready(port), "readiness")
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main() -> int:
    try:
        prometheus, promtool = ensure()
    except PrometheusUnavailable as exc:
        print(f"no prometheus for the tests: {exc}", file=sys.stderr)
        return 1
    print(f"prometheus for the tests: {prometheus} and {promtool}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
