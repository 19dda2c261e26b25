"""Protocol errors of the sans-I/O streaming code, after h11's ``_util.py``.

:class:`LocalProtocolError` means "you asked for something illegal" (a bug
in the caller); :class:`RemoteProtocolError` means "the peer sent something
illegal". Inside the protocol code only Local is raised; the one entry point
for peer data (``next_event``) re-raises it as Remote.
"""

from __future__ import annotations

__all__ = ["LocalProtocolError", "ProtocolError", "RemoteProtocolError"]


class ProtocolError(Exception):
    """Abstract base: raise one of the two subclasses.

    ``stream_id`` names the SPDY stream at fault, 0 when the whole connection
    is (then the connection is unusable and should be ended with GOAWAY).
    ``code`` is the SPDY status to report: an RST_STREAM status for a stream
    error, a GOAWAY status for a session error; protocols without such codes
    leave it 0.
    """

    def __init__(self, msg: str, *, stream_id: int = 0, code: int = 0) -> None:
        if type(self) is ProtocolError:
            raise TypeError("tried to directly instantiate ProtocolError")
        super().__init__(msg)
        self.stream_id = stream_id
        self.code = code


class LocalProtocolError(ProtocolError):
    """The caller asked the protocol code to do something the protocol forbids."""

    def _reraise_as_remote(self) -> RemoteProtocolError:
        return RemoteProtocolError(str(self), stream_id=self.stream_id, code=self.code)


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol forbids."""
