"""The qemu command line of a pod VM (pure: settings in, argv out).

A ``microvm`` machine: no PCI, no firmware, virtio over MMIO (modern, not
legacy: vhost-user-fs refuses legacy devices), the ELF kernel booted through
its PVH entry, memory from a shared memfd (vhost-user needs it), the serial
console into a file, the agent on a virtio serial port named ``crio.agent``
behind a unix socket, and the two virtiofs shares (tags ``root`` and
``share``). Network devices are added by the supervisor, which knows the
pod's interfaces.

:func:`template_argv` is the machine a template is saved from and every pod
VM restored from it (see :mod:`.template`): the same, but with no virtio-fs
device (vhost-user-fs cannot be migrated in qemu 7.2) and no NIC, but PCIe
root ports for them to be hot-plugged into after the restore, memory from a
file (the template's, or the pod's copy of it), the agent on a fixed
transport, and a QMP monitor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "AGENT_TRANSPORT",
    "HOTPLUG_PORTS",
    "NIC_PORTS",
    "QemuSettings",
    "hotplug_commands",
    "kernel_cmdline",
    "qemu_argv",
    "template_argv",
    "template_cmdline",
]

#: The virtio-mmio transport of a template machine's agent port.
AGENT_TRANSPORT = 23
#: PCIe root ports of a template machine: virtio-fs tag -> port.
HOTPLUG_PORTS = {"root": "crio-rp0", "share": "crio-rp1"}
#: PCIe root ports for a restored VM's NICs (a pod with more interfaces boots).
NIC_PORTS = tuple(f"crio-rpn{n}" for n in range(4))


@dataclass(frozen=True, slots=True)
class QemuSettings:
    qemu: str
    kernel: Path
    initrd: Path
    run_dir: Path
    accel: str  # "kvm" or "tcg"
    memory_mib: int = 512
    vcpus: int = 1
    tsc_khz: int = 0
    agent_path: str = ""  # the agent in the guest
    guest_python: str = "/usr/bin/python3"
    kernel_args: Sequence[str] = field(default_factory=tuple)


def kernel_cmdline(settings: QemuSettings) -> str:
    args = [
        "console=ttyS0",
        "panic=-1",  # reboot at once; qemu runs with -no-reboot, so it exits
        "quiet",
        "random.trust_cpu=on",
        f"crio.agent={settings.agent_path}",
        f"crio.python={settings.guest_python}",
    ]
    if settings.accel == "tcg" and settings.tsc_khz:
        args.append(f"tsc_early_khz={settings.tsc_khz}")
    args.extend(settings.kernel_args)
    return " ".join(args)


def qemu_argv(settings: QemuSettings) -> list[str]:
    run = settings.run_dir
    machine = f"microvm,accel={settings.accel},acpi=on,rtc=on,memory-backend=mem"
    cpu = "host" if settings.accel == "kvm" else "max"
    memory = f"{settings.memory_mib}M"
    return [
        settings.qemu,
        "-name", run.name,
        "-M", machine,
        "-cpu", cpu,
        "-smp", str(settings.vcpus),
        "-m", memory,
        "-object", f"memory-backend-memfd,id=mem,size={memory},share=on",
        "-global", "virtio-mmio.force-legacy=false",
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-kernel", str(settings.kernel),
        "-initrd", str(settings.initrd),
        "-append", kernel_cmdline(settings),
        "-chardev", f"file,id=console,path={run / 'console.log'}",
        "-serial", "chardev:console",
        "-chardev", f"socket,id=agent,path={run / 'agent.sock'},server=on,wait=off",
        "-device", "virtio-serial-device",
        "-device", "virtserialport,chardev=agent,name=crio.agent",
        "-chardev", f"socket,id=fs-root,path={run / 'fs-root.sock'}",
        "-device", "vhost-user-fs-device,chardev=fs-root,tag=root",
        "-chardev", f"socket,id=fs-share,path={run / 'fs-share.sock'}",
        "-device", "vhost-user-fs-device,chardev=fs-share,tag=share",
    ]  # fmt: skip


def template_cmdline(settings: QemuSettings) -> str:
    """A template guest's kernel command line; its agent comes from the initramfs."""
    args = [
        "console=ttyS0",
        "panic=-1",
        "quiet",
        "random.trust_cpu=on",
        # microvm's DSDT grants no PCIe hot-plug control to the OS: take it.
        "pcie_ports=native",
    ]
    if settings.accel == "tcg" and settings.tsc_khz:
        args.append(f"tsc_early_khz={settings.tsc_khz}")
    args.extend(settings.kernel_args)
    return " ".join(args)


def template_argv(settings: QemuSettings, memory_path: str, incoming: bool = False) -> list[str]:
    """The template machine: saved with ``incoming=False``, restored with True.

    :param memory_path: the RAM's backing file (shared, so that ``x-ignore-shared``
        leaves it out of the saved state, and vhost-user can map it).
    """
    run = settings.run_dir
    machine = f"microvm,accel={settings.accel},acpi=on,rtc=on,pcie=on,memory-backend=mem"
    memory = f"{settings.memory_mib}M"
    argv = [
        settings.qemu,
        "-name", run.name,
        "-M", machine,
        "-cpu", "host" if settings.accel == "kvm" else "max",
        "-smp", str(settings.vcpus),
        "-m", memory,
        "-object", f"memory-backend-file,id=mem,size={memory},mem-path={memory_path},share=on",
        "-global", "virtio-mmio.force-legacy=false",
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-chardev", f"file,id=console,path={run / 'console.log'}",
        "-serial", "chardev:console",
        "-chardev", f"socket,id=agent,path={run / 'agent.sock'},server=on,wait=off",
        "-device", f"virtio-serial-device,bus=virtio-mmio-bus.{AGENT_TRANSPORT}",
        "-device", "virtserialport,chardev=agent,name=crio.agent",
        "-qmp", f"unix:{run / 'qmp.sock'},server=on,wait=off",
    ]  # fmt: skip
    for chassis, port in enumerate((*HOTPLUG_PORTS.values(), *NIC_PORTS), start=1):
        argv += ["-device", f"pcie-root-port,id={port},bus=pcie.0,chassis={chassis}"]
    if not incoming:
        # A restored VM needs no kernel: its RAM holds the running one (and qemu
        # writes no ROM into RAM while a migration comes in).
        argv += ["-kernel", str(settings.kernel), "-initrd", str(settings.initrd)]
        argv += ["-append", template_cmdline(settings)]
    else:
        argv += ["-incoming", "defer"]
    return argv


def hotplug_commands(run_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    """The QMP commands that give a restored VM its virtio-fs shares (after the restore).

    The chardevs too: qemu connects a socket chardev when it is made, and the
    virtiofsd may still be starting when qemu does.
    """
    commands: list[tuple[str, dict[str, Any]]] = []
    for tag, port in HOTPLUG_PORTS.items():
        chardev = f"fs-{tag}"
        address = {"type": "unix", "data": {"path": str(run_dir / f"{chardev}.sock")}}
        backend = {"type": "socket", "data": {"addr": address, "server": False}}
        commands.append(("chardev-add", {"id": chardev, "backend": backend}))
        device = {"driver": "vhost-user-fs-pci", "id": chardev, "chardev": chardev}
        commands.append(("device_add", {**device, "tag": tag, "bus": port}))
    return commands
