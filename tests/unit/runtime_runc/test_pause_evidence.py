"""The pause process's evidence and checks that need no root: mountinfo, ELF, the option."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from crio import config
from crio.errors import ConfigError
from crio_plugins.runtime_runc import pause
from crio_plugins.runtime_runc.runtime import RuncRuntime

PIN = "/run/crio/ns/pidns/" + "ab" * 32


def test_the_root_tmpfs_source_is_read_from_mountinfo() -> None:
    pause_ns = f"6392 5988 0:1317 / / ro,nosuid,nodev,noexec,relatime - tmpfs crio-pause:{PIN} ro\n"
    assert pause.mountinfo_root_source(pause_ns) == f"crio-pause:{PIN}"
    # A host's root is no tmpfs; a tmpfs elsewhere is not the root.
    host = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
    assert pause.mountinfo_root_source(host) == ""
    other = f"30 22 0:50 / /run rw shared:5 - tmpfs crio-pause:{PIN} rw\n"
    assert pause.mountinfo_root_source(host + other) == ""


def test_optional_fields_and_escapes_in_mountinfo() -> None:
    line = "7 1 0:9 / / ro shared:3 master:2 - tmpfs crio-pause:/run/my\\040crio/pidns/x ro\n"
    assert pause.mountinfo_root_source(line) == "crio-pause:/run/my crio/pidns/x"


def test_only_static_executables_can_be_pause_binaries(tmp_path: Path) -> None:
    assert not pause.is_static_executable(sys.executable)  # dynamically linked: PT_INTERP
    script = tmp_path / "pause"
    script.write_text("#!/bin/sh\nsleep 1\n")
    script.chmod(0o755)
    assert not pause.is_static_executable(str(script))
    assert not pause.is_static_executable(str(tmp_path / "missing"))
    catatonit = shutil.which("catatonit")
    if catatonit and Path(catatonit).resolve() == Path("/usr/bin/catatonit"):
        assert pause.is_static_executable(catatonit)  # Debian's is static


def test_pause_binary_is_the_one_key_of_its_own_an_oci_handler_takes() -> None:
    handler = config.RuntimeHandler(runtime_path="/usr/bin/runc", pause_binary="/opt/catatonit")  # type: ignore[call-arg]
    assert (
        RuncRuntime.from_config("runc", handler, config.Config()).pause_binary == "/opt/catatonit"
    )
    for bad in ("catatonit", 3):
        handler = config.RuntimeHandler(runtime_path="/usr/bin/runc", pause_binary=bad)  # type: ignore[call-arg]
        with pytest.raises(ConfigError) as caught:
            RuncRuntime.from_config("runc", handler, config.Config())
        assert caught.value.key == "crio.runtime.runtimes.runc.pause_binary"
    handler = config.RuntimeHandler(runtime_path="/usr/bin/runc", pause_bin="/x")  # type: ignore[call-arg]
    with pytest.raises(ConfigError) as caught:
        RuncRuntime.from_config("runc", handler, config.Config())
    assert caught.value.key == "crio.runtime.runtimes.runc.pause_bin"


def test_a_pause_binary_that_is_not_static_is_refused_at_start(tmp_path: Path) -> None:
    handler = config.RuntimeHandler(runtime_path="/usr/bin/runc", pause_binary=sys.executable)  # type: ignore[call-arg]
    runtime = RuncRuntime.from_config("runc", handler, config.Config())
    with pytest.raises(ConfigError) as caught:
        runtime._pause_binary()
    assert caught.value.key == "crio.runtime.runtimes.runc.pause_binary"
    assert "statically linked" in str(caught.value)
    runtime.pause_binary = "none"
    assert runtime._pause_binary() == ""  # infra containers
