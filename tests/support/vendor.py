"""Build a small third-party plugin distribution on disk, as pip would install it.

The distribution ``crio-demo-vendor`` 1.2.3 provides runtime_type ``demo``
through the ``crio.plugins`` entry-point group; its runtime reports
RuntimeReady false with reason ``DemoRuntimeNotReady`` so that a test can
tell through CRI that crio is using it.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DEMO_REASON", "write_vendor_distribution"]

DEMO_REASON = "DemoRuntimeNotReady"

_PLUGIN = """
from crio.plugins import hookimpl


class DemoRuntime:
    def __init__(self, name):
        self.name = name
        self.started = False

    async def start(self):
        self.started = True

    async def close(self):
        pass

    def ready(self):
        return False, "DemoRuntimeNotReady", f"demo runtime {self.name} says hello"


@hookimpl
def crio_runtime(handler_name, handler):
    if handler.runtime_type == "demo":
        return DemoRuntime(handler_name)
    return None
"""


def write_vendor_distribution(site: Path, *, broken: bool = False) -> Path:
    """Write the package and its dist-info into ``site`` (a sys.path entry).

    The broken variant uses another module name, so that a module imported by
    an earlier test in the same process cannot hide the failure.
    """
    module = "crio_demo_vendor_broken" if broken else "crio_demo_vendor"
    package = site / module
    package.mkdir(parents=True)
    body = "raise ImportError('demo vendor plugin is broken on purpose')\n" if broken else _PLUGIN
    (package / "__init__.py").write_text(body)
    info = site / "crio_demo_vendor-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: crio-demo-vendor\nVersion: 1.2.3\n"
    )
    (info / "entry_points.txt").write_text(f"[crio.plugins]\ndemo = {module}\n")
    (info / "RECORD").write_text("")
    return site
