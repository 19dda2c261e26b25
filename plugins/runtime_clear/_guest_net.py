"""The guest agent's TCP connections, for PortForward into a pod VM (standard library only).

``connect`` opens a connection to a port on the guest's loopback (the pod's
network is the guest's); what the peer sends goes out as ``output`` events
with the ``conn_id``, its EOF as ``closed``; ``send`` writes to it, ``close``
half-closes it (``abort`` closes it at once).
"""

from __future__ import annotations

import contextlib

import _wire
from _guest_loop import Failure, Loop

# No typing at run time: the guest imports this module while it boots.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from collections.abc import Callable
    from typing import Any

__all__ = ["Connections"]

READ_CHUNK = 64 * 1024
#: Bytes accepted for a connection whose peer does not read.
MAX_SEND_BUFFER = 8 << 20


class _Conn:
    def __init__(self, conn_id: str, sock: socket.socket) -> None:
        self.conn_id = conn_id
        self.sock = sock
        self.pending = bytearray()
        self.shut_write = False  # the host half-closed: shut down once pending is out
        self.read_done = False


class Connections:
    """Open connections by ``conn_id``."""

    def __init__(self, loop: Loop, emit: Callable[..., None]) -> None:
        self.loop = loop
        self.emit = emit
        self.conns: dict[str, _Conn] = {}

    def _get(self, conn_id: str) -> _Conn:
        conn = self.conns.get(conn_id)
        if conn is None:
            raise Failure("not_found", f"no connection {conn_id}")
        return conn

    def op_connect(self, rid: int, args: dict[str, Any]) -> dict[str, Any]:
        import socket

        conn_id, port = args["conn_id"], args["port"]
        if conn_id in self.conns:
            raise Failure("exists", f"connection {conn_id} already exists")
        if not 0 < port < 65536:
            raise Failure("invalid", f"connect: port {port} is out of range")
        error: OSError | None = None
        for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            try:
                sock.settimeout(5)  # the loopback answers at once, or refuses
                sock.connect((host, port))
            except OSError as exc:
                sock.close()
                error = error or exc
                continue
            sock.setblocking(False)
            conn = _Conn(conn_id, sock)
            self.conns[conn_id] = conn
            self.loop.add_reader(sock.fileno(), lambda c=conn: self._readable(c))
            return {"errno": 0}
        assert error is not None
        return {"errno": error.errno or 0, "message": str(error)}

    def _readable(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self.emit("output", conn_id=conn.conn_id, stream="stdout", data=_wire.encode_data(data))
            return
        self.loop.remove_reader(conn.sock.fileno())
        conn.read_done = True
        self.emit("closed", conn_id=conn.conn_id, stream="stdout")
        self._maybe_forget(conn)

    def op_send(self, rid: int, args: dict[str, Any]) -> dict[str, Any]:
        conn = self._get(args["conn_id"])
        try:
            data = _wire.decode_data(args["data"])
        except ValueError as exc:
            raise Failure("invalid", f"send: {exc}") from exc
        if conn.shut_write:
            raise Failure("state", f"connection {conn.conn_id} is closed for writing")
        if len(conn.pending) + len(data) > MAX_SEND_BUFFER:
            raise Failure("state", f"connection {conn.conn_id}: the peer is not reading")
        conn.pending += data
        self._flush(conn)
        return {}

    def _flush(self, conn: _Conn) -> None:
        fd = conn.sock.fileno()
        try:
            while conn.pending:
                sent = conn.sock.send(conn.pending[:READ_CHUNK])
                del conn.pending[:sent]
        except BlockingIOError:
            self.loop.add_writer(fd, lambda: self._flush(conn))
            return
        except OSError:
            conn.pending.clear()
        self.loop.remove_writer(fd)
        if conn.shut_write:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(1)  # SHUT_WR
            self._maybe_forget(conn)

    def op_close(self, rid: int, args: dict[str, Any]) -> dict[str, Any]:
        conn = self.conns.get(args["conn_id"])
        if conn is None:
            return {}
        if args.get("abort"):
            self._forget(conn)
            return {}
        conn.shut_write = True
        if not conn.pending:
            self._flush(conn)
        return {}

    def _maybe_forget(self, conn: _Conn) -> None:
        if conn.read_done and conn.shut_write and not conn.pending:
            self._forget(conn)

    def _forget(self, conn: _Conn) -> None:
        fd = conn.sock.fileno()
        if fd >= 0:
            self.loop.remove_reader(fd)
            self.loop.remove_writer(fd)
        conn.sock.close()
        self.conns.pop(conn.conn_id, None)

    def close_all(self) -> None:
        for conn in list(self.conns.values()):
            self._forget(conn)
