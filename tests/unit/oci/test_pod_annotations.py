"""allowed_annotations: which pod annotations a handler honours, and what they say."""

from __future__ import annotations

import pytest

from crio.config import RuntimeHandler
from crio.errors import InvalidRequestError
from crio.oci.container import Device
from crio.oci.pod_annotations import DEVICES, SHM_SIZE, devices, honoured, shm_size


def test_only_allowed_and_known_annotations_are_honoured() -> None:
    given = {SHM_SIZE: "16Mi", DEVICES: "/dev/fuse", "io.kubernetes.cri-o.userns-mode": "auto"}
    assert honoured(given, [SHM_SIZE]) == {SHM_SIZE: "16Mi"}
    assert honoured(given, []) == {}
    assert honoured(given, [SHM_SIZE, DEVICES]) == {SHM_SIZE: "16Mi", DEVICES: "/dev/fuse"}


def test_shm_size() -> None:
    assert shm_size({}) == 0
    assert shm_size({SHM_SIZE: "16Mi"}) == 16 << 20
    for bad in ("lots", "0", "-1Mi"):
        with pytest.raises(InvalidRequestError, match=rf"annotations\[{SHM_SIZE}\]"):
            shm_size({SHM_SIZE: bad})


def test_devices() -> None:
    assert devices({DEVICES: "/dev/fuse, /dev/net/tun:/dev/tun:rw"}) == (
        Device("/dev/fuse", "/dev/fuse", "rwm"),
        Device("/dev/tun", "/dev/net/tun", "rw"),
    )
    for bad in ("fuse", "/dev/fuse:tun", "/dev/fuse:/dev/fuse:x", "/a:/b:r:w"):
        with pytest.raises(InvalidRequestError, match=rf"annotations\[{DEVICES}\]: '{bad}'"):
            devices({DEVICES: bad})


def test_a_handler_may_allow_only_what_crio_implements() -> None:
    assert RuntimeHandler(allowed_annotations=[SHM_SIZE]).allowed_annotations == [SHM_SIZE]
    with pytest.raises(ValueError, match=r"crio does not implement annotation 'io\.kubernetes"):
        RuntimeHandler(allowed_annotations=["io.kubernetes.cri-o.userns-mode"])
