"""The graph-driver contract suite: every case runs against every driver chosen.

Drivers come from ``--driver NAME`` (repeatable), else ``CRIO_CONTRACT_DRIVERS``
(comma-separated), else every built-in driver (those the host cannot run
skip with the reason). ``--driver-option`` adds a ``storage_option`` entry and
``--driver-root DIR`` makes the stores under DIR (the file system a vendor's
driver needs). See ``tests/contract/README.md``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from crio.storage import Store
from support.contract import BUILTIN_DRIVERS, DriverEnv, driver_env, unmount_under

KPOD = str(Path(sys.executable).with_name("kpod"))


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("crio graph-driver contract")
    group.addoption("--driver", action="append", default=[], help="driver to test (repeatable)")
    group.addoption(
        "--driver-option", action="append", default=[], help="storage_option entry (repeatable)"
    )
    group.addoption("--driver-root", default=None, help="make the stores under this directory")


def _option(config: pytest.Config, name: str, default: object) -> object:
    # pytest knows these options only when this conftest was loaded at start-up
    # (``pytest tests/contract``); a whole-suite run falls back to the environment.
    try:
        return config.getoption(name) or default
    except ValueError:
        return default


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "env" not in metafunc.fixturenames:
        return
    names = _option(metafunc.config, "driver", None)
    if not names:
        listed = os.environ.get("CRIO_CONTRACT_DRIVERS", "")
        names = [n.strip() for n in listed.split(",") if n.strip()] or list(BUILTIN_DRIVERS)
    metafunc.parametrize("env", names, indirect=True, scope="session")


@pytest.fixture(scope="session")
def env(request: pytest.FixtureRequest) -> Iterator[DriverEnv]:
    if os.geteuid() != 0:
        pytest.skip("the driver contract needs root (mounts, subvolumes, device-mapper)")
    root = _option(request.config, "driver_root", os.environ.get("CRIO_CONTRACT_ROOT"))
    extra = _option(request.config, "driver_option", None)
    if not extra:
        extra = [o for o in os.environ.get("CRIO_CONTRACT_OPTIONS", "").split(",") if o]
    with driver_env(request.param, Path(root) if root else None, extra) as made:  # type: ignore[arg-type]
        yield made


class Contract:
    """One test's store directories and the ways to reach them."""

    def __init__(self, env: DriverEnv) -> None:
        self.env = env
        self.root, self.runroot = env.new_dirs()
        self.top = self.root.parent

    @property
    def driver(self) -> str:
        return self.env.name

    async def open(self) -> Store:
        return await Store.open(self.root, self.runroot, self.driver, self.env.options)

    def kpod(self, *args: str) -> list[str]:
        conf = self.top / "crio.conf"
        confd = self.top / "crio.conf.d"
        confd.mkdir(parents=True, exist_ok=True)
        conf.touch()
        argv = [KPOD, "--config", str(conf), "--config-dir", str(confd)]
        argv += ["--root", str(self.root), "--runroot", str(self.runroot)]
        argv += ["--storage-driver", self.driver]
        for option in self.env.options:
            argv += ["--storage-opt", option]
        return [*argv, *args]

    def run_kpod(self, *args: str, data: bytes | None = None) -> str:
        done = subprocess.run(self.kpod(*args), input=data, capture_output=True, check=False)
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        return done.stdout.decode()

    async def empty(self) -> None:
        """Remove what the test left, through the driver itself."""
        store = await self.open()
        try:
            for container in await store.containers():
                await store.delete_container(container.id)
            for image in await store.images():
                await store.delete_image(image.id, force=True)
            for layer in reversed(await store.layers()):
                await store.delete_layer(layer.id)
            for layer_id in await store.driver.layers():
                await store.driver.remove(layer_id)
            assert list(await store.driver.layers()) == []
        finally:
            await store.close()


@pytest.fixture
def contract(env: DriverEnv) -> Iterator[Contract]:
    if env.skip:
        pytest.skip(f"storage driver {env.name}: {env.skip}")
    made = Contract(env)
    try:
        yield made
    finally:
        try:
            if made.root.exists():
                asyncio.run(made.empty())
        finally:
            unmount_under(made.top)
            shutil.rmtree(made.top, ignore_errors=True)
