"""What the daemon must not import before an RPC needs it (see bench/README.md, memory).

Each module here costs the daemon resident memory for as long as it runs, yet
only some RPCs use it: the registry client and signature code (PullImage),
the streaming protocols (a connection to the streaming server), the VM
runtime (a ``vm`` handler). The checks run in a fresh interpreter, since this
one has imported everything already.
"""

from __future__ import annotations

import json
import subprocess
import sys

#: Modules (or packages) that start-up must leave alone.
DEFERRED = (
    "httpx",  # docker:// transport and lookaside signatures
    "yaml",  # registries.d lookaside configs
    "gnupg",  # signedBy policies
    "zstandard",  # zstd layers
    "h11",  # streaming connections
    "wsproto",
    "pydantic",  # crio.toml is validated by crio._model
    "prometheus_client",  # only with [crio.metrics] enable_metrics
    "crio._prometheus",
    "crio.image.copy",  # the copy engine
    "fastcrc",  # tar-split's CRC-64, for layers written or read back
    "crio.storage._applier",  # the tar applier
    "crio.storage._streams",  # layer decompression and hashing
    "crio.storage.tarsplit",
    "crio.streaming._connection",
    "crio.streaming.spdy",
    "crio_plugins.transport_docker.transport",
    "crio_plugins.runtime_clear.runtime",
    "crio.server.image_pull",
    "crio.server.container_exec",
)


def _imported_after(code: str) -> set[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


def _offenders(modules: set[str]) -> list[str]:
    return sorted(m for m in modules for d in DEFERRED if m == d or m.startswith(d + "."))


def test_importing_the_daemon_loads_no_rpc_specific_module() -> None:
    assert _offenders(_imported_after("import crio.daemon, crio.cli")) == []


def test_loading_the_plugins_and_the_handler_table_loads_none_either() -> None:
    code = (
        "from crio.plugins import Plugins\n"
        "from crio.server import HANDLERS\n"
        "from crio.server.deps import Deps\n"
        "Plugins().load_entry_points()\n"
    )
    assert _offenders(_imported_after(code)) == []


def test_neither_crio_nor_kpod_imports_pydantic() -> None:
    """crio.toml is validated by crio._model: pydantic cost ~9 MB and ~150 ms a process."""
    loaded = _imported_after("import crio.daemon, crio.cli, crio.kpod.cli, crio.manpages")
    assert not {m for m in loaded if m == "pydantic" or m.startswith("pydantic")}


def test_a_lazy_handler_imports_its_module_on_first_call() -> None:
    code = (
        "from crio.server import HANDLERS\n"
        "HANDLERS['PullImage'].resolve()\n"
        "HANDLERS['Exec'].resolve()\n"
    )
    loaded = _imported_after(code)
    assert {"crio.server.image_pull", "crio.server.container_exec"} <= loaded
