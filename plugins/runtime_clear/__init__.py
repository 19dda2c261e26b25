"""runtime_clear: runtime_type ``vm``, one lightweight VM per pod (after Clear Containers).

Each pod is a qemu ``microvm`` running a Debian cloud kernel, with the host's
root shared read-only over virtiofs (the guest runs the host's python3 and
crun/runc), a writable share for the pod's bundles, and an agent as PID 1
speaking JSON lines over a virtio serial port. See :mod:`.vm` for the
harness, :mod:`.assets` for ``crio vm-assets``, :mod:`.agent` for the guest.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crio.errors import ConfigError
from crio.plugins import hookimpl
from crio_plugins.runtime_clear.options import VMOptions, parse_options

if TYPE_CHECKING:
    from crio.cli import Commands
    from crio.config import Config, RuntimeHandler
    from crio_plugins.runtime_clear.runtime import ClearRuntime

__all__ = ["ClearRuntime", "VMOptions", "crio_add_commands", "crio_runtime"]


@hookimpl(trylast=True)
def crio_runtime(handler_name: str, handler: RuntimeHandler, config: Config) -> ClearRuntime | None:
    if handler.runtime_type != "vm":
        return None
    if config.crio.runtime.no_pivot:
        raise ConfigError(
            f"runtime handler {handler_name} (runtime_type 'vm') does not pass it to the "
            "runtime in the pod VM; set it false, or drop the vm handler",
            key="crio.runtime.no_pivot",
        )
    runtime = config.crio.runtime
    if runtime.cgroup_manager == "systemd":
        # The VM's qemu, virtiofsd and supervisor are placed in cgroupfs paths; under
        # the systemd manager they would live outside any unit crio asked systemd for.
        raise ConfigError(
            f"runtime handler {handler_name} (runtime_type 'vm') places its pod VMs by "
            "cgroupfs paths only; use cgroup_manager = 'cgroupfs', or drop the vm handler",
            key="crio.runtime.cgroup_manager",
        )
    if runtime.log_to_journald:
        raise ConfigError(
            f"runtime handler {handler_name} (runtime_type 'vm') writes container output to "
            "the CRI log file only; set it false, or drop the vm handler",
            key="crio.runtime.log_to_journald",
        )
    if handler.allowed_annotations:
        raise ConfigError(
            "runtime_type 'vm' honours none of these annotations (a pod VM has its own "
            "/dev/shm, and host devices do not exist in it)",
            key=f"crio.runtime.runtimes.{handler_name}.allowed_annotations",
        )
    for key in ("monitor_path", "monitor_env"):
        if getattr(handler, key):
            raise ConfigError(
                "runtime_type 'vm' has no monitor (the VM's agent keeps the containers)",
                key=f"crio.runtime.runtimes.{handler_name}.{key}",
            )
    options = parse_options(
        handler_name, handler.options, handler.runtime_path, handler.runtime_config_path
    )
    # The VM runtime (qemu harness, agent client) loads only on nodes with a vm handler.
    from crio_plugins.runtime_clear.runtime import ClearRuntime

    return ClearRuntime(handler_name, handler, options, config)


def __getattr__(name: str) -> Any:
    if name == "ClearRuntime":
        from crio_plugins.runtime_clear.runtime import ClearRuntime

        return ClearRuntime
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _vm_assets_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dir", help="where to store them (default: ROOT/vm-assets under crio's root)"
    )
    parser.add_argument("--package", help="a linux-image-* package (default: apt's cloud kernel)")
    parser.add_argument("--deb", help="use this downloaded kernel .deb instead of apt-get download")
    parser.add_argument("--force", action="store_true", help="rebuild even if current")
    parser.add_argument("--verify", action="store_true", help="also check the stored sha256 sums")


def _vm_assets(args: argparse.Namespace, config: Config) -> int:
    from crio_plugins.runtime_clear import assets

    directory = Path(args.dir) if args.dir else assets.assets_dir(config.crio.root)
    stored = assets.ensure(
        directory,
        package=args.package,
        deb=Path(args.deb) if args.deb else None,
        force=args.force,
        say=lambda line: print(line, flush=True),
    )
    if args.verify:
        assets.verify(stored)
    print(f"kernel  {stored.kernel}  {stored.sha256.get('vmlinux', '')}")
    print(f"initrd  {stored.initrd}  {stored.sha256.get('initrd.img', '')}")
    print(f"release {stored.kernel_release} ({stored.kernel_package} {stored.kernel_version})")
    return 0


@hookimpl
def crio_add_commands(commands: Commands) -> None:
    commands.add(
        "vm-assets",
        help="fetch the pod VM kernel and build its initramfs (runtime_type 'vm')",
        run=_vm_assets,
        arguments=_vm_assets_arguments,
    )
