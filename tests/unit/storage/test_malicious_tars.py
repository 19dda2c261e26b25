"""Hand-made hostile layers: each is refused, names its member, and touches nothing outside.

Every case extracts into ``tmp_path/layer`` next to ``tmp_path/outside``, a
directory with a sentinel file; after the refusal the sentinel and the
directory listing are unchanged and nothing was created beside the layer.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from crio.storage import ApplyPolicy, HostileLayerError, LayerFormatError, WhiteoutFormat
from crio.storage import apply_tar as _apply_tar
from support import tars

FORMATS = [WhiteoutFormat.NONE, WhiteoutFormat.OVERLAY]


def apply_tar(root: Path, data: bytes, fmt: WhiteoutFormat, devices: bool = True) -> None:
    _apply_tar(root, io.BytesIO(data), ApplyPolicy(fmt, allow_devices=devices))


@pytest.fixture
def area(tmp_path: Path) -> Path:
    (tmp_path / "layer").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "sentinel").write_text("untouched")
    return tmp_path


def _snapshot(area: Path) -> dict[str, tuple[int, bytes]]:
    seen: dict[str, tuple[int, bytes]] = {}
    for folder, dirs, files in os.walk(area):
        if folder.startswith(str(area / "layer")):
            continue
        for name in dirs + files:
            path = Path(folder, name)
            if path == area / "layer":
                continue
            st = path.lstat()
            content = path.read_bytes() if path.is_file() and not path.is_symlink() else b""
            seen[str(path.relative_to(area))] = (st.st_mode, content)
    return seen


def _refused(area: Path, data: bytes, fmt: WhiteoutFormat, match: str, devices: bool = True):
    before = _snapshot(area)
    with pytest.raises(LayerFormatError, match=match) as info:
        apply_tar(area / "layer", data, fmt, devices)
    assert _snapshot(area) == before
    return info.value


OUT = b"../outside"

CASES = {
    "dotdot": (tars.archive(tars.member(b"../outside/evil", data=b"x")), "'../outside/evil'.*'..'"),
    "dotdot-inside": (tars.archive(tars.member(b"a/../../outside/evil", data=b"x")), "'..'"),
    "absolute": (tars.archive(tars.member(b"/etc/evil", data=b"x")), "'/etc/evil'.*absolute"),
    "absolute-dir": (tars.archive(tars.member(b"/tmp", b"5")), "absolute"),
    "nul-in-pax-path": (
        tars.archive(
            tars.pax({b"path": b"good\0../../outside/evil"}), tars.member(b"x", data=b"x")
        ),
        "NUL",
    ),
    "symlink-parent": (
        tars.archive(
            tars.member(b"link", b"2", linkname=b"../outside"),
            tars.member(b"link/evil", data=b"x"),
        ),
        "'link/evil'.*symlinked parent 'link'",
    ),
    "symlink-parent-absolute": (
        tars.archive(
            tars.member(b"etc", b"2", linkname=b"/"),
            tars.member(b"etc/evil", data=b"x"),
        ),
        "'etc/evil'.*symlinked parent",
    ),
    "symlink-replaces-dir": (
        tars.archive(
            tars.member(b"d", b"5", mode=0o755),
            tars.member(b"d/ok", data=b"fine"),
            tars.member(b"d", b"2", linkname=b"../outside"),
            tars.member(b"d/evil", data=b"x"),
        ),
        "'d/evil'.*symlinked parent",
    ),
    "symlink-deep-parent": (
        tars.archive(
            tars.member(b"a/b", b"2", linkname=b"../../outside"),
            tars.member(b"a/b/c/evil", data=b"x"),
        ),
        "symlinked parent 'a/b'",
    ),
    "hardlink-outside": (
        tars.archive(tars.member(b"h", b"1", linkname=b"../outside/sentinel")),
        "hard link target.*'..'",
    ),
    "hardlink-absolute": (
        tars.archive(tars.member(b"h", b"1", linkname=b"/etc/passwd")),
        "hard link target.*absolute",
    ),
    "hardlink-through-symlink": (
        tars.archive(
            tars.member(b"link", b"2", linkname=b"../outside"),
            tars.member(b"h", b"1", linkname=b"link/sentinel"),
        ),
        "'h'.*symlinked parent 'link'",
    ),
    "hardlink-missing": (
        tars.archive(tars.member(b"h", b"1", linkname=b"nothere")),
        "'h'.*not in the layer",
    ),
    "whiteout-dotdot": (tars.archive(tars.member(b"a/.wh...", data=b"")), "whiteout"),
    "whiteout-parent-escape": (tars.archive(tars.member(b"../.wh.outside")), "'..'"),
    "overlay-xattr": (
        tars.archive(
            tars.pax({b"SCHILY.xattr.trusted.overlay.opaque": b"y"}),
            tars.member(b"d", b"5", mode=0o755),
        ),
        "trusted.overlay.opaque",
    ),
    "root-replaced": (tars.archive(tars.member(b"./", b"2", linkname=b"/")), "layer root"),
}


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.value)
@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_member_is_refused(area: Path, case: str, fmt: WhiteoutFormat) -> None:
    data, match = CASES[case]
    if fmt is WhiteoutFormat.OVERLAY and os.geteuid() != 0:
        pytest.skip("overlay whiteouts need root (mknod)")
    error = _refused(area, data, fmt, match)
    assert isinstance(error, LayerFormatError)


def test_device_nodes_refused_when_not_allowed(area: Path) -> None:
    data = tars.archive(tars.member(b"dev/sda", b"4", devmajor=8, devminor=0))
    error = _refused(area, data, WhiteoutFormat.NONE, "'dev/sda'.*device", devices=False)
    assert isinstance(error, HostileLayerError)
    assert not (area / "layer" / "dev" / "sda").exists()


def test_file_replacing_a_symlink_does_not_write_through_it(area: Path) -> None:
    data = tars.archive(
        tars.member(b"x", b"2", linkname=b"../outside/sentinel"),
        tars.member(b"x", data=b"replaced"),
    )
    apply_tar(area / "layer", data, WhiteoutFormat.NONE)
    assert (area / "outside" / "sentinel").read_text() == "untouched"
    assert not (area / "layer" / "x").is_symlink()
    assert (area / "layer" / "x").read_bytes() == b"replaced"


def test_hardlink_to_a_symlink_links_the_symlink_itself(area: Path) -> None:
    data = tars.archive(
        tars.member(b"s", b"2", linkname=b"../outside/sentinel"),
        tars.member(b"h", b"1", linkname=b"s"),
    )
    apply_tar(area / "layer", data, WhiteoutFormat.NONE)
    assert (area / "layer" / "h").is_symlink()
    assert (area / "outside" / "sentinel").stat().st_nlink == 1


def test_whiteout_does_not_follow_symlinked_parent(area: Path) -> None:
    data = tars.archive(
        tars.member(b"link", b"2", linkname=b"../outside"),
        tars.member(b"link/.wh.sentinel"),
    )
    _refused(area, data, WhiteoutFormat.NONE, "symlinked parent")
    assert (area / "outside" / "sentinel").exists()


def test_opaque_does_not_follow_symlinked_dir(area: Path) -> None:
    data = tars.archive(
        tars.member(b"link", b"2", linkname=b"../outside"),
        tars.member(b"link/.wh..wh..opq"),
    )
    _refused(area, data, WhiteoutFormat.NONE, "symlinked parent")
    assert (area / "outside" / "sentinel").exists()
