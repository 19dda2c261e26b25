"""The pause process's seccomp filter, installed on a thread of this test (it is per thread)."""

from __future__ import annotations

import ctypes
import errno
import os
import threading

import pytest

from crio_plugins.runtime_runc import _seccomp

pytestmark = pytest.mark.skipif(not _seccomp.supported(), reason="the filter is x86_64's")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_PR_SET_NO_NEW_PRIVS = 38
CLONE_NEWUSER = 0x10000000


def _errno_of(*call: int) -> int:
    result = _libc.syscall(*call)
    return 0 if result >= 0 else ctypes.get_errno()


def _under_the_filter() -> dict[str, int]:
    """Calls made by a thread that installed the filter (errno, 0 for success)."""
    seen: dict[str, int] = {}

    def body() -> None:
        assert _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
        _seccomp.install()
        seen["getpid"] = _errno_of(39)
        seen["unshare(CLONE_NEWUSER)"] = _errno_of(272, CLONE_NEWUSER)
        seen["clone3"] = _errno_of(435, 0, 0)
        seen["keyctl"] = _errno_of(250, 0, 0, 0, 0, 0)
        seen["userfaultfd"] = _errno_of(323, 0)
        seen["personality(query)"] = _errno_of(135, 0xFFFFFFFF)
        seen["bpf"] = _errno_of(321, 0, 0, 0)
        seen["pipe and close"] = 0 if os.close(os.pipe()[0]) is None else 1

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    return seen


def test_the_filter_refuses_what_a_pause_process_never_needs() -> None:
    assert _under_the_filter() == {
        "getpid": 0,
        "unshare(CLONE_NEWUSER)": errno.EPERM,
        "clone3": errno.ENOSYS,  # so that a libc falls back to clone, whose flags it reads
        "keyctl": errno.EPERM,
        "userfaultfd": errno.EPERM,
        "personality(query)": errno.EPERM,
        "bpf": errno.EPERM,
        "pipe and close": 0,
    }
    # The rest of this process never had it.
    assert _errno_of(135, 0xFFFFFFFF) == 0


def test_jumps_land_inside_the_program() -> None:
    program = _seccomp.program()
    for at, (code, jt, jf, _) in enumerate(program):
        if code & 0x07 == 0x05:  # BPF_JMP
            assert at + 1 + max(jt, jf) < len(program)
    assert program[-1][0] == 0x06  # it ends with a return
