"""The streaming server for Exec, Attach and PortForward: SPDY/3.1 and WebSocket.

The protocol modules (:mod:`crio.streaming.spdy`, :mod:`crio.streaming.websocket`,
:mod:`crio.streaming.handshake`, :mod:`crio.streaming.remotecommand`,
:mod:`crio.streaming.tokens`) are sans-I/O: bytes in, events out. The asyncio
side is the server and its session drivers.
"""
