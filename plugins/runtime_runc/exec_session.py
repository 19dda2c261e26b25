"""Streaming exec in a runc-compatible container: ``RUNTIME exec`` in the foreground.

Without a tty the process gets pipes: stdin (when the client sends any),
stdout and stderr, copied to and from the client. With a tty the runtime
runs on a pseudo-terminal that crio owns: ``runc exec --tty`` in the
foreground makes the container's console and copies between it and its own
stdio, so crio reads and writes the master side. A resize sets the size on
that master (TIOCSWINSZ) and sends SIGWINCH to the runtime, which copies the
size to the container's console.

Why not ``--console-socket``: runc refuses it unless the exec is detached
(``-d``), and a detached process is no longer the runtime's child, so its
exit code is lost unless a subreaper (containerd's shim, conmon) waits for
it. In the foreground the runtime's exit status is the process's.

The exec'd process is killed (SIGKILL to the pid from ``--pid-file``) when
the session is cancelled, i.e. when the client goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import struct
import tempfile
import termios
import tty
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from crio.errors import OCIRuntimeError
from crio.oci.runtime import StreamIO

__all__ = ["exec_in_container"]

log = logging.getLogger("crio.runtime.runc")

#: After the process exits, how long its output may still take to drain
#: (a background child can hold the pipes open forever).
DRAIN_GRACE = 2.0
READ_CHUNK = 64 * 1024


async def exec_in_container(
    runtime_path: str,
    runtime_root: str,
    container_id: str,
    command: Sequence[str],
    io: StreamIO,
    *,
    process: Mapping[str, Any] | None = None,
) -> int:
    """Run ``command`` in the running container, attached to ``io``.

    :param process: the container's OCI ``process`` object; when given, the
        exec runs with its env, cwd, user and capabilities (``--process``),
        else the runtime's defaults for exec apply.
    :returns: the process's exit code (runc answers 255 for its own failures).
    :raises OCIRuntimeError: the runtime could not be started.
    """
    if not command:
        raise OCIRuntimeError(f"exec in container {container_id}: the command is empty")
    work = Path(tempfile.mkdtemp(prefix="crio-exec-"))
    try:
        pid_file = work / "pid"
        args = [runtime_path, "--root", runtime_root, "exec", "--pid-file", str(pid_file)]
        if io.tty:
            args.append("--tty")
        if process is not None:
            spec = {**process, "args": list(command), "terminal": io.tty}
            (work / "process.json").write_text(json.dumps(spec))
            args += ["--process", str(work / "process.json"), container_id]
        else:
            args += [container_id, *command]
        run = _run_tty if io.tty else _run_pipes
        return await run(args, io, pid_file)
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def _spawn(args: list[str], **kwargs: Any) -> asyncio.subprocess.Process:
    try:
        return await asyncio.create_subprocess_exec(*args, **kwargs)
    except OSError as exc:
        raise OCIRuntimeError(f"cannot run {args[0]}: {exc}") from exc


async def _run_pipes(args: list[str], io: StreamIO, pid_file: Path) -> int:
    proc = await _spawn(
        args,
        stdin=asyncio.subprocess.PIPE if io.stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    stdout, stderr = proc.stdout, proc.stderr
    pumps = [
        asyncio.create_task(_copy_out(lambda: stdout.read(READ_CHUNK), io.write_stdout)),
        asyncio.create_task(_copy_out(lambda: stderr.read(READ_CHUNK), io.write_stderr)),
    ]
    feeder = None
    if io.stdin is not None and proc.stdin is not None:
        feeder = asyncio.create_task(_copy_in_pipe(io, proc.stdin))
    return await _supervise(proc, pid_file, pumps, [feeder] if feeder else [])


async def _run_tty(args: list[str], io: StreamIO, pid_file: Path) -> int:
    master, slave = os.openpty()
    try:
        # The container's own console does the line discipline; this outer
        # terminal must pass bytes through untouched (no echo, no ^D as EOF).
        tty.setraw(slave)
        os.set_blocking(master, False)
        proc = await _spawn(args, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[bytes] = asyncio.Queue(maxsize=16)
    state = {"reading": True, "eof": False}

    def readable() -> None:
        try:
            data = os.read(master, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:  # EIO: every slave fd is closed
            data = b""
        if not data:
            state["eof"] = True
        chunks.put_nowait(data)
        if chunks.full() or state["eof"]:
            loop.remove_reader(master)  # resumed by read() once the client caught up
            state["reading"] = False

    async def read() -> bytes:
        data = await chunks.get()
        if not state["reading"] and not state["eof"]:
            loop.add_reader(master, readable)
            state["reading"] = True
        return data

    loop.add_reader(master, readable)
    helpers = []
    if io.stdin is not None:
        helpers.append(asyncio.create_task(_copy_in_fd(io, master)))
    if io.resize is not None:
        helpers.append(asyncio.create_task(_apply_resizes(io, master, proc)))
    pumps = [asyncio.create_task(_copy_out(read, io.write_stdout))]
    try:
        return await _supervise(proc, pid_file, pumps, helpers)
    finally:
        loop.remove_reader(master)
        os.close(master)


async def _supervise(
    proc: asyncio.subprocess.Process,
    pid_file: Path,
    pumps: list[asyncio.Task[None]],
    helpers: list[asyncio.Task[None]],
) -> int:
    """Wait for the runtime and the output; kill the process if we are cancelled."""
    try:
        code = await proc.wait()
        _done, pending = await asyncio.wait(pumps, timeout=DRAIN_GRACE)
        if pending:
            log.debug("exec: output still open %.0fs after the process exited", DRAIN_GRACE)
        for pump in _done:
            error = pump.exception()
            if error is not None:
                raise error
        return code
    except BaseException:
        _kill(proc, pid_file)
        with contextlib.suppress(BaseException):
            await asyncio.shield(proc.wait())
        raise
    finally:
        for task in [*pumps, *helpers]:
            task.cancel()
        for task in [*pumps, *helpers]:
            with contextlib.suppress(BaseException):
                await task


def _kill(proc: asyncio.subprocess.Process, pid_file: Path) -> None:
    """SIGKILL the exec'd process; while the runtime lives the pid cannot be reused."""
    if proc.returncode is not None:
        return
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        pid = 0
    with contextlib.suppress(ProcessLookupError):
        if pid > 0:
            os.kill(pid, signal.SIGKILL)
        else:  # not started yet: stop the runtime before it starts anything
            proc.kill()


async def _copy_out(
    read: Callable[[], Awaitable[bytes]], write: Callable[[bytes], Awaitable[None]]
) -> None:
    while data := await read():
        await write(data)


async def _copy_in_pipe(io: StreamIO, writer: asyncio.StreamWriter) -> None:
    assert io.stdin is not None
    try:
        async for chunk in io.stdin:
            writer.write(chunk)
            await writer.drain()
    except (BrokenPipeError, ConnectionResetError):
        return  # the process closed its stdin
    finally:
        writer.close()


async def _copy_in_fd(io: StreamIO, fd: int) -> None:
    assert io.stdin is not None
    loop = asyncio.get_running_loop()
    async for chunk in io.stdin:
        view = memoryview(chunk)
        while view:
            try:
                written = os.write(fd, view)
            except BlockingIOError:
                ready = loop.create_future()
                loop.add_writer(fd, ready.set_result, None)
                try:
                    await ready
                finally:
                    loop.remove_writer(fd)
                continue
            view = view[written:]


async def _apply_resizes(io: StreamIO, master: int, proc: asyncio.subprocess.Process) -> None:
    assert io.resize is not None
    async for width, height in io.resize:
        log.debug("exec: resize to %dx%d", width, height)
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGWINCH)
