"""The host's part of CreateContainer in a pod VM: what the guest can give, and the share.

Before the agent is asked to create a container, the host

- refuses what a pod VM cannot give: ``rshared`` (bidirectional) mount
  propagation. The guest reaches host files through virtiofs, a FUSE
  protocol of file operations: a mount made in the container is a mount of
  the guest's kernel and never reaches the host, so "and back" cannot hold
  (host to container does: see :func:`crio_plugins.runtime_clear._mounts.bind_propagating`);
- binds the container's rootfs and every bind mount's source into the pod's
  share, each with the propagation it asked for;
- writes the guest's config.json into the share and the bundle.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from crio.errors import InvalidRequestError
from crio_plugins.runtime_clear import _mounts
from crio_plugins.runtime_clear._spec import HostBind, propagation_of
from crio_plugins.runtime_clear.pods import VMContainer

__all__ = ["prepare", "refuse_bidirectional"]


def refuse_bidirectional(oci_spec: Mapping[str, Any], container_id: str, handler: str) -> None:
    """Refuse a bind mount with bidirectional (rshared) propagation, naming it.

    :raises InvalidRequestError: with the mount's host and container paths.
    """
    for mount in oci_spec.get("mounts") or []:
        if propagation_of(mount) == "shared":
            raise InvalidRequestError(
                f"CreateContainer: mounts: {mount.get('source')} on "
                f"{mount.get('destination')}: propagation bidirectional (rshared) is not "
                f"possible in a pod VM (runtime handler {handler}, container "
                f"{container_id}): a mount made in the container is a mount of the guest's "
                "kernel and cannot reach the host; use host-to-container (rslave)"
            )


def prepare(
    ctr: VMContainer, rootfs: str, binds: Sequence[HostBind], spec: dict[str, Any], stage: Path
) -> None:
    """On the host: bind the rootfs and mount sources into the share, write config.json.

    :param stage: a directory outside the share for this container's propagation copies.
    :raises InvalidRequestError: no rootfs, or a mount source that does not exist.
    """
    if not rootfs:
        raise InvalidRequestError(f"container {ctr.container_id}: the OCI spec has no root.path")
    target = ctr.host_dir / "rootfs"
    target.mkdir(parents=True)
    _mounts.bind(Path(rootfs), target)
    ctr.mounts.append(str(target))
    try:
        for number, bind in enumerate(binds):
            _bind(ctr, bind, stage / str(number))
    finally:
        with contextlib.suppress(FileNotFoundError):
            stage.rmdir()
    payload = json.dumps(spec)
    (ctr.host_dir / "config.json").write_text(payload)
    (ctr.bundle / "config.json").write_text(payload)


def _bind(ctr: VMContainer, bind: HostBind, stage: Path) -> None:
    source, point = Path(bind.source), ctr.host_dir / bind.relative
    point.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        point.mkdir()
    elif source.exists():
        point.touch()
    else:
        raise InvalidRequestError(
            f"container {ctr.container_id}: mount source {source} does not exist"
        )
    _mounts.bind_propagating(source, point, bind.propagation, stage)
    ctr.mounts.append(str(point))
