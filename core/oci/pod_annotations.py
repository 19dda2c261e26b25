"""Pod annotations that change behaviour, honoured only where ``allowed_annotations`` says.

A handler table lists the annotations its pods may use
(``[crio.runtime.runtimes.NAME] allowed_annotations``); a pod on another
handler, or one that is not listed, is run as if the annotation were absent
(it stays in the pod's record and status), as CRI-O does. crio implements:

- ``io.kubernetes.cri-o.ShmSize``: the size of the pod's ``/dev/shm``, a
  Kubernetes quantity (``"128Mi"``);
- ``io.kubernetes.cri-o.Devices``: host devices given to every container of
  the pod, ``SRC[:DST[:PERMISSIONS]]`` separated by commas
  (``"/dev/fuse,/dev/net/tun:/dev/tun:rw"``).

Any other name in ``allowed_annotations`` is refused when the configuration
is read: it would do nothing.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from crio.errors import InvalidRequestError
from crio.oci.container import Device

__all__ = ["DEVICES", "KNOWN", "SHM_SIZE", "devices", "honoured", "shm_size"]

SHM_SIZE = "io.kubernetes.cri-o.ShmSize"
DEVICES = "io.kubernetes.cri-o.Devices"
#: The annotations a handler may allow, and what each does.
KNOWN = {
    SHM_SIZE: "the size of the pod's /dev/shm",
    DEVICES: "host devices for every container of the pod",
}


def honoured(annotations: Mapping[str, str], allowed: Collection[str]) -> dict[str, str]:
    """The pod's annotations that its handler allows and crio implements."""
    return {key: value for key, value in annotations.items() if key in KNOWN and key in allowed}


def shm_size(annotations: Mapping[str, str]) -> int:
    """Bytes of /dev/shm the honoured annotations ask for; 0: the runtime's default.

    :raises InvalidRequestError: naming the annotation.
    """
    value = annotations.get(SHM_SIZE)
    if value is None:
        return 0
    from crio.network import parse_quantity

    size = parse_quantity(value, f"annotations[{SHM_SIZE}]")
    if size <= 0:
        raise InvalidRequestError(f"annotations[{SHM_SIZE}]: {value!r} is not a positive size")
    return size


def devices(annotations: Mapping[str, str]) -> tuple[Device, ...]:
    """The devices the honoured annotations give every container (syntax checked here;
    the nodes are looked at when a container is made).

    :raises InvalidRequestError: naming the annotation and the entry.
    """
    value = annotations.get(DEVICES)
    if not value:
        return ()
    found = []
    for entry in value.split(","):
        parts = entry.strip().split(":")
        if len(parts) > 3 or not parts[0].startswith("/"):
            raise InvalidRequestError(
                f"annotations[{DEVICES}]: {entry!r} is not /HOST/PATH[:/CONTAINER/PATH[:rwm]]"
            )
        host = parts[0]
        target = parts[1] if len(parts) > 1 and parts[1] else host
        permissions = parts[2] if len(parts) > 2 else "rwm"
        if not target.startswith("/") or not permissions or not set(permissions) <= set("rwm"):
            raise InvalidRequestError(
                f"annotations[{DEVICES}]: {entry!r} is not /HOST/PATH[:/CONTAINER/PATH[:rwm]]"
            )
        found.append(Device(container_path=target, host_path=host, permissions=permissions))
    return tuple(found)
