"""Pod VM templates: one VM booted and saved per handler, every pod VM restored from it.

After Kata's VM templating: a template VM boots the pod kernel with its RAM
in a shared file, runs the agent until it is ready, and is saved with
qemu's ``x-ignore-shared`` migration capability, so the saved state is only
the devices (~100 KiB) and the RAM stays in its file. A pod VM starts as a
copy of that RAM (the data extents of the sparse file) and an incoming
migration of the device state: no kernel boot, no agent start.

What qemu 7.2 (Debian 12) cannot carry across a migration is added after
it: vhost-user-fs refuses to be migrated, so the template has no virtio-fs
device and no NIC, only empty PCIe root ports, and the supervisor
hot-plugs the pod's two shares and its NICs once the state is in (see
``supervisor.py``; a virtio-mmio NIC present during the incoming migration
but bound only afterwards lost the frames sent to it). The guest
then takes the pod's identity (clock, entropy, machine-id, hostname: see
``_guest_restore.py``).

Templates live in the handler's ``template_dir`` (default
``VM_ROOT/templates``, in the handler's run directory), one directory per
key (see :mod:`._template_store`). The key hashes everything the saved state
depends on: the kernel, the template's initramfs (base initramfs, agent, the
python it carries, modules), the qemu binary and the
machine's settings; another key means another template, and the old one is
removed once no crio uses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crio.errors import CrioError, OCIRuntimeError, UnsupportedError
from crio_plugins.runtime_clear import _initramfs
from crio_plugins.runtime_clear import _template_store as _store
from crio_plugins.runtime_clear._modules import ModuleError, load_order
from crio_plugins.runtime_clear._qmp import QMP, QMPError
from crio_plugins.runtime_clear._template_files import collect_python
from crio_plugins.runtime_clear.accel import host_facts
from crio_plugins.runtime_clear.assets import AssetsError, sha256_file
from crio_plugins.runtime_clear.client import AgentClient
from crio_plugins.runtime_clear.options import VMOptions
from crio_plugins.runtime_clear.qemu import (
    QemuSettings,
    template_argv,
    template_cmdline,
)

__all__ = [
    "Template",
    "TemplateSlot",
    "TemplateSpec",
    "build",
    "handler_slot",
    "handler_template",
    "prepare",
    "template_problem",
    "templates_wanted",
]

log = logging.getLogger("crio.runtime_clear")

#: Bumped when what a template is made of changes shape.
LAYOUT = 1
HERE = Path(__file__).resolve().parent
#: The event a template's agent sent last before it was saved (``ready``).
READY_SEQ = 1


@dataclass(frozen=True, slots=True)
class TemplateSpec:
    """What a handler's template is made of."""

    kernel: Path
    initrd: Path  # the pod VMs' initramfs, which the template's extends
    modules_dir: Path  # the kernel's module tree with modules.json (crio vm-assets)
    accel: str
    memory_mib: int = 512
    vcpus: int = 1
    qemu: str = "/usr/bin/qemu-system-x86_64"
    guest_python: str = "/usr/bin/python3"
    kernel_args: tuple[str, ...] = ()
    tsc_khz: int = 0

    def settings(self, run_dir: Path, initrd: Path) -> QemuSettings:
        return QemuSettings(
            qemu=self.qemu,
            kernel=self.kernel,
            initrd=initrd,
            run_dir=run_dir,
            accel=self.accel,
            memory_mib=self.memory_mib,
            vcpus=self.vcpus,
            tsc_khz=self.tsc_khz,
            guest_python=self.guest_python,
            kernel_args=self.kernel_args,
        )


@dataclass(frozen=True, slots=True)
class Template:
    """A saved template VM."""

    directory: Path
    key: str
    spec: TemplateSpec
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def memory(self) -> Path:
        return self.directory / "memory"

    @property
    def state(self) -> Path:
        return self.directory / "state"

    @property
    def initrd(self) -> Path:
        return self.directory / "initrd.img"

    def argv(self, run_dir: Path, memory_path: str) -> list[str]:
        """qemu's command line for a pod VM restored from this template into ``run_dir``."""
        return template_argv(self.spec.settings(run_dir, self.initrd), memory_path, incoming=True)


