"""The crun check: a hybrid cgroup layout whose v2 hierarchy holds controllers is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from crio import config
from crio.errors import ConfigError
from crio_plugins.runtime_runc.cgroups import Hierarchies
from crio_plugins.runtime_runc.runtime import RuncRuntime


def _runtime(tmp_path: Path, version: str, controllers: str) -> RuncRuntime:
    cfg = config.Config()
    handler = config.RuntimeHandler(runtime_path="/usr/bin/crun", runtime_root=str(tmp_path / "r"))
    runtime = RuncRuntime.from_config("crun", handler, cfg)
    unified = tmp_path / "unified"
    unified.mkdir(exist_ok=True)
    (unified / "cgroup.controllers").write_text(controllers)
    runtime.hierarchies = Hierarchies({"memory": str(tmp_path / "memory")}, str(unified))
    runtime.version = version
    return runtime


def test_crun_on_a_hybrid_layout_with_v2_controllers_is_not_ready(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path, "crun version 1.8.1", "hugetlb\n")
    problem = runtime._check_layout()
    assert "hugetlb" in problem and "hack/prepare-host.sh" in problem
    runtime._layout_problem = problem
    ready, reason, message = runtime.ready()
    if ready is False and reason == "RuntimeBinaryMissing":
        return  # no crun on this machine: the binary check comes first
    assert (ready, reason) == (False, "CgroupLayoutUnsupported")
    assert "cgroup v2 hierarchy" in message


def test_an_empty_v2_hierarchy_or_runc_is_fine(tmp_path: Path) -> None:
    assert _runtime(tmp_path, "crun version 1.8.1", "")._check_layout() == ""
    assert _runtime(tmp_path, "runc version 1.1.5", "hugetlb\n")._check_layout() == ""


def test_runtime_config_path_is_refused_for_runc_and_crun(tmp_path: Path) -> None:
    handler = config.RuntimeHandler(
        runtime_path="/usr/bin/crun", runtime_config_path=str(tmp_path / "x.conf")
    )
    with pytest.raises(ConfigError) as caught:
        RuncRuntime.from_config("crun", handler, config.Config())
    assert caught.value.key == "crio.runtime.runtimes.crun.runtime_config_path"
    assert "takes no configuration file" in str(caught.value)


def test_ctr_stop_timeout_reaches_the_runtime() -> None:
    cfg = config.Config()
    cfg.crio.runtime.ctr_stop_timeout = 7
    handler = config.RuntimeHandler(runtime_path="/usr/bin/runc")
    assert RuncRuntime.from_config("runc", handler, cfg).stop_timeout == 7.0
