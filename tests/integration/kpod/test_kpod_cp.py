"""kpod cp both ways on created, running and stopped containers of a hostile image."""

from __future__ import annotations

import asyncio
import io
import json
import os
import secrets
import tarfile
from pathlib import Path

import pytest

from crio.api import api_pb2 as api
from crio.storage import Store
from support.cri import container_config
from support.images import busybox_rootfs_tar, put_image
from support.kpod import kpod, run_kpod
from support.node import Node

HOSTILE = "localhost/hostile:latest"
MTIME = 1_000_000_000


def _entry(tar: tarfile.TarFile, name: str, kind: bytes, **attrs: object) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    data = attrs.pop("data", b"")
    for key, value in attrs.items():
        setattr(info, key, value)
    info.size = len(data) if kind == tarfile.REGTYPE else 0  # type: ignore[arg-type]
    tar.addfile(info, io.BytesIO(data) if data else None)  # type: ignore[arg-type]


def _hostile_layer() -> bytes:
    """Links at /etc and up through '..', and a tree with unusual owners, modes and times."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _entry(tar, "evil", tarfile.SYMTYPE, linkname="/etc", mode=0o777)
        _entry(tar, "up", tarfile.SYMTYPE, linkname="../../../../..", mode=0o777)
        _entry(tar, "data", tarfile.DIRTYPE, mode=0o750, uid=1234, gid=5678, mtime=MTIME)
        _entry(
            tar, "data/file", tarfile.REGTYPE,
            mode=0o640, uid=1234, gid=5678, mtime=MTIME, data=b"payload\n",
        )  # fmt: skip
        _entry(tar, "data/abs", tarfile.SYMTYPE, linkname="/etc/passwd", mode=0o777)
    return out.getvalue()


@pytest.fixture(scope="module")
def hostile(node: Node) -> str:
    async def put() -> None:
        store = await Store.open(node.base / "root", node.base / "runroot")
        try:
            await put_image(store, [busybox_rootfs_tar(), _hostile_layer()], name=HOSTILE)
        finally:
            await store.close()

    asyncio.run(put())
    return HOSTILE


def _rootfs(node: Node, cid: str) -> Path:
    reply = node.cri.rt.ContainerStatus(api.ContainerStatusRequest(container_id=cid, verbose=True))
    return Path(json.loads(reply.info["info"])["rootfs"])


def _tar(*members: tuple[str, bytes, str]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, kind, link in members:
            _entry(
                tar,
                name,
                kind,
                linkname=link,
                mode=0o644,
                data=b"x" if kind == tarfile.REGTYPE else b"",
            )
    return out.getvalue()


def test_cp_stays_inside_the_container(node: Node, hostile: str, tmp_path: Path) -> None:
    pod_id = node.cri.run_pod(node.pod(name="cp"), runtime_handler="runc")
    cid = node.cri.create(pod_id, container_config("target", image=hostile), start=True)
    root = _rootfs(node, cid)
    inside_passwd = (root / "etc" / "passwd").read_bytes()
    assert inside_passwd != Path("/etc/passwd").read_bytes()

    # Out: links resolve inside the container's root, never on the host.
    for source in ("/evil/passwd", "/up/evil/passwd", "/up/../../etc/passwd"):
        target = tmp_path / secrets.token_hex(4)
        result = kpod(node.crio, "cp", f"{cid}:{source}", str(target))
        assert result.returncode == 0, result.stderr
        assert target.read_bytes() == inside_passwd, source
    followed = tmp_path / "followed"
    assert kpod(node.crio, "cp", "-L", f"{cid}:/data/abs", str(followed)).returncode == 0
    assert followed.read_bytes() == inside_passwd

    # A directory keeps modes, owners, times; a link inside it stays a link.
    out = tmp_path / "out"
    out.mkdir()
    assert kpod(node.crio, "cp", f"{cid}:/data", str(out)).returncode == 0
    st = os.stat(out / "data" / "file")
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid, st.st_mtime) == (0o640, 1234, 5678, MTIME)
    dst = os.stat(out / "data")
    assert (dst.st_mode & 0o7777, dst.st_uid, int(dst.st_mtime)) == (0o750, 1234, MTIME)
    assert os.readlink(out / "data" / "abs") == "/etc/passwd"
    assert (out / "data" / "file").read_bytes() == b"payload\n"

    # To stdout as tar.
    raw = run_kpod_bytes(node, f"{cid}:/data", "-")
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        assert sorted(tar.getnames()) == ["data", "data/abs", "data/file"]
        assert tar.getmember("data/file").uid == 1234

    # In: through the links, the files land inside the root.
    mark = f"kpod-cp-{secrets.token_hex(4)}"
    source = tmp_path / "in.txt"
    source.write_text("from the host\n")
    os.utime(source, (MTIME, MTIME))
    for dest in (f"/evil/{mark}", f"/up/{mark}", f"/up/up/tmp/{mark}"):
        assert kpod(node.crio, "cp", str(source), f"{cid}:{dest}").returncode == 0, dest
    assert (root / "etc" / mark).read_text() == "from the host\n"
    assert (root / mark).exists() and (root / "tmp" / mark).exists()
    assert not Path("/etc", mark).exists() and not Path("/", mark).exists()
    assert not Path("/tmp", mark).exists()
    assert os.stat(root / "etc" / mark).st_mtime == MTIME
    assert node.cri.exec(cid, ["cat", f"/etc/{mark}"]).stdout == b"from the host\n"

    # A hostile tar on stdin: '..', absolute names and hard links out are refused.
    for bad in (
        _tar((f"../../{mark}", tarfile.REGTYPE, "")),
        _tar((f"/{mark}-abs", tarfile.REGTYPE, "")),
        _tar((f"hard-{mark}", tarfile.LNKTYPE, "../../../etc/shadow")),
    ):
        refused = run_kpod(node.crio, "cp", "-", f"{cid}:/tmp", input=bad)
        assert refused.returncode == 1 and "archive member" in refused.stderr, refused.stderr
    via_link = _tar(("s", tarfile.SYMTYPE, "/"), (f"s/tmp/{mark}-2", tarfile.REGTYPE, ""))
    assert run_kpod(node.crio, "cp", "-", f"{cid}:/tmp", input=via_link).returncode == 0
    assert (root / "tmp" / f"{mark}-2").exists() and not Path("/tmp", f"{mark}-2").exists()
    assert kpod(node.crio, "cp", str(source), str(tmp_path / "x")).returncode == 125
    assert kpod(node.crio, "cp", f"{cid}:/nope", str(tmp_path / "y")).returncode == 1

    # A created container: copied in before it starts, seen once it runs.
    later = node.cri.create(pod_id, container_config("later", image=hostile))
    assert kpod(node.crio, "cp", str(source), f"{later}:/in.txt").returncode == 0
    node.cri.start(later)
    assert node.cri.exec(later, ["cat", "/in.txt"]).stdout == b"from the host\n"

    # A stopped container whose root is not mounted: mounted for the copy, unmounted after.
    node.cri.stop(cid)
    assert kpod(node.crio, "umount", "--force", cid).returncode == 0
    assert not _mounted(root)
    again = tmp_path / "again"
    assert kpod(node.crio, "cp", f"{cid}:/etc/{mark}", str(again)).returncode == 0
    assert again.read_text() == "from the host\n" and not _mounted(root)
    node.cri.stop_pod(pod_id)
    node.cri.remove_pod(pod_id)


def run_kpod_bytes(node: Node, *args: str) -> bytes:
    import subprocess

    from support.kpod import KPOD

    base = ["--config", str(node.crio.config), "--config-dir", str(node.crio.base)]
    return subprocess.run([KPOD, *base, "cp", *args], capture_output=True, check=True).stdout


def _mounted(path: Path) -> bool:
    with open("/proc/self/mountinfo") as handle:
        return any(line.split()[4] == str(path) for line in handle)
