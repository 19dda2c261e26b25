"""Pulling from real docker-registry processes: every manifest shape, auth, mirrors, TLS rules."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from crio.errors import NotFoundError, PermissionDeniedError, UnavailableError
from crio.image import registries
from crio.image.auth import Credentials
from crio.image.copy import CopyOptions, copy_image
from crio.image.digest import DigestMismatchError
from crio.image.transport import BlobInfo, TransportContext
from crio.plugins import Plugins
from support.image_pull import (
    PASSWORD,
    USER,
    Pushed,
    host_instance,
    layout_blobs,
    pull_into_layout,
    settings_for,
)
from support.image_shapes import build_layout
from support.registry import Registry, TokenServer, skopeo_push


@pytest.mark.parametrize("shape", ["oci", "v2s2", "zstd", "index"])
def test_pull_each_shape_verifies_and_keeps_layers(
    plugins: Plugins, shapes: dict[str, Pushed], open_registry: Registry, tmp_path: Path, shape: str
) -> None:
    pushed = shapes[shape]
    settings = settings_for(tmp_path, open_registry.host)
    result = pull_into_layout(
        plugins, f"docker://{pushed.repository}:v1", settings, tmp_path / "out"
    )
    assert result.source_digest == pushed.digest
    assert result.copy.config_digest == pushed.image.config_digest
    assert set(pushed.image.layer_digests) <= layout_blobs(tmp_path / "out")
    if shape == "index":
        assert result.manifest_digest == host_instance(pushed)
    elif shape == "v2s2":  # an OCI layout holds OCI manifests: converted
        assert result.copy.media_type == "application/vnd.oci.image.manifest.v1+json"
    else:
        assert result.manifest_digest == pushed.digest


def test_pull_signed_schema1(
    plugins: Plugins, shapes: dict[str, Pushed], open_registry: Registry, tmp_path: Path
) -> None:
    pushed = shapes["v2s1"]
    settings = settings_for(tmp_path, open_registry.host)
    result = pull_into_layout(plugins, f"{pushed.repository}:v1", settings, tmp_path / "out")
    assert result.source_digest == pushed.digest  # the payload's digest, signatures stripped
    # The layout takes no schema 1: the engine wrote schema 2 with a config built from the
    # history, whose diff_ids are the layers' uncompressed digests.
    manifest = json.loads((tmp_path / "out/blobs/sha256" / result.manifest_digest[7:]).read_bytes())
    config = json.loads(
        (tmp_path / "out/blobs/sha256" / manifest["config"]["digest"][7:]).read_bytes()
    )
    assert config["rootfs"]["diff_ids"] == pushed.image.diff_ids


def test_pull_by_digest_and_wrong_digest(
    plugins: Plugins, shapes: dict[str, Pushed], open_registry: Registry, tmp_path: Path
) -> None:
    pushed = shapes["oci"]
    settings = settings_for(tmp_path, open_registry.host)
    result = pull_into_layout(
        plugins, f"{pushed.repository}@{pushed.digest}", settings, tmp_path / "a"
    )
    assert result.manifest_digest == pushed.digest
    with pytest.raises(NotFoundError, match=r"MANIFEST_UNKNOWN|404"):
        pull_into_layout(
            plugins, f"{pushed.repository}@sha256:{'0' * 64}", settings, tmp_path / "b"
        )


def test_missing_tag_is_not_found(
    plugins: Plugins, shapes: dict[str, Pushed], open_registry: Registry, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, open_registry.host)
    with pytest.raises(NotFoundError, match="shapes/oci:nope"):
        pull_into_layout(plugins, f"{shapes['oci'].repository}:nope", settings, tmp_path / "out")


def test_corrupted_blob_fails_and_leaves_nothing(
    plugins: Plugins, open_registry: Registry, tmp_path: Path
) -> None:
    image = build_layout(tmp_path / "src", "oci", extra=b"corrupt-me")
    skopeo_push(image.source, open_registry, "corrupt/app:v1")
    bad = image.layer_digests[1]
    blob = open_registry.blob_file(bad)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    settings = settings_for(tmp_path, open_registry.host)
    with pytest.raises(DigestMismatchError, match=f"layer blob {bad} \\(layer 2 of 2\\)"):
        pull_into_layout(
            plugins, f"{open_registry.host}/corrupt/app:v1", settings, tmp_path / "out"
        )
    assert layout_blobs(tmp_path / "out") == set()


def test_plain_http_needs_an_insecure_rule(
    plugins: Plugins, shapes: dict[str, Pushed], open_registry: Registry, tmp_path: Path
) -> None:
    secure = settings_for(tmp_path)  # HTTPS only: the registry speaks plain HTTP
    with pytest.raises(UnavailableError, match=open_registry.host):
        pull_into_layout(plugins, f"{shapes['oci'].repository}:v1", secure, tmp_path / "a")
    conf = registries.parse_text(
        f'[[registry]]\nlocation = "{open_registry.host}"\ninsecure = true\n'
    )
    by_rule = settings_for(tmp_path, registries=conf)
    pull_into_layout(plugins, f"{shapes['oci'].repository}:v1", by_rule, tmp_path / "b")


def test_mirror_is_tried_first_then_the_location(
    plugins: Plugins, open_registry: Registry, tmp_path: Path
) -> None:
    mirror = Registry(base=tmp_path / "mirror")
    mirror.start()
    try:
        on_mirror = build_layout(tmp_path / "m", "oci", extra=b"from the mirror")
        on_location = build_layout(tmp_path / "l", "oci", extra=b"from the location")
        skopeo_push(on_mirror.source, mirror, "team/app:v1")
        skopeo_push(on_location.source, open_registry, "team/app:v1")
        skopeo_push(on_location.source, open_registry, "team/app:only-here")
        conf = registries.parse_text(
            '[[registry]]\nprefix = "registry.invalid/team"\n'
            f'location = "{open_registry.host}/team"\ninsecure = true\n'
            f'[[registry.mirror]]\nlocation = "{mirror.host}/team"\ninsecure = true\n'
        )
        settings = settings_for(tmp_path, registries=conf)
        first = pull_into_layout(plugins, "registry.invalid/team/app:v1", settings, tmp_path / "a")
        assert first.copy.config_digest == on_mirror.config_digest
        assert first.reference == "registry.invalid/team/app:v1"
        second = pull_into_layout(
            plugins, "registry.invalid/team/app:only-here", settings, tmp_path / "b"
        )
        assert second.copy.config_digest == on_location.config_digest
    finally:
        mirror.cleanup()


def test_blocked_registry_is_refused(
    plugins: Plugins, shapes: dict[str, Pushed], open_registry: Registry, tmp_path: Path
) -> None:
    conf = registries.parse_text(
        f'[[registry]]\nlocation = "{open_registry.host}"\nblocked = true\n'
    )
    with pytest.raises(PermissionDeniedError, match="blocked"):
        pull_into_layout(
            plugins,
            f"{shapes['oci'].repository}:v1",
            settings_for(tmp_path, registries=conf),
            tmp_path / "o",
        )


def test_short_name_searches_registries_in_order(
    plugins: Plugins, shapes: dict[str, Pushed], open_registry: Registry, tmp_path: Path
) -> None:
    empty = Registry(base=tmp_path / "empty")
    empty.start()
    try:
        conf = registries.parse_text(
            f'unqualified-search-registries = ["{empty.host}", "{open_registry.host}"]\n',
            extra_insecure=[empty.host, open_registry.host],
        )
        result = pull_into_layout(
            plugins, "shapes/oci:v1", settings_for(tmp_path, registries=conf), tmp_path / "o"
        )
        assert result.reference == f"{open_registry.host}/shapes/oci:v1"
    finally:
        empty.cleanup()


def test_basic_auth(plugins: Plugins, basic_registry: Registry, tmp_path: Path) -> None:
    image = build_layout(tmp_path / "src", "oci", extra=b"basic")
    skopeo_push(image.source, basic_registry, "private/app:v1", creds=f"{USER}:{PASSWORD}")
    settings = settings_for(tmp_path, basic_registry.host)
    ref = f"{basic_registry.host}/private/app:v1"
    with pytest.raises(PermissionDeniedError, match="401"):
        pull_into_layout(plugins, ref, settings, tmp_path / "a")
    with pytest.raises(PermissionDeniedError):
        pull_into_layout(
            plugins, ref, settings, tmp_path / "b", credentials=Credentials(USER, "wrong")
        )
    result = pull_into_layout(
        plugins, ref, settings, tmp_path / "c", credentials=Credentials(USER, PASSWORD)
    )
    assert result.copy.config_digest == image.config_digest
    # Credentials from an auth file (global_auth_file / kpod's auth.json).
    authfile = tmp_path / "auth.json"
    from crio.image.auth import store_credentials

    store_credentials(str(authfile), basic_registry.host, Credentials(USER, PASSWORD))
    with_file = settings_for(tmp_path, basic_registry.host, auth_files=(str(authfile),))
    pull_into_layout(plugins, ref, with_file, tmp_path / "d")


def test_token_auth_with_scope_refresh_on_push(
    plugins: Plugins, token_registry: tuple[Registry, TokenServer], tmp_path: Path
) -> None:
    registry, server = token_registry
    image = build_layout(tmp_path / "src", "oci", extra=b"token")
    ref = f"{registry.host}/private/app:v1"
    context = TransportContext(
        credentials=Credentials(USER, PASSWORD),
        registries=registries.Registries(insecure_extra=(registry.host,)),
    )

    async def push() -> None:
        oci, docker = plugins.image_transport("oci"), plugins.image_transport("docker")
        assert oci is not None and docker is not None
        source = await oci.open_source(f"{image.path}:{image.ref}", context)
        dest = await docker.open_destination(ref, context)
        try:
            # Look first (pull scope), then write (pull,push): the token must be renewed.
            assert await dest.has_blob(BlobInfo(image.config_digest)) is None
            await copy_image(source, dest, CopyOptions())
        finally:
            await source.close()
            await dest.close()

    asyncio.run(push())
    asked = [scopes for user, scopes in server.requests if user == USER]
    assert ("repository:private/app:pull,push",) in asked
    settings = settings_for(tmp_path, registry.host)
    with pytest.raises(PermissionDeniedError):
        pull_into_layout(plugins, ref, settings, tmp_path / "anon")  # anonymous gets no actions
    server.requests.clear()
    result = pull_into_layout(
        plugins, ref, settings, tmp_path / "out", credentials=Credentials(USER, PASSWORD)
    )
    assert result.copy.config_digest == image.config_digest
    assert server.requests and all(user == USER for user, _ in server.requests)
    with pytest.raises(PermissionDeniedError, match="refused the credentials"):
        pull_into_layout(
            plugins, ref, settings, tmp_path / "bad", credentials=Credentials(USER, "nope")
        )


def test_retries_on_5xx_and_resumes_broken_blobs(
    plugins: Plugins, shapes: dict[str, Pushed], open_registry: Registry, tmp_path: Path
) -> None:
    from support.registry import FlakyProxy

    proxy = FlakyProxy(open_registry.host)
    proxy.start()
    try:
        pushed = shapes["oci"]
        settings = settings_for(tmp_path, proxy.host)
        result = pull_into_layout(
            plugins, f"{proxy.host}/shapes/oci:v1", settings, tmp_path / "out"
        )
        assert result.copy.config_digest == pushed.image.config_digest
        assert set(pushed.image.layer_digests) <= layout_blobs(tmp_path / "out")
    finally:
        proxy.stop()
    statuses = {(path.rsplit("/", 1)[-1], status) for _, path, _, status in proxy.log}
    big = pushed.image.layer_digests[0]
    assert (big, 503) in statuses and (big, 206) in statuses  # refused, then resumed by Range
    ranges = [rng for _, path, rng, _ in proxy.log if path.endswith(big) and rng]
    assert ranges and all(r.startswith("bytes=") and not r.startswith("bytes=0-") for r in ranges)
    assert ("v1", 502) in statuses  # the manifest request was retried too


def test_https_verifies_certificates_and_takes_certs_d(plugins: Plugins, tmp_path: Path) -> None:
    import dataclasses

    from support.registry import make_tls

    ca, cert, key = make_tls(tmp_path / "pki")
    registry = Registry(base=tmp_path / "tls-registry", tls=(cert, key))
    registry.start()
    try:
        image = build_layout(tmp_path / "src", "oci", extra=b"tls")
        skopeo_push(image.source, registry, "tls/app:v1")
        ref = f"{registry.host}/tls/app:v1"
        # The system CAs do not know the test CA: refused, and not retried.
        strict = settings_for(tmp_path)
        with pytest.raises(
            UnavailableError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"
        ):
            pull_into_layout(plugins, ref, strict, tmp_path / "a")
        # certs.d/HOST:PORT/ca.crt adds the CA for that registry only.
        certs_d = tmp_path / "certs.d"
        (certs_d / registry.host).mkdir(parents=True)
        (certs_d / registry.host / "ca.crt").write_bytes(ca.read_bytes())

        async def with_certs() -> None:
            from crio.image.copy import copy_image
            from crio.image.oci_layout import LayoutDestination

            docker = plugins.image_transport("docker")
            assert docker is not None
            context = dataclasses.replace(strict.context(), certs_dir=str(certs_d))
            source = await docker.open_source(ref, context)
            dest = LayoutDestination(tmp_path / "b", "x")
            try:
                result = await copy_image(source, dest, CopyOptions())
                assert result.config_digest == image.config_digest
            finally:
                await source.close()
                await dest.close()

        asyncio.run(with_certs())
        # An insecure rule: HTTPS without verification works too.
        pull_into_layout(plugins, ref, settings_for(tmp_path, registry.host), tmp_path / "c")
    finally:
        registry.cleanup()
