"""``kpod start``, ``stop``, ``kill``, ``rm``, ``wait``, ``pause`` and ``unpause``.

``start``, ``stop`` and ``rm`` change crio's records: they go through the
running crio (CRI) or, with none running, through crio's own handlers under
its owner lock (see :mod:`crio.kpod.node`). ``kill``, ``pause``, ``unpause``
and ``wait`` act on (or watch) the container's processes through its
runtime plugin and change no record.

Every command takes several containers; one that fails is reported on
stderr and the others go on (exit status 1 if any failed), as in Docker.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from typing import Any


def _names(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("containers", nargs="+", metavar="CONTAINER")


def register(sub: Any) -> None:
    start = sub.add_parser(
        "start",
        help="start created containers",
        description="Start containers crio created and never started (CRI containers are not "
        "restarted once they exited). With --attach, print the container's output until it "
        "exits and exit with its code.",
    )
    _names(start)
    start.add_argument(
        "-a", "--attach", action="store_true", help="print its output; exit with its code"
    )
    start.set_defaults(func=run_start)
    stop = sub.add_parser(
        "stop",
        help="stop running containers",
        description="Send each container its stop signal, then SIGKILL after the timeout.",
    )
    _names(stop)
    stop.add_argument(
        "-t", "--time", type=int, default=10, metavar="SECONDS", help="wait before SIGKILL"
    )
    stop.set_defaults(func=run_stop)
    kill = sub.add_parser(
        "kill",
        help="send a signal to running containers",
        description="Send a signal to each container's main process.",
    )
    _names(kill)
    kill.add_argument("-s", "--signal", default="KILL", help="signal name or number (KILL)")
    kill.set_defaults(func=run_kill)
    rm = sub.add_parser(
        "rm",
        help="remove containers",
        description="Remove stopped containers, their writable layers and crio's records.",
    )
    _names(rm)
    rm.add_argument("-f", "--force", action="store_true", help="kill and remove running ones")
    rm.set_defaults(func=run_rm)
    wait = sub.add_parser(
        "wait",
        help="wait for containers to exit and print their exit codes",
        description="Block until each container exits, print its exit code, and exit with the "
        "last one's.",
    )
    _names(wait)
    wait.set_defaults(func=run_wait)
    for name, verb in (("pause", "freeze"), ("unpause", "thaw")):
        parser = sub.add_parser(
            name,
            help=f"{verb} every process of containers",
            description=f"{verb.capitalize()} every process of each container (cgroup freezer). "
            "CRI still reports a paused container as running.",
        )
        _names(parser)
        parser.set_defaults(func=run_pause if name == "pause" else run_unpause)


async def _each(
    ctx: Any, names: list[str], act: Callable[[Any], Awaitable[None]], echo: bool = True
) -> int:
    """Run ``act(record)`` per named container; report failures and go on."""
    from crio.errors import CrioError
    from crio.kpod.cli import exit_code

    node = ctx.node()
    failed = 0
    for name in names:
        try:
            ctr = await node.container(name)
            await act(ctr)
        except CrioError as exc:
            print(f"kpod: {exc}", file=sys.stderr)
            failed = max(failed, exit_code(exc))
            continue
        if echo:
            print(name)
    return failed


async def _with_changer(ctx: Any, use: Callable[[Any], Awaitable[int]]) -> int:
    from crio.kpod.node import changer

    change = await changer(ctx.node())
    try:
        return await use(change)
    finally:
        await change.close()


async def run_stop(args: argparse.Namespace, ctx: Any) -> int:
    if args.time < 0:
        from crio.kpod.common import UsageError

        raise UsageError(f"--time {args.time}: must not be negative")

    async def use(change: Any) -> int:
        return await _each(
            ctx, args.containers, lambda c: change.stop_container(c.container_id, args.time)
        )

    return await _with_changer(ctx, use)


async def run_rm(args: argparse.Namespace, ctx: Any) -> int:
    from crio.errors import WrongStateError
    from crio.kpod.containerview import status_of

    node = ctx.node()

    async def use(change: Any) -> int:
        async def remove(ctr: Any) -> None:
            status = status_of(ctr, await node.live(ctr))
            if status.state in ("running", "paused") and not args.force:
                raise WrongStateError(
                    f"container {ctr.container_id} is {status.state}: stop it first or use -f"
                )
            await change.remove_container(ctr.container_id)

        return await _each(ctx, args.containers, remove)

    return await _with_changer(ctx, use)


async def run_start(args: argparse.Namespace, ctx: Any) -> int:
    from crio.errors import WrongStateError
    from crio.kpod.containerview import status_of

    node = ctx.node()

    async def use(change: Any) -> int:
        async def start(ctr: Any) -> None:
            status = status_of(ctr, await node.live(ctr))
            if status.state == "running":
                return  # as docker start: already running is fine
            if status.state != "created":
                raise WrongStateError(
                    f"container {ctr.container_id} is {status.state}: a CRI container starts once"
                )
            await change.start_container(ctr.container_id)

        return await _each(ctx, args.containers, start, echo=not args.attach)

    failed = await _with_changer(ctx, use)
    if failed or not args.attach:
        return failed
    return await _attach(ctx, args.containers[-1])


async def _attach(ctx: Any, name: str) -> int:
    """Print the container's output from its log until it exits; its exit code."""
    from crio.kpod.commands import logs

    await logs.run(
        argparse.Namespace(container=name, follow=True, since=None, tail="all", timestamps=False),
        ctx,
    )
    return await _exit_code_of(ctx, name)


async def _exit_code_of(ctx: Any, name: str) -> int:
    node = ctx.node()
    ctr = await node.container(name)
    runtime = await node.runtime(ctr.runtime_handler)
    await node.live(ctr)
    final = await runtime.wait_container(ctr.container_id)
    return final.exit_code


async def run_wait(args: argparse.Namespace, ctx: Any) -> int:
    from crio.errors import CrioError
    from crio.kpod.cli import exit_code
    from crio.state.records import ContainerState

    node = ctx.node()
    code, failed = 0, 0
    for name in args.containers:
        try:
            ctr = await node.container(name)
            if ctr.state is ContainerState.EXITED:
                code = ctr.exit_code
            else:
                code = await _exit_code_of(ctx, name)
        except CrioError as exc:
            print(f"kpod: {exc}", file=sys.stderr)
            failed = exit_code(exc)
            continue
        print(code)
    return failed or code


def _signal(text: str) -> int:
    import signal

    from crio.kpod.common import UsageError

    name = text.upper().removeprefix("SIG")
    if name.isdigit() and 0 < int(name) < signal.NSIG:
        return int(name)
    try:
        return int(signal.Signals["SIG" + name])
    except KeyError:
        raise UsageError(f"--signal {text!r}: not a signal name or number") from None


async def run_kill(args: argparse.Namespace, ctx: Any) -> int:
    signum = _signal(args.signal)
    node = ctx.node()

    async def kill(ctr: Any) -> None:
        await (await node.control(ctr)).kill_container(ctr.container_id, signum)

    return await _each(ctx, args.containers, kill)


async def run_pause(args: argparse.Namespace, ctx: Any) -> int:
    node = ctx.node()

    async def pause(ctr: Any) -> None:
        await (await node.control(ctr)).pause_container(ctr.container_id)

    return await _each(ctx, args.containers, pause)


async def run_unpause(args: argparse.Namespace, ctx: Any) -> int:
    node = ctx.node()

    async def unpause(ctr: Any) -> None:
        await (await node.control(ctr)).resume_container(ctr.container_id)

    return await _each(ctx, args.containers, unpause)
