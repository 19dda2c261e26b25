"""The few Linux calls the standard library lacks on Python 3.11, through ctypes."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
import socket
import struct

__all__ = [
    "CLONE_FS",
    "CLONE_NEWIPC",
    "CLONE_NEWNET",
    "CLONE_NEWNS",
    "CLONE_NEWPID",
    "CLONE_NEWUTS",
    "MNT_DETACH",
    "MS_BIND",
    "bring_loopback_up",
    "drop_thread_privileges",
    "mount",
    "pivot_root",
    "sethostname",
    "setns",
    "umount",
    "unshare",
]

CLONE_FS = 0x00000200
CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWNET = 0x40000000
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_RDONLY = 0x1
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MNT_DETACH = 0x2
#: System call numbers of the calls made raw (glibc has no pivot_root, and its setresuid
#: family changes every thread of the process, where only the calling one must change).
_SYSCALLS = {
    "x86_64": {"pivot_root": 155, "setgroups": 116, "setresuid": 117, "setresgid": 119},
}
_PR_GET_DUMPABLE = 3
_PR_SET_DUMPABLE = 4
_PR_CAPBSET_DROP = 24
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]  # fmt: skip
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_libc.syscall.restype = ctypes.c_long
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong]  # fmt: skip


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def unshare(flags: int) -> None:
    """unshare(2) for the calling thread."""
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    """setns(2) for the calling thread."""
    _check(_libc.setns(fd, nstype), "setns")


def mount(source: str, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    _check(
        _libc.mount(
            source.encode(),
            target.encode(),
            fstype.encode() if fstype else None,
            flags,
            data.encode() if data else None,
        ),
        f"mount {source} on {target}",
    )


def umount(target: str, flags: int = MNT_DETACH) -> bool:
    """Unmount ``target``; False when it was not mounted (or is gone)."""
    if _libc.umount2(target.encode(), flags) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOENT):
        return False
    raise OSError(code, f"umount {target}: {os.strerror(code)}")


def _syscall(name: str, *args: int | bytes | None) -> None:
    numbers = _SYSCALLS.get(os.uname().machine)
    if numbers is None:
        raise OSError(errno.ENOSYS, f"{name}: not known on {os.uname().machine}")
    _check(int(_libc.syscall(numbers[name], *args)), name)


def raw_syscalls_known() -> bool:
    """Whether this machine's numbers of the raw calls below are known."""
    return os.uname().machine in _SYSCALLS


def pivot_root(new_root: str, put_old: str) -> None:
    """pivot_root(2) in the calling thread's mount namespace."""
    _syscall("pivot_root", new_root.encode(), put_old.encode())


def drop_thread_privileges(uid: int, gid: int, last_cap: int) -> None:
    """Make the calling thread (only it) an unprivileged user for good.

    Every capability leaves its bounding and ambient sets, so that nothing it
    executes can gain one back; then no supplementary groups, ``gid`` and
    ``uid`` (the kernel clears the permitted and effective sets with a uid
    change away from 0), and no_new_privs. Raw system calls: glibc's
    ``setresuid`` would change every thread of crio.
    """
    for cap in range(last_cap + 1):
        _check(_libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0), f"dropping capability {cap}")
    _check(_libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "ambient set")
    _syscall("setgroups", 0, None)
    _syscall("setresgid", gid, gid, gid)
    _syscall("setresuid", uid, uid, uid)
    _check(_libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")


def set_seccomp_filter(prog_address: int) -> None:
    """Install a classic-BPF seccomp filter (``struct sock_fprog *``) on the calling thread."""
    _check(_libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, prog_address, 0, 0), "seccomp")


def dumpable() -> int:
    """The process's dumpable flag (a thread's uid change resets it for the whole process)."""
    return int(_libc.prctl(_PR_GET_DUMPABLE, 0, 0, 0, 0))


def set_dumpable(value: int) -> None:
    _check(_libc.prctl(_PR_SET_DUMPABLE, value, 0, 0, 0), "dumpable")


def last_capability() -> int:
    """The highest capability number this kernel knows."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as handle:
            return int(handle.read())
    except (OSError, ValueError):
        return 40


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, len(raw)), "sethostname")


def bring_loopback_up() -> None:
    """Set ``lo`` up in the calling thread's network namespace."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14x", b"lo", 0)
        reply = fcntl.ioctl(sock, _SIOCGIFFLAGS, request)
        flags = struct.unpack("16sH14x", reply)[1]
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | _IFF_UP))