# -- what a template is made of ----------------------------------------------------------


def _modules_of(kernel: Path) -> Path:
    """The module tree ``crio vm-assets`` stores next to the kernel."""
    return kernel.parent / "modules"


def template_problem(kernel: Path) -> str:
    """Why a handler with this kernel cannot have a template, or ""."""
    modules = _modules_of(kernel)
    if not (modules / "modules.json").is_file():
        return f"vm_template needs the kernel's module tree (crio vm-assets) in {modules}"
    return ""


def templates_wanted(option: bool | str, kernel: Path | None, handler_name: str) -> bool:
    """``vm_template = true`` (refused by the handler's check where impossible), or
    ``"auto"`` and possible with this kernel."""
    if option != "auto" or kernel is None:
        return option is True
    problem = template_problem(kernel)
    if problem:
        log.info("runtime handler %s: pod VMs boot: %s", handler_name, problem)
    return not problem


def handler_slot(
    handler_name: str,
    vm_root: Path,
    kernel: Path | None,
    initrd: Path | None,
    accel: str,
    options: VMOptions,
    kernel_args: tuple[str, ...] = (),
) -> TemplateSlot | None:
    """The started template slot of a handler that wants one (else None: its VMs boot).

    :param kernel_args: the guest kernel's arguments, as a booted VM gets them.
    """
    if kernel is None or initrd is None:
        return None
    if not templates_wanted(options.vm_template, kernel, handler_name):
        return None
    where = Path(options.template_dir or vm_root / "templates")
    spec = handler_template(kernel, initrd, accel, options, kernel_args or options.kernel_args)
    slot = TemplateSlot(where, spec, options.boot_timeout)
    slot.start()
    return slot


def handler_template(
    kernel: Path,
    initrd: Path,
    accel: str,
    options: VMOptions,
    kernel_args: tuple[str, ...] | None = None,
) -> TemplateSpec:
    """What the template of a handler with these options is made of."""
    return TemplateSpec(
        kernel=kernel,
        initrd=initrd,
        modules_dir=_modules_of(kernel),
        accel=accel,
        memory_mib=options.memory,
        vcpus=options.vcpus,
        qemu=options.qemu,
        kernel_args=options.kernel_args if kernel_args is None else kernel_args,
        tsc_khz=host_facts().tsc_khz,
    )


def _release_dir(modules_dir: Path) -> Path:
    releases = [p for p in modules_dir.iterdir() if p.is_dir()]
    if len(releases) != 1:
        raise AssetsError(f"{modules_dir} holds {len(releases)} kernel releases, expected one")
    return releases[0]


def _extra_modules(modules_dir: Path) -> list[tuple[str, bytes]]:
    """The template's modules beyond the pod VM's, in load order, with their contents."""
    try:
        index = json.loads((modules_dir / "modules.json").read_text())
    except (OSError, ValueError) as exc:
        raise AssetsError(f"{modules_dir}/modules.json: {exc}") from exc
    depends = {name: entry["depends"] for name, entry in index.items()}
    try:
        loaded = set(load_order(_initramfs.BOOT_MODULES, depends))
        wanted = load_order(_initramfs.TEMPLATE_MODULES, depends)
    except ModuleError as exc:
        raise AssetsError(f"{modules_dir}: {exc}") from exc
    release = _release_dir(modules_dir)
    return [
        (name, (release / index[name]["path"]).read_bytes())
        for name in wanted
        if name not in loaded
    ]


