"""kpod's storage commands, run in-process on a vfs store under tmp_path."""

from __future__ import annotations

import asyncio
import io
import json
import tarfile
from pathlib import Path

import pytest

from crio.kpod.cli import main
from crio.storage import Store
from support.images import busybox_rootfs_tar, layer_tar, put_image

EXTRA = layer_tar({"etc/motd": b"hi\n"}, dirs=["etc"])


@pytest.fixture
def kpod(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    conf = tmp_path / "crio.conf"
    conf.write_text(f'[crio]\nroot = "{tmp_path}/root"\nrunroot = "{tmp_path}/run"\n')
    (tmp_path / "conf.d").mkdir()

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        base = ["--config", str(conf), "--config-dir", str(tmp_path / "conf.d")]
        code = main([*base, "--storage-driver", "vfs", *args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def seeded(tmp_path: Path) -> dict[str, str]:
    async def seed() -> dict[str, str]:
        store = await Store.open(tmp_path / "root", tmp_path / "run", "vfs")
        old = await put_image(store, [busybox_rootfs_tar()], name="localhost/bb:old")
        new = await put_image(store, [busybox_rootfs_tar(), EXTRA], name="localhost/bb:new")
        ctr = await store.create_container(new.id, names=["web"])
        return {"old": old.id, "new": new.id, "ctr": ctr.id}

    return asyncio.run(seed())


def test_images_table_and_formats(kpod, seeded) -> None:
    code, out, _ = kpod("images")
    lines = out.splitlines()
    assert code == 0
    assert lines[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert [line.split()[:3] for line in lines[1:]] == [
        ["localhost/bb", "new", seeded["new"][:12]],
        ["localhost/bb", "old", seeded["old"][:12]],
    ] or [line.split()[:3] for line in lines[1:]] == [
        ["localhost/bb", "old", seeded["old"][:12]],
        ["localhost/bb", "new", seeded["new"][:12]],
    ]
    code, out, _ = kpod("images", "-q", "--no-trunc")
    assert sorted(out.split()) == sorted(["sha256:" + seeded["new"], "sha256:" + seeded["old"]])
    code, out, _ = kpod("images", "--noheading", "--digests")
    assert len(out.splitlines()) == 2 and "sha256:" in out
    code, out, _ = kpod("images", "--format", "json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert {r["Tag"] for r in rows} == {"old", "new"}
    code, out, _ = kpod("images", "--format", "{{.Repository}}:{{.Tag}}")
    assert sorted(out.split()) == ["localhost/bb:new", "localhost/bb:old"]
    code, out, err = kpod("images", "--format", "{{.Nope}}")
    assert code == 125 and "Nope" in err and len(err.splitlines()) == 1


def test_images_filters(kpod, seeded) -> None:
    assert kpod("images", "-q", "-f", "reference=*:old")[1].split() == [seeded["old"][:12]]
    assert kpod("images", "-q", "localhost/bb:new")[1].split() == [seeded["new"][:12]]
    assert kpod("images", "-q", "-f", "dangling=true")[1] == ""
    assert kpod("images", "-q", "-f", "since=localhost/bb:old")[1] == ""  # same created time
    assert kpod("images", "-q", "-f", "label=nothing")[1] == ""
    code, _, err = kpod("images", "-f", "size=3")
    assert code == 125 and "invalid filter" in err


def test_tag_rmi_and_in_use(kpod, seeded) -> None:
    assert kpod("tag", "localhost/bb:old", "other:1", "registry.example.com/x/y")[0] == 0
    out = kpod("images", "--format", "{{.Repository}}:{{.Tag}}")[1].split()
    assert "localhost/other:1" in out and "registry.example.com/x/y:latest" in out
    code, out, _ = kpod("rmi", "other:1")
    assert code == 0 and out.strip() == "Untagged: localhost/other:1"
    code, _, err = kpod("rmi", seeded["old"])
    assert code == 1 and "must be forced" in err
    code, _, err = kpod("rmi", "localhost/bb:new")
    assert code == 1 and "in use" in err and err.count("\n") == 1
    code, out, _ = kpod("rmi", "-f", "localhost/bb:new")
    assert code == 0 and f"Deleted: sha256:{seeded['new']}" in out
    code, _, err = kpod("rmi", "nothing:here")
    assert code == 1 and "No such image: nothing:here" in err


def test_inspect_history_and_info(kpod, seeded) -> None:
    code, out, _ = kpod("inspect", "localhost/bb:new")
    (obj,) = json.loads(out)
    assert obj["Id"] == "sha256:" + seeded["new"] and len(obj["RootFS"]["Layers"]) == 2
    assert obj["GraphDriver"]["Name"] == "vfs"
    assert kpod("inspect", "-f", "{{.Id}}", seeded["new"][:8])[1].strip() == obj["Id"]
    assert json.loads(kpod("inspect", "web")[1])[0]["Names"] == ["web"]
    code, _, err = kpod("inspect", "nothing")
    assert code == 1 and "No such object" in err
    code, out, _ = kpod("history", "localhost/bb:new")
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["IMAGE", "CREATED"] and len(lines) == 3
    assert lines[1].startswith(seeded["new"][:12]) and lines[2].startswith("<missing>")
    code, out, _ = kpod("info", "--format", "json")
    info = json.loads(out)
    assert info["store"]["graphDriverName"] == "vfs"
    assert info["store"]["imageStore"]["number"] == 2
    assert info["store"]["containerStore"]["number"] == 1
    assert kpod("info", "-f", "{{.store.graphDriverName}}")[1].strip() == "vfs"
    assert "Version:" in kpod("version")[1]


def test_mount_diff_export_umount(kpod, seeded, tmp_path: Path) -> None:
    code, out, _ = kpod("mount", "web")
    root = Path(out.strip())
    assert code == 0 and (root / "etc/motd").read_text() == "hi\n"
    (root / "etc/motd").write_text("changed\n")
    (root / "bin/busybox").unlink()
    (root / "added").write_text("new")
    assert kpod("mount")[1].split()[0] == seeded["ctr"][:12]
    code, out, _ = kpod("diff", "web")
    assert out.splitlines() == ["A /added", "D /bin/busybox", "C /etc/motd"]
    assert json.loads(kpod("diff", "--format", "json", "web")[1])["added"] == ["/added"]
    export = tmp_path / "web.tar"
    assert kpod("export", "-o", str(export), "web")[0] == 0
    with tarfile.open(export) as tar:
        names = tar.getnames()
        assert "added" in names and "bin/busybox" not in names and "bin/sh" in names
        assert tar.extractfile("etc/motd").read() == b"changed\n"  # type: ignore[union-attr]
    assert kpod("umount", "web")[1].strip() == seeded["ctr"]
    assert kpod("mount")[1] == ""
    code, _, err = kpod("umount", "nobody")
    assert code == 1 and "No such container or image" in err


def test_layers_and_applydiff(kpod, seeded, tmp_path: Path) -> None:
    blob = tmp_path / "layer.tar"
    blob.write_bytes(layer_tar({"x": b"1"}))
    code, out, _ = kpod("applydiff", str(blob))
    layer_id = out.strip()
    assert code == 0 and len(layer_id) == 64
    assert layer_id[:12] in kpod("layers")[1]
    code, _, err = kpod("applydiff", "--diff-digest", "sha256:" + "0" * 64, str(blob))
    assert code == 1 and "diff digest" in err


def test_usage_errors_exit_125(kpod) -> None:
    with pytest.raises(SystemExit) as info:
        kpod("images", "--no-such-flag")
    assert info.value.code == 125


def test_export_refuses_a_terminal(kpod, seeded, monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stdout", Tty())
    code = kpod("export", "web")[0]
    assert code == 125
