"""Which accelerator a pod VM gets, and the host facts TCG needs.

``auto`` picks KVM only where ``/dev/kvm`` is a real KVM: the ``kvm_intel``
or ``kvm_amd`` module is loaded and ``kvm_pvm`` is not. A PVM (a nested,
paravirtualised KVM, as on this kind of machine) answers on /dev/kvm but
runs only PVM-aware guest kernels, so an ordinary Debian kernel must use TCG
there. Under TCG the guest gets ``-cpu max`` and ``tsc_early_khz`` set from
the host: without a known TSC frequency its early calibration under
emulation goes wrong at random and boots hang.

The parsers are pure; :func:`host_facts` is the one place that reads the host.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from crio.errors import ConfigError, UnsupportedError

__all__ = ["ACCELS", "HostFacts", "choose_accel", "host_facts", "kvm_problem", "parse_tsc_khz"]

ACCELS = ("auto", "kvm", "tcg")


@dataclass(frozen=True, slots=True)
class HostFacts:
    """What decides the accelerator."""

    kvm_device: bool
    modules: frozenset[str]
    tsc_khz: int = 0


def kvm_problem(facts: HostFacts) -> str:
    """Why KVM cannot run an ordinary guest here, or "" when it can."""
    if not facts.kvm_device:
        return "/dev/kvm is missing or not a character device"
    if "kvm_pvm" in facts.modules:
        return "/dev/kvm is a PVM (kvm_pvm), which runs only PVM-aware guest kernels"
    if not facts.modules & {"kvm_intel", "kvm_amd"}:
        return "neither kvm_intel nor kvm_amd is loaded"
    return ""


def choose_accel(requested: str, facts: HostFacts, key: str = "accel") -> str:
    """``kvm`` or ``tcg`` for a handler's ``accel`` setting.

    :raises ConfigError: ``requested`` is not one of :data:`ACCELS`.
    :raises UnsupportedError: ``kvm`` was asked for where it cannot work.
    """
    if requested not in ACCELS:
        raise ConfigError(f"got {requested!r}, expected one of: {', '.join(ACCELS)}", key=key)
    problem = kvm_problem(facts)
    if requested == "kvm" and problem:
        raise UnsupportedError(f"{key} = 'kvm', but {problem}")
    if requested == "tcg" or problem:
        return "tcg"
    return "kvm"


_MHZ = re.compile(r"^(?:cpu MHz)\s*:\s*([0-9.]+)\s*$", re.MULTILINE)
_DMESG_TSC = re.compile(r"tsc: (?:Detected|Refined TSC clocksource calibration:) ([0-9.]+) MHz")


def parse_tsc_khz(cpuinfo: str, tsc_freq_khz: str = "", dmesg: str = "") -> int:
    """The host's TSC frequency in kHz, from the best source available.

    :param cpuinfo: /proc/cpuinfo; its first ``cpu MHz`` is the last resort
        (equal to the TSC on hosts with a constant, known-frequency TSC).
    :param tsc_freq_khz: /sys/devices/system/cpu/cpu0/tsc_freq_khz, where the kernel has it.
    :param dmesg: the kernel log, whose ``tsc: Detected N MHz`` line is exact.
    """
    if tsc_freq_khz.strip().isdigit():
        return int(tsc_freq_khz.strip())
    found = _DMESG_TSC.findall(dmesg)
    if found:
        return round(float(found[-1]) * 1000)
    match = _MHZ.search(cpuinfo)
    return round(float(match.group(1)) * 1000) if match else 0


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def host_facts() -> HostFacts:
    """Read /dev/kvm, /sys/module and the TSC frequency of this host."""
    try:
        kvm_device = stat.S_ISCHR(os.stat("/dev/kvm").st_mode)
    except OSError:
        kvm_device = False
    try:
        modules = frozenset(os.listdir("/sys/module"))
    except OSError:
        modules = frozenset()
    tsc = parse_tsc_khz(_read("/proc/cpuinfo"), _read("/sys/devices/system/cpu/cpu0/tsc_freq_khz"))
    return HostFacts(kvm_device=kvm_device, modules=modules, tsc_khz=tsc)
