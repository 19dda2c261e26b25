"""The keys a ``runtime_type = "vm"`` handler table may carry beyond the core ones.

::

    [crio.runtime.runtimes.clear]
    runtime_type = "vm"
    accel = "auto"            # "auto" | "kvm" | "tcg"
    kernel = ""               # default: ROOT/vm-assets/vmlinux (crio vm-assets)
    initrd = ""               # default: ROOT/vm-assets/initrd.img
    memory = 512              # MiB per pod VM
    vcpus = 1
    guest_runtime = "/usr/bin/crun"   # the OCI runtime the agent uses in the guest
    qemu = "/usr/bin/qemu-system-x86_64"
    virtiofsd = "/usr/lib/qemu/virtiofsd"
    boot_timeout = 180        # seconds until the agent must be ready
    kernel_args = []          # extra guest kernel parameters
    vm_template = "auto"      # restore pod VMs from a saved template VM (template.py):
                              # "auto" where the kernel has its module tree, else boot
    template_dir = ""         # where templates are kept; default: runtime_root/templates

``runtime_path`` names the qemu binary as well (``qemu`` wins when both are set).
``runtime_config_path`` names a TOML file with the same keys at its top level
(as Kata's configuration.toml holds a VM's settings); keys in the handler
table win over the file's. A vm handler has no monitor: ``monitor_path`` and
``monitor_env`` are refused.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from crio.errors import ConfigError

__all__ = ["VMOptions", "parse_options"]


@dataclass(frozen=True, slots=True)
class VMOptions:
    accel: str = "auto"
    kernel: str = ""
    initrd: str = ""
    memory: int = 512
    vcpus: int = 1
    guest_runtime: str = "/usr/bin/crun"
    qemu: str = "/usr/bin/qemu-system-x86_64"
    virtiofsd: str = "/usr/lib/qemu/virtiofsd"
    boot_timeout: float = 180.0
    kernel_args: tuple[str, ...] = field(default_factory=tuple)
    #: "auto": a template where the kernel allows one, else boots.
    vm_template: bool | str = "auto"
    template_dir: str = ""


_ACCELS = ("auto", "kvm", "tcg")


def _path(value: Any) -> str | None:
    if isinstance(value, str) and (value == "" or value.startswith("/")):
        return None
    return f"got {value!r}, expected an absolute path"


def _check(name: str, value: Any) -> str | None:
    """Why ``value`` is wrong for key ``name``, or None."""
    if name == "accel":
        ok = value in _ACCELS
        return None if ok else f"got {value!r}, expected one of: {', '.join(_ACCELS)}"
    if name in ("kernel", "initrd", "guest_runtime", "qemu", "virtiofsd", "template_dir"):
        return _path(value)
    if name == "memory":
        ok = isinstance(value, int) and not isinstance(value, bool) and 128 <= value <= 1 << 20
        return None if ok else f"got {value!r}, expected MiB as an integer of at least 128"
    if name == "vcpus":
        ok = isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 64
        return None if ok else f"got {value!r}, expected an integer from 1 to 64"
    if name == "boot_timeout":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
        return None if ok else f"got {value!r}, expected a positive number of seconds"
    if name == "vm_template":
        ok = isinstance(value, bool) or value == "auto"
        return None if ok else f'got {value!r}, expected true, false or "auto"'
    if name == "kernel_args":
        ok = isinstance(value, list) and all(isinstance(v, str) and v for v in value)
        return None if ok else f"got {value!r}, expected a list of non-empty strings"
    return "unknown key for runtime_type 'vm'; expected one of: " + ", ".join(
        sorted(VMOptions.__dataclass_fields__)
    )


def _config_file(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError("file does not exist", file=path) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", file=path) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", file=path) from None


def parse_options(
    handler_name: str,
    options: Mapping[str, Any],
    runtime_path: str = "",
    config_path: str = "",
) -> VMOptions:
    """Validate a handler table's extra keys, over those of its ``runtime_config_path``.

    :raises ConfigError: with ``key="crio.runtime.runtimes.NAME.KEY"`` (and the
        file, for a key of the configuration file) for the first unknown key or
        bad value.
    """
    values: dict[str, Any] = {}
    if runtime_path:
        values["qemu"] = runtime_path
    sources = [(config_path, _config_file(config_path))] if config_path else []
    sources.append(("", dict(options)))
    for file, table in sources:
        for name in sorted(table):
            problem = _check(name, table[name])
            if problem:
                raise ConfigError(
                    problem, file=file or None, key=f"crio.runtime.runtimes.{handler_name}.{name}"
                )
            values[name] = tuple(table[name]) if name == "kernel_args" else table[name]
    return VMOptions(**values)