def prepare(spec: TemplateSpec) -> tuple[str, bytes]:
    """The template's key and initramfs (blocking: reads and hashes ~90 MB).

    :raises AssetsError: a part is missing or the guest python cannot run the agent.
    """
    from crio_plugins.runtime_clear.vm import AGENT_FILES  # vm.py imports this module

    python, python_files = collect_python(spec.guest_python, HERE)
    agent = [(name, (HERE / name).read_bytes()) for name in AGENT_FILES]
    initramfs = _initramfs.build_template_initramfs(
        spec.initrd.read_bytes(),
        _extra_modules(spec.modules_dir),
        python,
        python_files,
        agent,
    )
    settings = spec.settings(Path("/"), spec.initrd)
    inputs = {
        "layout": LAYOUT,
        "kernel": sha256_file(spec.kernel),
        "initramfs": hashlib.sha256(initramfs).hexdigest(),
        "qemu": sha256_file(Path(spec.qemu)),
        "accel": spec.accel,
        "memory_mib": spec.memory_mib,
        "vcpus": spec.vcpus,
        "cmdline": template_cmdline(settings),
    }
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
    return key, initramfs


# -- on disk ---------------------------------------------------------------------------

TEMPLATE_FILES = ("initrd.img", "memory", "state")


def load(root: Path, key: str, spec: TemplateSpec) -> Template | None:
    """The complete template of ``key`` in ``root``, or None (blocking)."""
    found = _store.facts(root, key, TEMPLATE_FILES)
    return None if found is None else Template(_store.directory(root, key), key, spec, found)


# -- building --------------------------------------------------------------------------


def _save(work: Path, timeout: float) -> dict[str, Any]:
    """Stop the template VM, save its devices next to its RAM file, and quit qemu."""
    qmp = QMP(str(work / "qmp.sock"), timeout=timeout)
    try:
        qmp.execute(
            "migrate-set-capabilities",
            capabilities=[{"capability": "x-ignore-shared", "state": True}],
        )
        qmp.execute("stop")
        qmp.execute("migrate", uri="exec:cat > " + shlex.quote(str(work / "state")))
        info = qmp.wait_migration(timeout)
        with contextlib.suppress(QMPError):  # qemu may close the monitor before answering
            qmp.execute("quit")
    finally:
        qmp.close()
    return {"saved_bytes": info.get("ram", {}).get("transferred", 0)}


async def build(
    spec: TemplateSpec, root: Path, key: str, initramfs: bytes, timeout: float = 300.0
) -> Template:
    """Boot the template VM, wait for its agent, save it as ``root``'s template of ``key``.

    Call while holding the key's build lock. qemu runs as crio's child with a
    parent-death signal: a crio killed meanwhile takes it along, and the next
    build of the key removes what it left.

    :raises OCIRuntimeError: the VM did not get ready or could not be saved.
    """
    work = await asyncio.to_thread(_store.build_dir, root, key)
    await asyncio.to_thread((work / "initrd.img").write_bytes, initramfs)
    argv = template_argv(spec.settings(work, work / "initrd.img"), str(work / "memory"))
    started = time.monotonic()
    with open(work / "qemu.log", "ab") as out:
        proc = await asyncio.create_subprocess_exec(
            "setpriv", "--pdeathsig", "SIGKILL", "--", *argv,
            stdin=subprocess.DEVNULL, stdout=out, stderr=out,
        )  # fmt: skip
    try:
        ready = await asyncio.wait_for(_ready(work, proc), timeout)
        boot = time.monotonic() - started
        saved = await asyncio.to_thread(_save, work, timeout)
        await asyncio.wait_for(proc.wait(), timeout)
    except BaseException as exc:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        why = _tail(work / "console.log") or _tail(work / "qemu.log")
        await asyncio.to_thread(shutil.rmtree, work, True)
        if isinstance(exc, (CrioError, QMPError, TimeoutError, OSError)):
            raise OCIRuntimeError(f"VM template in {root}: {exc or 'timed out'}; {why}") from exc
        raise
    facts = {
        "key": key,
        "built_at": time.time_ns(),
        "boot_seconds": round(boot, 3),
        "guest_uptime": ready.get("uptime"),
        "kernel": ready.get("kernel"),
        **saved,
    }
    directory = await asyncio.to_thread(_store.install, work, root, key, facts)
    log.info("VM template %s saved in %.1fs (guest ready at %ss uptime)",
             key[:12], boot, facts["guest_uptime"])  # fmt: skip
    return Template(directory, key, spec, facts)


