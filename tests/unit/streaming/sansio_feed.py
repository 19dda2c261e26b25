"""Feeding helpers for the sans-I/O protocol tests: every case runs whole and byte by byte."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from crio.streaming.spdy import NEED_DATA, ConnectionClosed, SpdyConnection


def drain(conn: SpdyConnection) -> list[Any]:
    events: list[Any] = []
    while True:
        event = conn.next_event()
        if event is NEED_DATA or isinstance(event, ConnectionClosed):
            if isinstance(event, ConnectionClosed):
                events.append(event)
            return events
        events.append(event)


def feed_whole(conn: SpdyConnection, data: bytes) -> list[Any]:
    conn.receive_data(data)
    return drain(conn)


def feed_bytewise(conn: SpdyConnection, data: bytes) -> list[Any]:
    events: list[Any] = []
    for index in range(len(data)):
        conn.receive_data(data[index : index + 1])
        events += drain(conn)
    return events


Feed = Callable[[SpdyConnection, bytes], list[Any]]
