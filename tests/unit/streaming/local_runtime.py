"""LocalProcessRuntimeForTests: a test double shaped like the Runtime's streaming methods.

It exists because the unit tests run without root, where no real container
can start: its "containers" are ordinary local processes, its pod network
is the host's loopback. The real path (runc/crun under conmon) is tested in
tests/integration/streaming with the same client code.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import struct
import termios
from collections.abc import Sequence
from typing import Any

from crio.errors import NotFoundError
from crio.oci.runtime import StreamIO

__all__ = ["LocalProcessRuntimeForTests"]


class LocalProcessRuntimeForTests:
    """exec runs the command here; attach joins a process started by :meth:`add_container`."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.killed: list[int] = []
        self.containers: dict[str, asyncio.subprocess.Process] = {}
        self._attached: dict[str, list[StreamIO]] = {}

    async def exec(self, container_id: str, command: Sequence[str], io: StreamIO) -> int:
        if container_id == "gone":
            raise NotFoundError(f"container {container_id} not found")
        if io.tty:
            return await self._exec_tty(command, io)
        proc = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.PIPE if io.stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        self.started.append(proc.pid)
        assert proc.stdout is not None and proc.stderr is not None
        pumps = [
            asyncio.create_task(_pump(proc.stdout, io.write_stdout)),
            asyncio.create_task(_pump(proc.stderr, io.write_stderr)),
        ]
        feeder = None
        if io.stdin is not None:
            feeder = asyncio.create_task(_feed(io.stdin, proc.stdin))
        try:
            await asyncio.gather(*pumps)
            return await proc.wait()
        except asyncio.CancelledError:
            proc.kill()
            await proc.wait()
            self.killed.append(proc.pid)
            raise
        finally:
            for task in [*pumps, feeder]:
                if task is not None:
                    task.cancel()

    async def _exec_tty(self, command: Sequence[str], io: StreamIO) -> int:
        master, slave = os.openpty()
        proc = await asyncio.create_subprocess_exec(
            *command, stdin=slave, stdout=slave, stderr=slave, start_new_session=True
        )
        os.close(slave)
        self.started.append(proc.pid)
        loop = asyncio.get_running_loop()
        out: asyncio.Queue[bytes] = asyncio.Queue()

        def readable() -> None:
            try:
                out.put_nowait(os.read(master, 65536))
            except OSError:  # EIO once the last slave fd is closed
                loop.remove_reader(master)
                out.put_nowait(b"")

        loop.add_reader(master, readable)
        tasks = []
        if io.resize is not None:
            tasks.append(asyncio.create_task(_resize(io.resize, master)))
        if io.stdin is not None:
            tasks.append(asyncio.create_task(_feed_fd(io.stdin, master)))
        try:
            while chunk := await out.get():
                await io.write_stdout(chunk)
            return await proc.wait()
        except asyncio.CancelledError:
            proc.kill()
            await proc.wait()
            self.killed.append(proc.pid)
            raise
        finally:
            loop.remove_reader(master)
            for task in tasks:
                task.cancel()
            os.close(master)

    async def add_container(self, container_id: str, command: Sequence[str]) -> None:
        proc = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        self.containers[container_id] = proc
        self._attached[container_id] = []
        assert proc.stdout is not None
        asyncio.get_running_loop().create_task(self._fan_out(container_id, proc.stdout))

    async def _fan_out(self, container_id: str, stdout: asyncio.StreamReader) -> None:
        while chunk := await stdout.read(65536):
            for io in list(self._attached[container_id]):
                with contextlib.suppress(ConnectionError):
                    await io.write_stdout(chunk)

    async def attach(self, container_id: str, io: StreamIO) -> None:
        proc = self.containers.get(container_id)
        if proc is None:
            raise NotFoundError(f"container {container_id} not found")
        self._attached[container_id].append(io)
        try:
            if io.stdin is not None:
                await _feed(io.stdin, proc.stdin, close=False)
            await proc.wait()
        finally:
            self._attached[container_id].remove(io)

    async def port_forward(self, pod_sandbox_id: str, port: int) -> tuple[Any, Any]:
        if pod_sandbox_id == "gone":
            raise NotFoundError(f"pod sandbox {pod_sandbox_id} not found")
        return await asyncio.open_connection("127.0.0.1", port)

    async def close(self) -> None:
        for proc in self.containers.values():
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def _pump(reader: asyncio.StreamReader, write: Any) -> None:
    while chunk := await reader.read(65536):
        await write(chunk)


async def _feed(stdin: Any, writer: asyncio.StreamWriter | None, close: bool = True) -> None:
    assert writer is not None
    async for chunk in stdin:
        writer.write(chunk)
        await writer.drain()
    if close:
        writer.close()


async def _feed_fd(stdin: Any, fd: int) -> None:
    async for chunk in stdin:
        os.write(fd, chunk)


async def _resize(sizes: Any, fd: int) -> None:
    async for width, height in sizes:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))
