"""aufs mount data and whiteout names, as pure code (no kernel here has aufs)."""

from __future__ import annotations

import pytest

from crio_plugins.storage_aufs.branches import NameKind, classify, mount_data


@pytest.mark.parametrize(
    ("name", "kind", "target"),
    [
        ("etc", NameKind.PLAIN, "etc"),
        (".wh.passwd", NameKind.WHITEOUT, "passwd"),
        (".wh..hidden", NameKind.WHITEOUT, ".hidden"),
        (".wh..wh..opq", NameKind.OPAQUE, ""),
        (".wh..wh.aufs", NameKind.META, ""),
        (".wh..wh.plnk", NameKind.META, ""),
        (".wh..wh.orph", NameKind.META, ""),
        ("x.wh.y", NameKind.PLAIN, "x.wh.y"),
    ],
)
def test_names_are_classified(name: str, kind: NameKind, target: str) -> None:
    assert classify(name) == (kind, target)


@pytest.mark.parametrize("name", [".wh.", ".wh..", ".wh..."])
def test_a_whiteout_of_nothing_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="whites out nothing"):
        classify(name)


def test_branches_top_first_with_whiteouts_honoured_below() -> None:
    data = mount_data("/s/aufs/diff/c", ["/s/aufs/diff/b", "/s/aufs/diff/a"])
    assert data == [
        "br:/s/aufs/diff/c=rw:/s/aufs/diff/b=ro+wh:/s/aufs/diff/a=ro+wh,dio,xino=/dev/shm/aufs.xino"
    ]


def test_without_auplink_pseudo_links_are_off_and_options_come_last() -> None:
    (data,) = mount_data("/rw", ["/ro"], plink=False, options=["nodev", "noatime"], xino="/x")
    assert data == "br:/rw=rw:/ro=ro+wh,dio,xino=/x,noplink,nodev,noatime"


def test_branches_beyond_a_page_are_appended_by_remounts() -> None:
    lowers = [f"/var/lib/containers/storage/aufs/diff/{i:064x}" for i in range(120)]
    data = mount_data("/var/lib/containers/storage/aufs/diff/" + "f" * 64, lowers)
    first, appends = data[0], data[1:]
    assert len(first) <= 4096 and appends
    in_first = first.split(",")[0].count("=ro+wh")
    assert appends == [f"append:{path}=ro+wh" for path in lowers[in_first:]]
    # Every branch is there once, in order, nearest first.
    named = first.split(",")[0].removeprefix("br:").split(":")[1:] + [
        a.removeprefix("append:") for a in appends
    ]
    assert named == [f"{path}=ro+wh" for path in lowers]
    # And it leaves room for the options the way containers/storage does.
    assert len(first.split(",")[0]) <= 4096 - 54


def test_no_lower_branch() -> None:
    assert mount_data("/only", []) == ["br:/only=rw,dio,xino=/dev/shm/aufs.xino"]
