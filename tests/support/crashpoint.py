"""Crash points: a real binary behind a wrapper that stops at one call, so crio dies right there."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from support.node import Node

__all__ = ["Hold", "crash", "in_background"]


@dataclass
class Hold:
    """``real`` behind a shell wrapper that, once armed, stops at the first call naming a word.

    The wrapper execs the real binary; it only waits (until :meth:`release`)
    before going on, so that a test can kill crio while the call is in the
    middle of it. The word is matched against the arguments and ``CNI_COMMAND``.
    """

    directory: Path
    real: str
    name: str = ""

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.name = self.name or f"hold-{os.path.basename(self.real)}"
        self.path = self.directory / self.name
        token = secrets.token_hex(3)
        self.armed = self.directory / f"armed-{token}"
        self.reached = self.directory / f"reached-{token}"
        self.released = self.directory / f"released-{token}"
        self.path.write_text(
            "#!/bin/sh\n"
            f'word=$(cat "{self.armed}" 2>/dev/null)\n'
            'if [ -n "$word" ]; then\n'
            '  case " $* $CNI_COMMAND " in *" $word "*)\n'
            f'    if rm "{self.armed}" 2>/dev/null; then\n'
            f'      touch "{self.reached}"\n'
            f'      while [ ! -e "{self.released}" ]; do sleep 0.01; done\n'
            "    fi;;\n"
            "  esac\n"
            "fi\n"
            f'exec "{self.real}" "$@"\n'
        )
        self.path.chmod(0o755)

    def arm(self, word: str) -> None:
        self.released.unlink(missing_ok=True)
        self.reached.unlink(missing_ok=True)
        self.armed.write_text(word)

    def wait_reached(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.reached.exists():
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} was not called as armed")
            time.sleep(0.01)

    def release(self) -> None:
        self.released.touch()


def in_background(call: Callable[[], Any]) -> threading.Thread:
    """Run a CRI call that crio will not live to answer; its error is expected and dropped."""

    def body() -> None:
        with contextlib.suppress(grpc.RpcError):
            call()

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread


def crash(
    node: Node,
    hold: Hold,
    word: str,
    call: Callable[[], Any],
    between: Callable[[], None] | None = None,
) -> None:
    """Start ``call``; when it reaches ``word`` in ``hold``, kill crio, let the held binary
    go on (crio is gone by then), call ``between``, and start crio again."""
    hold.arm(word)
    thread = in_background(call)
    hold.wait_reached()

    def after_kill() -> None:
        hold.release()
        thread.join(30)
        if between is not None:
            between()

    node.restart(signal.SIGKILL, between=after_kill)