async def _ready(work: Path, proc: asyncio.subprocess.Process) -> dict[str, Any]:
    agent = await AgentClient.connect(
        work / "agent.sock", "template", alive=lambda: proc.returncode is None
    )
    try:
        ready = await agent.ready
    finally:
        await agent.close()
    if not ready.get("template"):
        raise UnsupportedError("the template's agent did not start in template mode")
    return ready


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:] if line.strip())


class TemplateSlot:
    """One handler's template: looked for at start, built by the first pod that needs it.

    A pod start that comes while the template is being built waits for it:
    the build is a boot plus a save, so waiting is never slower than a boot
    started then. A failed build, or a restore that failed, leaves the slot
    empty (pods boot) until crio starts again; the log says why. The slot
    marks its key as in use for crio's life (see :mod:`._template_store`).
    """

    def __init__(self, root: Path, spec: TemplateSpec, timeout: float) -> None:
        self.root = root
        self.spec = spec
        self.timeout = timeout
        self.key = ""
        self.template: Template | None = None
        self.problem = ""
        self._use = -1
        self._found: asyncio.Task[None] | None = None
        self._built: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._found = asyncio.create_task(self._find(), name=f"vm-template-find-{self.root}")

    async def _find(self) -> None:
        try:
            key, _ = await asyncio.to_thread(prepare, self.spec)
            self._use = await asyncio.to_thread(_store.use, self.root, key)
            self.key = key
            for line in await asyncio.to_thread(_store.clean, self.root, key):
                log.info("removed %s: no crio uses it", line)
            for line in await asyncio.to_thread(_store.clean_builds, self.root, key):
                log.info("removed %s: its builder is gone", line)
            self.template = await asyncio.to_thread(load, self.root, key, self.spec)
        except (CrioError, OSError) as exc:
            self._fail(f"cannot prepare it: {exc}")
            return
        if self.template is not None:
            log.info("VM template %s found in %s", key[:12], self.template.directory)

    async def _build(self) -> None:
        lock = -1
        try:
            lock = await asyncio.to_thread(_store.lock_build, self.root, self.key)
            # Another crio may have built it while we waited for the lock.
            found = await asyncio.to_thread(load, self.root, self.key, self.spec)
            if found is None:
                key, initramfs = await asyncio.to_thread(prepare, self.spec)
                if key != self.key:
                    raise OCIRuntimeError("its inputs changed since crio started")
                log.info("building VM template %s in %s", key[:12], self.root)
                found = await build(self.spec, self.root, key, initramfs, self.timeout)
            self.template = found
        except (CrioError, OSError) as exc:
            self._fail(str(exc))
        finally:
            if lock >= 0:
                os.close(lock)

    def _fail(self, why: str) -> None:
        self.problem = why
        self.template = None
        log.error("VM template in %s: %s; pod VMs boot instead", self.root, why)

    async def get(self) -> Template | None:
        """The template, built now if need be; None when pods must boot."""
        if self._found is None:
            return None
        await asyncio.shield(self._found)
        if self.template is not None or self.problem:
            return self.template
        if self._built is None:
            self._built = asyncio.create_task(self._build(), name=f"vm-template-{self.root}")
        await asyncio.shield(self._built)
        return self.template

    def broken(self, why: str) -> None:
        """A restore from the template failed: pods boot from now on."""
        self._fail(f"a restore failed: {why}")

    async def close(self) -> None:
        """Stop a build in progress (its qemu dies, its directory goes); let go of the key."""
        for task in (self._found, self._built):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._use >= 0:
            os.close(self._use)
            self._use = -1
