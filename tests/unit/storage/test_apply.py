"""Applying well-formed layers: files, metadata, whiteouts per format, tar-split round trip."""

from __future__ import annotations

import gzip
import io
import os
import stat
from pathlib import Path

import pytest

from crio.storage import ApplyPolicy, WhiteoutFormat, apply_tar
from crio.storage.tarapply import MarkOpaque, Skip, Whiteout, clean_name, plan
from crio.storage.tarsplit import TarSplitWriter, assemble, crc64_iso
from crio.storage.tarstream import TarHeader, TarReader, TarType
from support import tars

ROOT = os.geteuid() == 0


def _apply(root: Path, data: bytes, fmt: WhiteoutFormat = WhiteoutFormat.NONE):
    return apply_tar(root, io.BytesIO(data), ApplyPolicy(fmt))


def test_clean_name() -> None:
    assert clean_name(b"./a//b/./c/") == ("a", "b", "c")
    assert clean_name(b"./") == ()


@pytest.mark.parametrize(
    ("name", "fmt", "kind", "path"),
    [
        (b"a/.wh.b", WhiteoutFormat.NONE, Whiteout, ("a", "b")),
        (b"a/.wh..wh..opq", WhiteoutFormat.OVERLAY, MarkOpaque, ("a",)),
        (b".wh..wh.plnk", WhiteoutFormat.NONE, Skip, (".wh..wh.plnk",)),
    ],
)
def test_plan_whiteouts(name: bytes, fmt: WhiteoutFormat, kind: type, path: tuple) -> None:
    op = plan(TarHeader(name=name, type=TarType.REGULAR), ApplyPolicy(fmt))
    assert isinstance(op, kind) and op.path == path


def test_aufs_keeps_whiteout_files() -> None:
    op = plan(TarHeader(name=b"a/.wh.b", type=TarType.REGULAR), ApplyPolicy(WhiteoutFormat.AUFS))
    assert type(op).__name__ == "MakeFile"


def test_files_and_metadata(tmp_path: Path) -> None:
    data = tars.archive(
        tars.member(b"d", b"5", mode=0o750),
        tars.member(b"d/f", data=b"content", mode=0o604, uid=1234, gid=4321),
        tars.member(b"d/s", b"2", linkname=b"f"),
        tars.member(b"d/h", b"1", linkname=b"d/f"),
        tars.member(b"p", b"6", mode=0o600),
        tars.pax({b"SCHILY.xattr.user.test": b"value"}),
        tars.member(b"x", data=b"with xattr"),
    )
    result = _apply(tmp_path, data)
    f = tmp_path / "d" / "f"
    assert f.read_bytes() == b"content"
    assert stat.S_IMODE(f.stat().st_mode) == 0o604
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o750
    assert int((tmp_path / "d").stat().st_mtime) == 1_700_000_000
    assert int(f.stat().st_mtime) == 1_700_000_000
    assert os.readlink(tmp_path / "d" / "s") == "f"
    assert (tmp_path / "d" / "h").stat().st_ino == f.stat().st_ino
    assert stat.S_ISFIFO((tmp_path / "p").lstat().st_mode)
    assert os.getxattr(tmp_path / "x", "user.test") == b"value"
    assert result.size == len(b"content") + len(b"with xattr")
    if ROOT:
        assert (f.stat().st_uid, f.stat().st_gid) == (1234, 4321)
        assert 1234 in result.uids and 4321 in result.gids


def test_vfs_whiteouts_delete_from_the_copy(tmp_path: Path) -> None:
    _apply(
        tmp_path,
        tars.archive(
            tars.member(b"keep", data=b"k"),
            tars.member(b"gone", data=b"g"),
            tars.member(b"dir/old", data=b"o"),
            tars.member(b"dir/sub/deep", data=b"d"),
        ),
    )
    _apply(
        tmp_path,
        tars.archive(
            tars.member(b".wh.gone"),
            tars.member(b"dir/new", data=b"n"),
            tars.member(b"dir/.wh..wh..opq"),
        ),
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "keep"]
    assert sorted(p.name for p in (tmp_path / "dir").iterdir()) == ["new"]


@pytest.mark.skipif(not ROOT, reason="overlay whiteouts are character devices: mknod needs root")
def test_overlay_whiteouts_are_devices_and_xattrs(tmp_path: Path) -> None:
    _apply(
        tmp_path,
        tars.archive(tars.member(b"a/.wh.b"), tars.member(b"c/.wh..wh..opq")),
        WhiteoutFormat.OVERLAY,
    )
    st = (tmp_path / "a" / "b").lstat()
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(tmp_path / "c", "trusted.overlay.opaque") == b"y"
    assert not (tmp_path / "c" / ".wh..wh..opq").exists()


def test_replacing_dir_with_file_and_back(tmp_path: Path) -> None:
    _apply(
        tmp_path,
        tars.archive(
            tars.member(b"x/inner", data=b"1"),
            tars.member(b"x", data=b"now a file"),
            tars.member(b"y", data=b"file"),
            tars.member(b"y", b"5", mode=0o755),
            tars.member(b"y/z", data=b"in dir"),
        ),
    )
    assert (tmp_path / "x").read_bytes() == b"now a file"
    assert (tmp_path / "y" / "z").read_bytes() == b"in dir"


def test_crc64_matches_go() -> None:
    crc = crc64_iso()
    crc.update(b"123456789")
    assert crc.digest().hex() == "b90956c775a41001"


def test_tar_split_rebuilds_the_archive_from_the_files(tmp_path: Path) -> None:
    data = (
        tars.archive(
            tars.member(b"./", b"5", mode=0o755),
            tars.member(b"./a", data=b"A" * 1000),
            tars.pax({b"path": b"./long/" + b"n" * 180}),
            tars.member(b"ignored", data=b"B" * 10),
            tars.member(b"./empty"),
            tars.member(b"./s", b"2", linkname=b"a"),
        )
        + b"\0" * 4096
    )  # trailing padding is kept too
    result = _apply(tmp_path, data)
    assert result.tar_split is not None

    def opener(name: bytes):
        return open(tmp_path.joinpath(*clean_name(name)), "rb")

    assert b"".join(assemble(result.tar_split, opener)) == data
    (tmp_path / "a").write_bytes(b"C" * 1000)  # same size, other content: CRC catches it
    with pytest.raises(ValueError, match="changed"):
        b"".join(assemble(result.tar_split, opener))


def test_tar_split_lines_use_go_field_names() -> None:
    reader = TarReader()
    reader.receive_data(tars.archive(tars.member(b"f", data=b"x")))
    reader.receive_data(b"")
    writer = TarSplitWriter()
    for event in reader.events():
        writer.feed(event)
    lines = writer.getvalue().splitlines()
    assert lines[0].startswith(b'{"type":2,"payload":"')
    assert lines[1].startswith(b'{"type":1,"name":"f","size":1,"payload":"')
    assert lines[-1].endswith(b'"position":%d}' % (len(lines) - 1))


def test_duplicate_paths_disable_tar_split(tmp_path: Path) -> None:
    data = tars.archive(tars.member(b"f", data=b"1"), tars.member(b"./f", data=b"2"))
    assert _apply(tmp_path, data).tar_split is None


def test_gzip_of_tar_split_is_readable(tmp_path: Path) -> None:
    result = _apply(tmp_path, tars.archive(tars.member(b"f", data=b"1")))
    assert gzip.decompress(gzip.compress(result.tar_split or b"")) == result.tar_split
