"""The sans-I/O tar reader: every byte accounted for, members as tarfile sees them."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crio.storage.tarstream import (
    Data,
    End,
    Member,
    MemberEnd,
    Segment,
    TarFormatError,
    TarReader,
    TarType,
)
from support import tars


def feed_whole(data: bytes) -> list[object]:
    reader = TarReader()
    reader.receive_data(data)
    reader.receive_data(b"")
    return reader.events()


def feed_bytewise(data: bytes) -> list[object]:
    reader = TarReader()
    events: list[object] = []
    for i in range(len(data)):
        reader.receive_data(data[i : i + 1])
        events += reader.events()
    reader.receive_data(b"")
    return events + reader.events()


FEEDS = [feed_whole, feed_bytewise]


def _sample(fmt: int) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        d = tarfile.TarInfo("dir")
        d.type, d.mode = tarfile.DIRTYPE, 0o750
        tar.addfile(d)
        data = b"hello world\n" * 100
        f = tarfile.TarInfo("dir/file.txt")
        f.size, f.uid, f.gid, f.mode = len(data), 1000, 1001, 0o640
        tar.addfile(f, io.BytesIO(data))
        long = tarfile.TarInfo("deep/" + "x" * 150 + "/name")
        long.size = 3
        tar.addfile(long, io.BytesIO(b"abc"))
        s = tarfile.TarInfo("dir/link")
        s.type, s.linkname = tarfile.SYMTYPE, "file.txt"
        tar.addfile(s)
        h = tarfile.TarInfo("dir/hard")
        h.type, h.linkname = tarfile.LNKTYPE, "dir/file.txt"
        tar.addfile(h)
        c = tarfile.TarInfo("dev/null")
        c.type, c.devmajor, c.devminor = tarfile.CHRTYPE, 1, 3
        tar.addfile(c)
        p = tarfile.TarInfo("fifo")
        p.type = tarfile.FIFOTYPE
        tar.addfile(p)
    return out.getvalue()


def _replay(events: list[object]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, (Segment, Data)))  # type: ignore[attr-defined]


@pytest.mark.parametrize("feed", FEEDS)
@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_every_byte_comes_out_once(feed: Callable[[bytes], list[object]], fmt: int) -> None:
    data = _sample(fmt) if fmt != tarfile.USTAR_FORMAT else _ustar_sample()
    events = feed(data)
    assert _replay(events) == data
    assert isinstance(events[-1], End) and events[-1].clean


def _ustar_sample() -> bytes:
    # ustar cannot hold the 150-byte path component; the prefix field covers long dirs
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        f = tarfile.TarInfo("a" * 90 + "/" + "b" * 90 + "/c.txt")
        f.size = 5
        tar.addfile(f, io.BytesIO(b"12345"))
    return out.getvalue()


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_members_match_tarfile(fmt: int) -> None:
    data = _sample(fmt)
    members = [e.header for e in feed_whole(data) if isinstance(e, Member)]
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        expected = tar.getmembers()
    assert [m.name.decode().rstrip("/") for m in members] == [t.name for t in expected]
    assert [m.size for m in members] == [t.size for t in expected]
    assert [m.linkname.decode() for m in members] == [t.linkname for t in expected]
    by_name = {m.name.decode().rstrip("/"): m for m in members}
    assert by_name["dir/file.txt"].uid == 1000 and by_name["dir/file.txt"].gid == 1001
    assert by_name["dir/file.txt"].mode == 0o640
    assert by_name["dir"].type is TarType.DIRECTORY
    assert by_name["dir/hard"].type is TarType.HARDLINK
    assert (by_name["dev/null"].devmajor, by_name["dev/null"].devminor) == (1, 3)
    assert by_name["fifo"].type is TarType.FIFO


def test_ustar_prefix_joins_the_name() -> None:
    (member,) = [e.header for e in feed_whole(_ustar_sample()) if isinstance(e, Member)]
    assert member.name == b"a" * 90 + b"/" + b"b" * 90 + b"/c.txt"


def test_event_order_and_data() -> None:
    data = tars.archive(tars.member(b"f", data=b"x" * 700))
    kinds = [type(e).__name__ for e in feed_whole(data) if not isinstance(e, Segment)]
    assert kinds == ["Member", "Data", "MemberEnd", "End"]
    content = b"".join(e.data for e in feed_whole(data) if isinstance(e, Data))
    assert content == b"x" * 700


def test_pax_records_override_the_header() -> None:
    data = tars.archive(
        tars.pax(
            {b"path": b"very/long/" + b"n" * 200, b"uid": b"4242", b"SCHILY.xattr.user.a": b"1"}
        ),
        tars.member(b"short", data=b"zz"),
    )
    (member,) = [e.header for e in feed_whole(data) if isinstance(e, Member)]
    assert member.name == b"very/long/" + b"n" * 200
    assert member.uid == 4242
    assert member.xattrs == (("user.a", b"1"),)


def test_header_only_types_carry_no_data() -> None:
    # A symlink header claiming 600 bytes: Go's reader (and tar-split) read no data.
    data = tars.archive(tars.header(b"l", b"2", size=600, linkname=b"t"))
    events = feed_whole(data)
    assert not [e for e in events if isinstance(e, Data)]
    assert _replay(events) == data


def test_missing_end_blocks_is_noted() -> None:
    data = tars.member(b"f", data=b"abc")
    events = feed_whole(data)
    assert isinstance(events[-1], End) and not events[-1].clean
    assert _replay(events) == data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (tars.header(b"f")[:-1] + b"\x01" + b"\0" * 1024, "checksum"),
        (tars.header(b"f", size=100) + b"abc", "truncated"),
        (tars.archive(tars.header(b"s", b"S")), "unsupported"),
        (tars.archive(tars.pax({b"GNU.sparse.map": b"0,1"}), tars.member(b"f")), "sparse"),
        (tars.archive(tars.header(b"f", b"Z")), "unknown tar entry type"),
    ],
)
def test_malformed_archives_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(TarFormatError, match=message):
        feed_whole(data)


def test_base256_numbers() -> None:
    block = bytearray(tars.header(b"big", size=0))
    block[108:116] = b"\x80" + (70000).to_bytes(7, "big")  # uid in base-256
    block[148:156] = b" " * 8
    block[148:156] = f"{sum(block):06o}".encode() + b"\0 "
    (member,) = [e.header for e in feed_whole(bytes(block) + bytes(1024)) if isinstance(e, Member)]
    assert member.uid == 70000


names = st.text(alphabet="abcdefgh/._-", min_size=1, max_size=120).filter(
    lambda s: s.strip("/") and ".." not in s
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(names, st.binary(max_size=1500)), min_size=1, max_size=6))
def test_any_tarfile_archive_replays_exactly(files: list[tuple[str, bytes]]) -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in files:
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    data = out.getvalue()
    events = feed_whole(data)
    assert _replay(events) == data
    members = [e for e in events if isinstance(e, Member)]
    assert len(members) == len(files)
    assert len([e for e in events if isinstance(e, MemberEnd)]) == len(files)
