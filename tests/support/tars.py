"""Hand-made tar members for tests: raw ustar headers, nothing checked or fixed up."""

from __future__ import annotations

BLOCK = 512


def _octal(value: int, width: int) -> bytes:
    return f"{value:0{width - 1}o}".encode() + b"\0"


def header(
    name: bytes,
    kind: bytes = b"0",
    size: int = 0,
    linkname: bytes = b"",
    mode: int = 0o644,
    uid: int = 0,
    gid: int = 0,
    devmajor: int = 0,
    devminor: int = 0,
) -> bytes:
    """One ustar header block (names longer than 100 bytes need :func:`pax`)."""
    block = bytearray(BLOCK)
    block[0:100] = name[:100].ljust(100, b"\0")
    block[100:108] = _octal(mode, 8)
    block[108:116] = _octal(uid, 8)
    block[116:124] = _octal(gid, 8)
    block[124:136] = _octal(size, 12)
    block[136:148] = _octal(1_700_000_000, 12)
    block[148:156] = b" " * 8
    block[156:157] = kind
    block[157:257] = linkname[:100].ljust(100, b"\0")
    block[257:265] = b"ustar\x0000"
    block[329:337] = _octal(devmajor, 8)
    block[337:345] = _octal(devminor, 8)
    block[148:156] = f"{sum(block):06o}".encode() + b"\0 "
    return bytes(block)


def pad(data: bytes) -> bytes:
    return data + b"\0" * ((-len(data)) % BLOCK)


def member(name: bytes, kind: bytes = b"0", data: bytes = b"", **fields: object) -> bytes:
    return header(name, kind, size=len(data), **fields) + pad(data)  # type: ignore[arg-type]


def pax(records: dict[bytes, bytes]) -> bytes:
    """A PAX extended header member applying ``records`` to the next member."""
    body = b""
    for key, value in records.items():
        line = b" " + key + b"=" + value + b"\n"
        length = len(line) + 1
        while len(str(length).encode()) + len(line) != length:
            length = len(str(length).encode()) + len(line)
        body += str(length).encode() + line
    return header(b"PaxHeader", b"x", size=len(body)) + pad(body)


def archive(*members: bytes) -> bytes:
    return b"".join(members) + b"\0" * (2 * BLOCK)
