"""The pause process's seccomp filter: a small classic-BPF deny-list, built without libseccomp.

The pause process has no capability, so the calls crio's RuntimeDefault
profile allows only with one (mount, unshare, setns, pivot_root, module
loading, clock setting ...) fail for it anyway; this filter refuses them
outright, and with them what RuntimeDefault refuses whatever the
capabilities: the kernel keyring, userfaultfd, io_uring, bpf,
perf_event_open, kexec, ptrace, process_vm_*, open_by_handle_at, the mount
API calls, and clone with a namespace flag (clone3 answers ENOSYS, so that a
libc falls back to clone, whose flags seccomp can read). Only x86_64's own
ABI passes: x32 and 32-bit calls kill the process, as in RuntimeDefault.

It is a deny-list (everything else is allowed) because the thread that
starts the pause process installs it on itself before ``posix_spawn`` (the
child inherits it) and then runs Python until it ends.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct

from crio_plugins.runtime_runc import _linux

__all__ = ["install", "program", "supported"]

_AUDIT_ARCH_X86_64 = 0xC000003E
_X32_SYSCALL_BIT = 0x40000000
#: CLONE_NEW{NS,CGROUP,UTS,IPC,USER,PID,NET}
_CLONE_NAMESPACE_FLAGS = 0x7E020000
_RET_KILL_PROCESS = 0x80000000
_RET_ERRNO = 0x00050000
_RET_ALLOW = 0x7FFF0000
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_JSET_K = 0x45
_RET_K = 0x06
#: seccomp_data: nr at 0, arch at 4, args[0] (its low 32 bits, little-endian) at 16.
_NR, _ARCH, _ARG0 = 0, 4, 16
_CLONE, _CLONE3 = 56, 435

#: x86_64 numbers of the refused calls.
_DENIED = {
    "ptrace": 101, "syslog": 103, "uselib": 134, "personality": 135, "ustat": 136,
    "sysfs": 139, "vhangup": 153, "pivot_root": 155, "_sysctl": 156, "adjtimex": 159,
    "chroot": 161, "acct": 163, "settimeofday": 164, "mount": 165, "umount2": 166,
    "swapon": 167, "swapoff": 168, "reboot": 169, "iopl": 172, "ioperm": 173,
    "create_module": 174, "init_module": 175, "delete_module": 176, "get_kernel_syms": 177,
    "query_module": 178, "quotactl": 179, "nfsservctl": 180, "lookup_dcookie": 212,
    "clock_settime": 227, "mbind": 237, "set_mempolicy": 238, "get_mempolicy": 239,
    "kexec_load": 246, "add_key": 248, "request_key": 249, "keyctl": 250, "unshare": 272,
    "move_pages": 279, "perf_event_open": 298, "name_to_handle_at": 303,
    "open_by_handle_at": 304, "clock_adjtime": 305, "setns": 308, "process_vm_readv": 310,
    "process_vm_writev": 311, "kcmp": 312, "finit_module": 313, "kexec_file_load": 320,
    "bpf": 321, "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427, "open_tree": 428, "move_mount": 429, "fsopen": 430,
    "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442,
}  # fmt: skip


def supported() -> bool:
    return os.uname().machine == "x86_64"


def program() -> list[tuple[int, int, int, int]]:
    """The filter as (code, jt, jf, k) instructions."""
    denied = sorted(set(_DENIED.values()))
    # Jumps name labels, resolved below into forward offsets.
    code: list[tuple[int, str, str, int]] = [
        (_LD_W_ABS, "", "", _ARCH),
        (_JEQ_K, "", "kill", _AUDIT_ARCH_X86_64),
        (_LD_W_ABS, "", "", _NR),
        (_JGE_K, "kill", "", _X32_SYSCALL_BIT),
        (_JEQ_K, "clone", "", _CLONE),
        (_JEQ_K, "enosys", "", _CLONE3),
        *((_JEQ_K, "eperm", "", nr) for nr in denied),
        (_RET_K, "", "", _RET_ALLOW),
        (_LD_W_ABS, "clone", "", _ARG0),
        (_JSET_K, "eperm", "", _CLONE_NAMESPACE_FLAGS),
        (_RET_K, "", "", _RET_ALLOW),
        (_RET_K, "kill", "", _RET_KILL_PROCESS),
        (_RET_K, "eperm", "", _RET_ERRNO | errno.EPERM),
        (_RET_K, "enosys", "", _RET_ERRNO | errno.ENOSYS),
    ]
    # A label is defined by the instruction that is not a jump and names it; classic BPF
    # only jumps forward, so every label comes after its jumps.
    labels: dict[str, int] = {}
    for at, (op, name, _, _) in enumerate(code):
        if op in (_RET_K, _LD_W_ABS) and name:
            labels.setdefault(name, at)

    def offset(at: int, name: str) -> int:
        if not name:
            return 0
        distance = labels[name] - at - 1
        assert 0 <= distance < 256
        return distance

    out = []
    for at, (op, jt, jf, k) in enumerate(code):
        if op in (_RET_K, _LD_W_ABS):
            out.append((op, 0, 0, k))
        else:
            out.append((op, offset(at, jt), offset(at, jf), k))
    return out


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install() -> None:
    """Install the filter on the calling thread only (it must have no_new_privs set)."""
    raw = b"".join(struct.pack("=HBBI", *insn) for insn in program())
    buffer = ctypes.create_string_buffer(raw, len(raw))
    prog = _SockFprog(len(raw) // 8, ctypes.addressof(buffer))
    _linux.set_seccomp_filter(ctypes.addressof(prog))
