"""The pod VM's kernel and initramfs: fetched, built, stored with checksums, loaded.

``crio vm-assets`` (and ``make prepare``) calls :func:`ensure`: it downloads
Debian's cloud kernel package with ``apt-get download``, unpacks it with
``dpkg -x``, turns the bzImage into the ELF ``vmlinux`` microvm boots, builds
the initramfs from busybox-static and the boot modules, and stores under
``ROOT/vm-assets``::

    manifest.json   what was built from what, with sha256 of each file
    vmlinux         the uncompressed kernel
    initrd.img      the initramfs (newc cpio)
    modules/        the package's whole module tree and modules.json
                    (name -> path, depends), for loading more modules later

Nothing here is committed to git; a second call with nothing changed only
reads the manifest. A handler table may point at its own kernel and initrd.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from crio.errors import CrioError, NotFoundError, UnsupportedError
from crio_plugins.runtime_clear._bzimage import BzImageError, extract_vmlinux
from crio_plugins.runtime_clear._initramfs import BOOT_MODULES, INIT_SCRIPT, build_initramfs
from crio_plugins.runtime_clear._modules import ModuleError, dependencies, load_order, module_name

__all__ = [
    "ASSETS_DIRNAME",
    "Assets",
    "AssetsError",
    "assets_dir",
    "ensure",
    "load",
    "sha256_file",
    "verify",
]

log = logging.getLogger("crio.runtime_clear")

ASSETS_DIRNAME = "vm-assets"
#: Debian's metapackage of the cloud-flavoured kernel for this architecture.
KERNEL_METAPACKAGE = "linux-image-cloud-amd64"
BUSYBOX = "/bin/busybox"
#: Bumped when the layout of the store changes.
LAYOUT = 1


class AssetsError(CrioError):
    """The VM assets cannot be fetched, built or trusted; the message says which step."""


@dataclass(frozen=True, slots=True)
class Assets:
    """A stored kernel and initramfs."""

    directory: Path
    kernel: Path
    initrd: Path
    kernel_release: str = ""
    kernel_package: str = ""
    kernel_version: str = ""
    modules_dir: Path | None = None
    sha256: dict[str, str] = field(default_factory=dict)


def assets_dir(root: str | Path) -> Path:
    """Where crio keeps the VM assets for storage root ``root``."""
    return Path(root) / ASSETS_DIRNAME


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _inputs_digest(busybox: bytes) -> str:
    """What the initramfs is built from, besides the kernel package."""
    digest = hashlib.sha256()
    for part in (str(LAYOUT), INIT_SCRIPT, ",".join(BOOT_MODULES)):
        digest.update(part.encode() + b"\0")
    digest.update(hashlib.sha256(busybox).digest())
    return digest.hexdigest()


def load(directory: Path) -> Assets:
    """Read the manifest of stored assets (cheap: no hashing).

    :raises NotFoundError: nothing is stored there yet.
    :raises AssetsError: the manifest is unreadable or names missing files.
    """
    manifest_path = directory / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise NotFoundError(
            f"no VM assets in {directory}: run 'crio vm-assets' (or set kernel and initrd)"
        ) from None
    except (OSError, ValueError) as exc:
        raise AssetsError(f"VM assets manifest {manifest_path} is unreadable: {exc}") from exc
    files = manifest.get("files", {})
    for name in ("vmlinux", "initrd.img"):
        entry = files.get(name, {})
        path = directory / name
        if not path.is_file() or path.stat().st_size != entry.get("size"):
            raise AssetsError(f"VM asset {path} is missing or not the size its manifest says")
    modules = directory / "modules"
    return Assets(
        directory=directory,
        kernel=directory / "vmlinux",
        initrd=directory / "initrd.img",
        kernel_release=manifest.get("kernel_release", ""),
        kernel_package=manifest.get("kernel_package", ""),
        kernel_version=manifest.get("kernel_version", ""),
        modules_dir=modules if modules.is_dir() else None,
        sha256={name: entry["sha256"] for name, entry in files.items()},
    )


def verify(assets: Assets) -> None:
    """Hash the stored files and compare with the manifest.

    :raises AssetsError: a file changed since it was stored.
    """
    for name, path in (("vmlinux", assets.kernel), ("initrd.img", assets.initrd)):
        want = assets.sha256.get(name)
        got = sha256_file(path)
        if want != got:
            raise AssetsError(f"VM asset {path}: sha256 {got} does not match the manifest ({want})")


def _run(argv: list[str], cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise AssetsError(f"{argv[0]} is not installed: {exc}") from exc
    if done.returncode != 0:
        raise AssetsError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def resolve_kernel_package(metapackage: str = KERNEL_METAPACKAGE) -> str:
    """The versioned image package the metapackage depends on (apt's candidate)."""
    out = _run(["apt-cache", "depends", "--no-recommends", "--no-suggests", metapackage])
    for line in out.splitlines():
        kind, _, name = line.strip().partition(": ")
        if kind == "Depends" and name.startswith("linux-image-"):
            return name.strip("<>")
    raise AssetsError(f"apt-cache knows no kernel image package behind {metapackage}")


def _is_static(elf: bytes) -> bool:
    """True for an ELF executable without a program interpreter (PT_INTERP)."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2:
        return False
    (phoff,) = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    kinds = {struct.unpack_from("<I", elf, phoff + i * phentsize)[0] for i in range(phnum)}
    return 3 not in kinds


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.parent / f".{directory.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _fetch(package: str, work: Path, deb: Path | None) -> Path:
    """Unpack the kernel package into ``work/pkg``; download it unless ``deb`` is given."""
    if deb is None:
        _run(["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", package], cwd=work)
        debs = sorted(work.glob(f"{package}_*.deb"))
        if not debs:
            raise AssetsError(f"apt-get download {package} left no .deb in {work}")
        deb = debs[0]
    _run(["dpkg-deb", "-x", str(deb), str(work / "pkg")])
    return work / "pkg"


def _index_modules(tree: Path) -> dict[str, dict[str, object]]:
    index: dict[str, dict[str, object]] = {}
    for path in sorted(tree.rglob("*.ko")):
        try:
            depends = dependencies(path.read_bytes())
        except ModuleError as exc:
            raise AssetsError(f"kernel module {path}: {exc}") from exc
        index[module_name(path.name)] = {
            "path": str(path.relative_to(tree)),
            "depends": list(depends),
        }
    return index


def _build(work: Path, unpacked: Path, package: str, busybox: bytes) -> dict[str, object]:
    out = work / "out"
    out.mkdir()
    images = sorted((unpacked / "boot").glob("vmlinuz-*"))
    if not images:
        raise AssetsError(f"package {package} has no /boot/vmlinuz-*")
    release = images[0].name.removeprefix("vmlinuz-")
    try:
        (out / "vmlinux").write_bytes(extract_vmlinux(images[0].read_bytes()))
    except BzImageError as exc:
        raise AssetsError(f"{images[0].name} from {package}: {exc}") from exc
    tree = unpacked / "lib" / "modules" / release
    index = _index_modules(tree)
    depends = {name: entry["depends"] for name, entry in index.items()}
    try:
        order = load_order(BOOT_MODULES, depends)  # type: ignore[arg-type]
    except ModuleError as exc:
        raise AssetsError(f"{package}: {exc}") from exc
    boot = [(name, (tree / str(index[name]["path"])).read_bytes()) for name in order]
    (out / "initrd.img").write_bytes(build_initramfs(busybox, boot))
    (out / "modules").mkdir()
    tree.rename(out / "modules" / release)
    (out / "modules" / "modules.json").write_text(json.dumps(index, indent=1, sort_keys=True))
    return {"kernel_release": release, "boot_modules": order}


def _version_of(package: str) -> str:
    out = _run(["apt-cache", "policy", package])
    for line in out.splitlines():
        key, _, value = line.strip().partition(": ")
        if key == "Candidate":
            return value
    return ""


def ensure(
    directory: Path,
    *,
    package: str | None = None,
    deb: Path | None = None,
    force: bool = False,
    say: Callable[[str], None] = log.info,
) -> Assets:
    """Make sure ``directory`` holds assets built from the current inputs; return them.

    Cheap when they are there: the manifest is read and compared with the
    inputs (init script, boot modules, busybox); the files are not hashed.

    :param package: a ``linux-image-*`` package; default: apt's candidate
        behind :data:`KERNEL_METAPACKAGE`.
    :param deb: use this downloaded package file instead of apt-get download.
    :param force: rebuild even if the stored assets are current.
    """
    try:
        busybox = Path(BUSYBOX).read_bytes()
    except OSError as exc:
        raise UnsupportedError(f"{BUSYBOX} is needed for the VM initramfs: {exc}") from exc
    if not _is_static(busybox):
        raise UnsupportedError(f"{BUSYBOX} is not statically linked: install busybox-static")
    inputs = _inputs_digest(busybox)
    with _locked(directory):
        if not force:
            with contextlib.suppress(CrioError, OSError, ValueError):
                current = load(directory)
                manifest = json.loads((directory / "manifest.json").read_text())
                if manifest.get("inputs") == inputs and (
                    package is None or package == current.kernel_package
                ):
                    say(f"VM assets in {directory} are current ({current.kernel_release})")
                    return current
        return _rebuild(directory, package, deb, busybox, inputs, say)


def _rebuild(
    directory: Path,
    package: str | None,
    deb: Path | None,
    busybox: bytes,
    inputs: str,
    say: Callable[[str], None],
) -> Assets:
    if deb is None and package is None:
        try:
            package = resolve_kernel_package()
        except AssetsError:
            say("apt knows no cloud kernel yet: apt-get update")
            _run(["apt-get", "update", "-q"])
            package = resolve_kernel_package()
    if package is None:
        assert deb is not None
        package = deb.name.split("_", 1)[0]
    work = directory.parent / f".{directory.name}.build-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        started = time.monotonic()
        say(f"fetching {package}" + (f" from {deb}" if deb else " with apt-get download"))
        unpacked = _fetch(package, work, deb)
        say("extracting vmlinux and building the initramfs")
        facts = _build(work, unpacked, package, busybox)
        out = work / "out"
        manifest = {
            "layout": LAYOUT,
            "inputs": inputs,
            "kernel_package": package,
            "kernel_version": "" if deb else _version_of(package),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": {
                name: {"sha256": sha256_file(out / name), "size": (out / name).stat().st_size}
                for name in ("vmlinux", "initrd.img")
            },
            **facts,
        }
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        old = work / "old"
        if directory.exists():
            directory.rename(old)
        out.rename(directory)
        say(f"VM assets stored in {directory} in {time.monotonic() - started:.1f}s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return load(directory)
