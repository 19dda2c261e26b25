"""A stand-in network namespace for DEL when the pod's own is gone.

Plugins are asked to clean up as much as they can without the netns, but
some learn what to clean from the interface inside it: Debian's bridge 1.1.1
finds the pod's addresses on ``eth0`` and only then removes its ipMasq chain,
so with the netns gone that chain would stay for ever. For such a DEL crio
makes a short-lived namespace holding an interface with the pod's
recorded name and addresses (one end of a veth pair), runs DEL against it and removes it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Sequence

__all__ = ["standin_netns"]

log = logging.getLogger("crio.net_cni")


async def _ip(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        "ip",
        *args,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    return proc.returncode or 0, err.decode(errors="replace").strip()


@contextlib.asynccontextmanager
async def standin_netns(ifname: str, addresses: Sequence[str]) -> AsyncIterator[str]:
    """Yield the path of a fresh netns with ``ifname`` holding ``addresses``.

    Yields "" when it cannot be made (no iproute2, no privilege): DEL then
    runs without a netns, as the spec allows.
    """
    name = f"crio-del-{secrets.token_hex(6)}"
    status, err = await _ip("netns", "add", name)
    if status != 0:
        log.warning("cannot make a stand-in netns for DEL: %s", err)
        yield ""
        return
    try:
        # A veth pair with both ends inside: every kernel that runs bridge
        # pods has veth, not every one has the dummy driver.
        steps = [("link", "add", ifname, "type", "veth", "peer", "name", "standin0")]
        steps += [("addr", "add", a, "dev", ifname) for a in addresses]
        steps.append(("link", "set", ifname, "up"))
        for step in steps:
            status, err = await _ip("-n", name, *step)
            if status != 0:
                log.warning("stand-in netns for DEL: ip %s: %s", " ".join(step), err)
                break
        yield f"/run/netns/{name}"
    finally:
        await _ip("netns", "del", name)
