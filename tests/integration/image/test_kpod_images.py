"""kpod pull/push/save/load/login/logout against real registries; signing with real GPG."""

from __future__ import annotations

import base64
import json
import os
import pty
import select
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from support.gpg import GpgKey, gpg_key
from support.image_pull import PASSWORD, USER, Pushed
from support.image_shapes import build_layout
from support.registry import Registry, TokenServer, skopeo_push

KPOD = str(Path(sys.executable).with_name("kpod"))


class Kpod:
    """kpod with a private store, crio.conf, registries.conf, registries.d and auth file."""

    def __init__(self, tmp: Path, insecure: list[str], policy: str = "") -> None:
        self.tmp = tmp
        self.regd = tmp / "registries.d"
        self.regd.mkdir(exist_ok=True)
        self.sigstore = tmp / "sigstore"
        (self.regd / "default.yaml").write_text(
            f"default-docker:\n  lookaside: file://{self.sigstore}\n"
        )
        self.policy = tmp / "policy.json"
        self.policy.write_text(policy or '{"default": [{"type": "insecureAcceptAnything"}]}')
        (tmp / "registries.conf").write_text("")
        (tmp / "crio.conf.d").mkdir(exist_ok=True)
        (tmp / "crio.conf").write_text(
            "[crio]\n"
            f'root = "{tmp}/root"\nrunroot = "{tmp}/runroot"\nstorage_driver = "vfs"\n'
            "[crio.image]\n"
            f'signature_policy = "{self.policy}"\nregistries_conf = "{tmp}/registries.conf"\n'
            f'registries_d = "{self.regd}"\ninsecure_registries = {json.dumps(insecure)}\n'
        )
        self.env = {
            **os.environ,
            "REGISTRY_AUTH_FILE": str(tmp / "auth.json"),
            "XDG_RUNTIME_DIR": str(tmp / "xdg"),
        }

    def args(self, *argv: str) -> list[str]:
        return [
            KPOD,
            "--config",
            str(self.tmp / "crio.conf"),
            "--config-dir",
            str(self.tmp / "crio.conf.d"),
            *argv,
        ]

    def __call__(
        self, *argv: str, ok: bool = True, stdin: bytes | None = None, env: dict | None = None
    ) -> subprocess.CompletedProcess[str]:
        raw = subprocess.run(
            self.args(*argv),
            input=stdin,
            capture_output=True,
            env={**self.env, **(env or {})},
            timeout=240,
        )
        result = subprocess.CompletedProcess(
            raw.args, raw.returncode, raw.stdout.decode(errors="replace"), raw.stderr.decode()
        )
        if ok:
            assert result.returncode == 0, f"kpod {' '.join(argv)}: {result.stderr}"
        return result


@pytest.fixture
def signer() -> Iterator[GpgKey]:
    with gpg_key("kpod-signer@crio.test") as key:
        yield key


def test_pull_prints_lines_or_bars(
    shapes: dict[str, Pushed], open_registry: Registry, tmp_path: Path
) -> None:
    kpod = Kpod(tmp_path, [open_registry.host])
    pushed = shapes["oci"]
    result = kpod("pull", f"{pushed.repository}:v1")
    assert result.stdout.strip() == pushed.image.config_digest[7:]
    assert "Copying blob" in result.stderr and "done" in result.stderr
    quiet = kpod("pull", "-q", f"{pushed.repository}:v1")
    assert quiet.stderr == "" and quiet.stdout.strip() == pushed.image.config_digest[7:]
    images = kpod("images", "--format", "{{.Repository}}:{{.Tag}}")
    assert f"{pushed.repository}:v1" in images.stdout
    # stdout on a terminal: bars redrawn in place, with sizes and speed.
    main, secondary = pty.openpty()
    proc = subprocess.Popen(
        kpod.args("pull", f"{shapes['zstd'].repository}:v1"),
        stdin=subprocess.DEVNULL,
        stdout=secondary,
        stderr=secondary,
        env=kpod.env,
    )
    os.close(secondary)
    screen = b""
    while True:
        ready, _, _ = select.select([main], [], [], 60)
        if not ready:
            break
        try:
            data = os.read(main, 65536)
        except OSError:
            break
        if not data:
            break
        screen += data
    proc.wait(60)
    os.close(main)
    assert proc.returncode == 0, screen
    text = screen.decode(errors="replace")
    assert "\x1b[" in text and "[=" in text and "iB/s" in text and " / " in text


