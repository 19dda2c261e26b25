"""Kernel arguments that give a pod VM's guest what the node has."""

from __future__ import annotations

__all__ = ["UNLABELLED_LSMS", "node_lsm_args"]

#: The guest kernel's security modules that label processes (AppArmor, SELinux,
#: Smack) left out: the rest of Debian's default list.
UNLABELLED_LSMS = "lsm=landlock,lockdown,yama,loadpin,safesetid,integrity,bpf"


def node_lsm_args() -> tuple[str, ...]:
    """Kernel arguments that give the guest the node's process labelling: some, or none.

    crio sets no AppArmor or SELinux label, so a runc container has the
    node's default one ("unconfined") where the node has such a module and no
    label at all where it has none (``/proc/self/attr/current`` answers
    EINVAL). The guest's kernel has AppArmor and SELinux built in, and must
    not bring what the node lacks.
    """
    try:
        with open("/proc/self/attr/current", "rb") as handle:
            handle.read()
    except OSError:
        return (UNLABELLED_LSMS,)
    return ()
