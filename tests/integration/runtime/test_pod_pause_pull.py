"""An infra container whose pause image is not in the store yet: RunPodSandbox pulls it."""

from __future__ import annotations

import json
import shutil

import grpc
import pytest

from crio.api import api_pb2 as api
from support.cri import PAUSE_SCRIPT, container_config, rpc_error
from support.images import busybox_rootfs_tar, digest, image_config, layer_tar, write_oci_layout
from support.node import start_node, stop_node
from support.registry import REGISTRY_BIN, running, skopeo_push


def test_pause_image_is_pulled_when_missing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    if not shutil.which("skopeo") or not shutil.which(REGISTRY_BIN):
        pytest.skip("needs skopeo and docker-registry")
    base, pause = busybox_rootfs_tar(), layer_tar({"pause": PAUSE_SCRIPT}, modes={"pause": 0o755})
    layout = write_oci_layout(
        tmp_path / "pause", [base, pause], config=image_config([digest(base), digest(pause)])
    )
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    with running() as registry:
        skopeo_push(f"oci:{layout.path}:latest", registry, "pause:remote")
        node = start_node(
            {
                "crio.runtime": {"drop_infra_ctr": False},
                "crio.image": {
                    "pause_image": f"{registry.host}/pause:remote",
                    "insecure_registries": [registry.host],
                    "signature_policy": str(policy),
                },
            }
        )
        try:
            pod_id = node.cri.run_pod(node.pod())
            images = api.ListImagesRequest()
            names = [t for i in node.crio.image_stub(node._channel).ListImages(images).images
                     for t in i.repo_tags]  # fmt: skip
            assert f"{registry.host}/pause:remote" in names
            cid = node.cri.create(pod_id, container_config("c"), start=True)
            assert node.cri.exec(cid, ["true"]).exit_code == 0
        finally:
            stop_node(node)


def test_pause_image_auth_file_gives_the_pause_pull_its_credentials(tmp_path) -> None:  # type: ignore[no-untyped-def]
    if not shutil.which("skopeo") or not shutil.which(REGISTRY_BIN):
        pytest.skip("needs skopeo and docker-registry")
    from crio.image.auth import Credentials, store_credentials

    base, pause = busybox_rootfs_tar(), layer_tar({"pause": PAUSE_SCRIPT}, modes={"pause": 0o755})
    layout = write_oci_layout(
        tmp_path / "pause", [base, pause], config=image_config([digest(base), digest(pause)])
    )
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    with running(htpasswd={"pauser": "s3cret"}) as registry:
        skopeo_push(f"oci:{layout.path}:latest", registry, "pause:private", creds="pauser:s3cret")
        auth = tmp_path / "pause-auth.json"
        store_credentials(str(auth), registry.host, Credentials("pauser", "s3cret"))
        image = {
            "pause_image": f"{registry.host}/pause:private",
            "insecure_registries": [registry.host],
            "signature_policy": str(policy),
        }
        for auth_file in ("", str(auth)):
            node = start_node(
                {
                    "crio.runtime": {"drop_infra_ctr": False},
                    "crio.image": {**image, "pause_image_auth_file": auth_file},
                }
            )
            try:
                if not auth_file:
                    error = rpc_error(node.cri.run_pod, node.pod())
                    assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error.details()
                    continue
                pod_id = node.cri.run_pod(node.pod())
                cid = node.cri.create(pod_id, container_config("c"), start=True)
                assert node.cri.exec(cid, ["true"]).exit_code == 0
            finally:
                stop_node(node)
