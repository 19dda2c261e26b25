"""The image RPCs of a real crio process; kpod sees what crio pulled (same store)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from crio.api import api_pb2 as api
from support.daemon import CrioProcess
from support.image_pull import Pushed
from support.registry import Registry

KPOD = str(Path(sys.executable).with_name("kpod"))


def test_crio_pulls_and_kpod_sees_it(
    crio: CrioProcess, shapes: dict[str, Pushed], open_registry: Registry
) -> None:
    files = crio.base / "image-files"
    files.mkdir()
    (files / "policy.json").write_text('{"default": [{"type": "insecureAcceptAnything"}]}')
    (files / "registries").write_text(
        f'unqualified-search-registries = ["{open_registry.host}"]\n'
        f'[[registry]]\nlocation = "{open_registry.host}"\ninsecure = true\n'
    )
    with open(crio.config, "a") as conf:
        conf.write(
            "\n[crio.image]\n"
            f'signature_policy = "{files}/policy.json"\nregistries_conf = "{files}/registries"\n'
            f'registries_d = "{files}"\n'
        )
    crio.start()
    pushed = shapes["zstd"]
    with crio.channel() as channel:
        stub = crio.image_stub(channel)
        reply = stub.PullImage(api.PullImageRequest(image=api.ImageSpec(image="shapes/zstd:v1")))
        assert reply.image_ref == pushed.image.config_digest[7:]
        status = stub.ImageStatus(
            api.ImageStatusRequest(image=api.ImageSpec(image="shapes/zstd:v1"))
        )
        assert status.image.repo_tags == [f"{pushed.repository}:v1"]
        listed = subprocess.run(
            [
                KPOD,
                "--config",
                str(crio.config),
                "--config-dir",
                str(crio.base),
                "images",
                "-q",
                "--no-trunc",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        assert pushed.image.config_digest[7:] in listed.stdout
        with pytest.raises(grpc.RpcError) as info:
            stub.PullImage(api.PullImageRequest(image=api.ImageSpec(image="shapes/absent:v1")))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        stub.RemoveImage(api.RemoveImageRequest(image=api.ImageSpec(image=reply.image_ref)))
        gone = stub.ImageStatus(api.ImageStatusRequest(image=api.ImageSpec(image=reply.image_ref)))
        assert not gone.HasField("image")