def test_save_and_load_round_trip(
    shapes: dict[str, Pushed], open_registry: Registry, tmp_path: Path
) -> None:
    (tmp_path / "a").mkdir()
    kpod = Kpod(tmp_path / "a", [open_registry.host])
    pushed = shapes["v2s2"]
    kpod("pull", "-q", f"{pushed.repository}:v1")
    docker_tar, oci_tar = tmp_path / "img.tar", tmp_path / "img.oci.tar"
    kpod("save", "-o", str(docker_tar), f"{pushed.repository}:v1")
    kpod("save", "--format", "oci-archive", "-o", str(oci_tar), f"{pushed.repository}:v1")
    streamed = subprocess.run(
        kpod.args("save", f"{pushed.repository}:v1"), capture_output=True, env=kpod.env, check=True
    )
    assert (
        streamed.stdout == docker_tar.read_bytes()[:0] + streamed.stdout
        and len(streamed.stdout) > 500_000
    )
    (tmp_path / "b").mkdir()
    other = Kpod(tmp_path / "b", [])
    loaded = other("load", "-i", str(docker_tar))
    assert f"Loaded image: {pushed.repository}:v1" in loaded.stdout
    inspect = json.loads(other("inspect", f"{pushed.repository}:v1").stdout)
    assert inspect[0]["Id"].removeprefix("sha256:") == pushed.image.config_digest[7:]
    (tmp_path / "c").mkdir()
    third = Kpod(tmp_path / "c", [])
    with open(oci_tar, "rb") as f:
        loaded = third("load", stdin=f.read())
    assert "Loaded image" in loaded.stdout
    assert pushed.image.config_digest[7:] in third("images", "-q", "--no-trunc").stdout
    # push writes oci: and docker-archive: too.
    kpod("push", "-q", f"{pushed.repository}:v1", f"oci:{tmp_path}/layout:pushed")
    kpod("push", "-q", f"{pushed.repository}:v1", f"docker-archive:{tmp_path}/pushed.tar:x/y:z")
    # skopeo reads every one.
    for ref in (
        f"docker-archive:{docker_tar}",
        f"oci-archive:{oci_tar}",
        f"oci:{tmp_path}/layout:pushed",
        f"docker-archive:{tmp_path}/pushed.tar",
    ):
        out = subprocess.run(
            ["skopeo", "inspect", "--config", ref], check=True, capture_output=True
        )
        assert json.loads(out.stdout)["rootfs"]["diff_ids"] == pushed.image.diff_ids


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return


