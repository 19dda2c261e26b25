"""An infra container whose pause image is not in the store yet: RunPodSandbox pulls it."""

from __future__ import annotations

import json
import shutil

import pytest

from crio.api import api_pb2 as api
from support.cri import PAUSE_SCRIPT, container_config
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
