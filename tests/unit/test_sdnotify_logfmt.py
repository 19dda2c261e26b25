"""sd_notify datagrams and the JSON log lines."""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path

import pytest

from crio import logfmt, sdnotify


def test_encode_is_newline_separated_fields() -> None:
    assert sdnotify.encode(READY=1, STATUS="serving") == b"READY=1\nSTATUS=serving"
    with pytest.raises(ValueError, match="STATUS"):
        sdnotify.encode(STATUS="two\nlines")


def test_take_socket_removes_the_variable() -> None:
    env = {"NOTIFY_SOCKET": "/run/systemd/notify", "PATH": "/bin"}
    assert sdnotify.take_socket(env) == "/run/systemd/notify"
    assert env == {"PATH": "/bin"}
    assert sdnotify.take_socket(env) == ""


@pytest.mark.parametrize("abstract", [False, True])
def test_notifier_sends_one_datagram(tmp_path: Path, abstract: bool) -> None:
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if abstract:
        name = f"crio-test-notify-{tmp_path.name}"
        receiver.bind("\0" + name)
        address = "@" + name
    else:
        address = str(tmp_path / "notify")
        receiver.bind(address)
    receiver.settimeout(5)
    with receiver:
        assert sdnotify.Notifier(address).send(READY=1, MAINPID=42)
        assert receiver.recv(4096) == b"READY=1\nMAINPID=42"


def test_notifier_without_manager_does_nothing(tmp_path: Path) -> None:
    assert not sdnotify.Notifier("").send(READY=1)
    assert not sdnotify.Notifier(str(tmp_path / "gone")).send(READY=1)


def test_json_lines_carry_the_call_fields() -> None:
    record = logging.LogRecord(
        "crio.server", logging.DEBUG, __file__, 1, "%s done", ("Version",), None
    )
    record.__dict__.update(rpc="Version", code="OK", duration=0.0012, pod="", container="c1")
    line = json.loads(logfmt.JsonFormatter().format(record))
    assert line["msg"] == "Version done" and line["level"] == "debug"
    assert line["logger"] == "crio.server" and line["time"].endswith("Z")
    assert (line["rpc"], line["code"], line["duration"], line["container"]) == (
        "Version", "OK", 0.0012, "c1",
    )  # fmt: skip
    assert "pod" not in line  # empty fields are left out


def test_text_is_the_default_format() -> None:
    record = logging.LogRecord("crio", logging.INFO, __file__, 1, "hello", (), None)
    assert logfmt.formatter("text").format(record).endswith(" INFO crio: hello")