def test_push_sign_and_pull_with_signed_by(
    shapes: dict[str, Pushed], open_registry: Registry, tmp_path: Path, signer: GpgKey
) -> None:
    (tmp_path / "a").mkdir()
    kpod = Kpod(tmp_path / "a", [open_registry.host])
    pushed = shapes["oci"]
    kpod("pull", "-q", f"{pushed.repository}:v1")
    target = f"{open_registry.host}/signed/app:v1"
    (kpod.regd / "default.yaml").write_text(
        f"default-docker:\n  lookaside: file://{kpod.sigstore}\n  lookaside-staging: file://{kpod.sigstore}\n"
    )
    digestfile = tmp_path / "digest"
    kpod(
        "push",
        "--sign-by",
        signer.fingerprint,
        "--digestfile",
        str(digestfile),
        f"{pushed.repository}:v1",
        f"docker://{target}",
        env={"GNUPGHOME": str(signer.home)},
    )
    digest = digestfile.read_text()
    sig = kpod.sigstore / f"signed/app@sha256={digest[7:]}" / "signature-1"
    assert sig.exists()

    key_file = signer.write_public(tmp_path / "signer.gpg")
    signed_by = json.dumps(
        {
            "default": [{"type": "reject"}],
            "transports": {
                "docker": {
                    f"{open_registry.host}/signed": [
                        {"type": "signedBy", "keyType": "GPGKeys", "keyPath": str(key_file)}
                    ]
                }
            },
        }
    )
    (tmp_path / "b").mkdir()
    puller = Kpod(tmp_path / "b", [open_registry.host], policy=signed_by)
    (puller.regd / "default.yaml").write_text(
        f"default-docker:\n  lookaside: file://{kpod.sigstore}\n"
    )
    assert puller("pull", "-q", target).stdout.strip()

    # The same signatures served over http:// are accepted too.
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(kpod.sigstore)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        (tmp_path / "c").mkdir()
        over_http = Kpod(tmp_path / "c", [open_registry.host], policy=signed_by)
        (over_http.regd / "default.yaml").write_text(
            f"default-docker:\n  lookaside: http://127.0.0.1:{server.server_address[1]}\n"
        )
        assert over_http("pull", "-q", target).stdout.strip()
    finally:
        server.shutdown()
        server.server_close()
        thread.join()

    # A wrong key: rejected, nothing stored.
    with gpg_key("other@crio.test") as other_key:
        wrong = signed_by.replace(
            str(key_file), str(other_key.write_public(tmp_path / "other.gpg"))
        )
        (tmp_path / "d").mkdir()
        rejecting = Kpod(tmp_path / "d", [open_registry.host], policy=wrong)
        (rejecting.regd / "default.yaml").write_text(
            f"default-docker:\n  lookaside: file://{kpod.sigstore}\n"
        )
        result = rejecting("pull", target, ok=False)
        assert result.returncode != 0 and "not trusted" in result.stderr
        assert rejecting("images", "-q").stdout.strip() == ""

    # Tampered: the tag now points at another manifest; the signature names the old one.
    other_image = build_layout(tmp_path / "evil", "oci", extra=b"evil")
    skopeo_push(other_image.source, open_registry, "signed/app:v1")
    (tmp_path / "e").mkdir()
    tampered = Kpod(tmp_path / "e", [open_registry.host], policy=signed_by)
    (tampered.regd / "default.yaml").write_text(
        f"default-docker:\n  lookaside: file://{kpod.sigstore}\n"
    )
    result = tampered("pull", target, ok=False)
    assert "no signature exists" in result.stderr or "for manifest" in result.stderr


def test_login_logout_basic_and_token(
    basic_registry: Registry, token_registry: tuple[Registry, TokenServer], tmp_path: Path
) -> None:
    token_reg, _server = token_registry
    kpod = Kpod(tmp_path, [basic_registry.host, token_reg.host])
    image = build_layout(tmp_path / "src", "oci", extra=b"login")
    skopeo_push(image.source, basic_registry, "private/app:v1", creds=f"{USER}:{PASSWORD}")
    ref = f"{basic_registry.host}/private/app:v1"
    assert kpod("pull", ref, ok=False).returncode == 1
    bad = kpod("login", "-u", USER, "-p", "wrong", basic_registry.host, ok=False)
    assert bad.returncode == 1 and "unauthorized" in bad.stderr
    assert (
        "Login Succeeded"
        in kpod(
            "login", "-u", USER, "--password-stdin", basic_registry.host, stdin=PASSWORD.encode()
        ).stdout
    )
    auth = json.loads((tmp_path / "auth.json").read_text())
    assert (
        base64.b64decode(auth["auths"][basic_registry.host]["auth"]).decode()
        == f"{USER}:{PASSWORD}"
    )
    assert kpod("login", "--get-login", basic_registry.host).stdout.strip() == USER
    assert kpod("pull", "-q", ref).stdout.strip() == image.config_digest[7:]
    assert "Login Succeeded" in kpod("login", "-u", USER, "-p", PASSWORD, token_reg.host).stdout
    assert kpod("login", "-u", USER, "-p", "nope", token_reg.host, ok=False).returncode == 1
    kpod("logout", basic_registry.host)
    assert basic_registry.host not in json.loads((tmp_path / "auth.json").read_text())["auths"]
    assert kpod("logout", basic_registry.host, ok=False).returncode == 1
    kpod("logout", "--all")
    assert json.loads((tmp_path / "auth.json").read_text())["auths"] == {}
