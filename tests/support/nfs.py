"""A real NFS export and mount on one machine (the storage guest: this host has no nfsd).

NFSv4 only, so no rpcbind: ``rpc.mountd`` answers the kernel's export
lookups, ``rpc.nfsd`` starts the kernel server, ``exportfs`` exports one
directory to 127.0.0.1 (as the pseudo-root, ``fsid=0``), and the client
mounts ``127.0.0.1:/``. nfs-utils keeps its state in /var/lib/nfs, which is
read-only in the guest (the host's root): a tmpfs goes over it.

    with nfs_export(Path("/run/scratch/export"), Path("/run/nfs")) as mounted:
        ...  # mounted is the client's view of the export
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

__all__ = ["nfs_export"]

STATE = Path("/var/lib/nfs")


def _sh(command: str) -> str:
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{command}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


@contextlib.contextmanager
def nfs_export(export: Path, client: Path, read_only: bool = True) -> Iterator[Path]:
    """Export ``export`` over NFSv4 and mount it at ``client`` (read-only unless told);
    everything is stopped and unmounted afterwards."""
    export.mkdir(parents=True, exist_ok=True)
    client.mkdir(parents=True, exist_ok=True)
    _sh(f"mountpoint -q {STATE} || mount -t tmpfs -o mode=0755 nfs-state {STATE}")
    _sh(f"mkdir -p {STATE}/v4recovery {STATE}/rpc_pipefs && touch {STATE}/etab {STATE}/rmtab")
    _sh("mountpoint -q /proc/fs/nfsd || mount -t nfsd nfsd /proc/fs/nfsd")
    mode = "ro" if read_only else "rw"
    _sh(f"exportfs -o {mode},no_root_squash,no_subtree_check,fsid=0,insecure 127.0.0.1:{export}")
    mountd = ""
    try:
        if not _sh("pgrep -x rpc.mountd || true").strip():
            _sh("rpc.mountd --no-udp -N 3")
            mountd = _sh("pgrep -x rpc.mountd").split()[0]  # ours: stopped at the end
        _sh("rpc.nfsd --no-udp -N 3 4")
        _sh(f"mount -t nfs4 -o {mode},vers=4.2 127.0.0.1:/ {client}")
        try:
            yield client
        finally:
            subprocess.run(["umount", "-l", str(client)], check=False)
    finally:
        subprocess.run(["exportfs", "-ua"], check=False)
        subprocess.run(["rpc.nfsd", "0"], check=False)
        if mountd:
            subprocess.run(["kill", mountd], check=False)
