"""The gRPC face of the CRI handlers.

Method handlers are built from the proto's service descriptors, so every RPC
of ``runtime.v1`` is served: those with a handler call it, the rest answer
UNIMPLEMENTED. Each call is wrapped once here: request decoding errors and
:class:`~crio.errors.CrioError` become status codes, anything else is a bug
answered INTERNAL with its traceback in the log, and every call is logged
with its duration at debug level.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import DecodeError, Message

from crio.api import api_pb2 as api
from crio.errors import CrioError
from crio.server.status import status_code

if TYPE_CHECKING:
    from crio.server.deps import Deps

__all__ = ["SERVICES", "Handler", "LazyHandler", "StreamHandler", "generic_handlers", "subject"]

log = logging.getLogger("crio.server")

Handler = Callable[["Deps", Any], Awaitable[Message]]
StreamHandler = Callable[["Deps", Any], AsyncIterator[Message]]


class LazyHandler:
    """A handler named ``package.module:function``, imported on its first call.

    Calling it calls the function (a coroutine or an async iterator, as the
    function returns). An import error is a bug in crio and surfaces as one.
    """

    __slots__ = ("_function", "target")

    def __init__(self, target: str) -> None:
        self.target = target
        self._function: Callable[..., Any] | None = None

    def resolve(self) -> Callable[..., Any]:
        if self._function is None:
            module, _, name = self.target.partition(":")
            self._function = getattr(importlib.import_module(module), name)
        return self._function

    def __call__(self, deps: Deps, request: Any) -> Any:
        return self.resolve()(deps, request)

    def __repr__(self) -> str:
        return f"LazyHandler({self.target!r})"


SERVICES = ("RuntimeService", "ImageService")


class _Undecodable:
    """Stands in for a request whose bytes are not a valid message."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _decoder(cls: type[Message]) -> Callable[[bytes], Any]:
    def decode(data: bytes) -> Any:
        try:
            return cls.FromString(data)
        except (DecodeError, ValueError, RuntimeError) as exc:
            return _Undecodable(exc)

    return decode


def subject(request: Any) -> str:
    """The object a request is about, for log lines: "container ID", "pod sandbox NS/NAME"."""
    for field, kind in (("container_id", "container"), ("pod_sandbox_id", "pod sandbox")):
        value = getattr(request, field, "")
        if isinstance(value, str) and value:
            return f"{kind} {value[:64]}"
    meta = getattr(getattr(request, "config", None), "metadata", None)
    name = getattr(meta, "name", "")
    if isinstance(name, str) and name:
        namespace = getattr(meta, "namespace", None)
        if isinstance(namespace, str):  # a PodSandboxMetadata
            return f"pod sandbox {namespace[:64]}/{name[:64]}"
        return f"container {name[:64]}"
    image = getattr(getattr(request, "image", None), "image", "")
    if isinstance(image, str) and image:
        return f"image {image[:200]}"
    return ""


def fields(rpc: str, request: Any) -> dict[str, str]:
    """The structured log fields of a call (see :mod:`crio.logfmt`)."""
    found = {"rpc": rpc}
    for attr, name in (("pod_sandbox_id", "pod"), ("container_id", "container")):
        value = getattr(request, attr, "")
        if isinstance(value, str) and value:
            found[name] = value[:64]
    return found


async def _fail(
    context: grpc.aio.ServicerContext, rpc: str, exc: Exception, request: Any = None
) -> None:
    about = subject(request)
    what = f"{rpc} ({about})" if about else rpc
    extra = fields(rpc, request)
    if isinstance(exc, CrioError):
        code = status_code(exc)
        level = logging.ERROR if code is grpc.StatusCode.INTERNAL else logging.INFO
        log.log(
            level, "%s failed: %s: %s", what, code.name, exc, extra={**extra, "code": code.name}
        )
        await context.abort(code, str(exc))
    log.error("%s failed with an unexpected error: %s: %s", what, type(exc).__name__, exc,
              exc_info=exc, extra={**extra, "code": "INTERNAL"})  # fmt: skip
    await context.abort(
        grpc.StatusCode.INTERNAL, f"{rpc}: internal error: {type(exc).__name__}: {exc}"
    )


def _failure_code(exc: Exception) -> str:
    return status_code(exc).name if isinstance(exc, CrioError) else "INTERNAL"


def _unary(rpc: str, deps: Deps, handler: Handler | None) -> Callable[..., Awaitable[Message]]:
    async def call(request: Any, context: grpc.aio.ServicerContext) -> Message:
        started = time.perf_counter()
        done = False

        def finish(code: str) -> None:
            # Recorded before the answer leaves: a client that reads metrics after
            # its call returned finds the call counted.
            nonlocal done
            done = True
            seconds = time.perf_counter() - started
            deps.metrics.rpc_done(rpc, code, seconds)
            if log.isEnabledFor(logging.DEBUG):
                extra = {**fields(rpc, request), "code": code, "duration": round(seconds, 6)}
                log.debug("%s done in %.2f ms (%s)", rpc, seconds * 1000, code, extra=extra)

        try:
            if isinstance(request, _Undecodable):
                finish("INVALID_ARGUMENT")
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"{rpc}: request is not a valid message: {request.error}",
                )
            if handler is None:
                finish("UNIMPLEMENTED")
                await context.abort(
                    grpc.StatusCode.UNIMPLEMENTED, f"{rpc} is not implemented by crio"
                )
            try:
                response = await handler(deps, request)
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                finish(_failure_code(exc))
                await _fail(context, rpc, exc, request)
                raise  # unreachable: abort raised
            finish("OK")
            return response
        finally:
            if not done:  # cancelled by the client or by shutdown
                finish("CANCELLED")

    return call


def _stream(
    rpc: str, deps: Deps, handler: StreamHandler | None
) -> Callable[..., AsyncIterator[Message]]:
    async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Message]:
        log.debug("%s opened", rpc)
        if isinstance(request, _Undecodable):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{rpc}: request is not a valid message: {request.error}",
            )
        if handler is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{rpc} is not implemented by crio")
        try:
            async for message in handler(deps, request):
                yield message
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _fail(context, rpc, exc, request)
        finally:
            log.debug("%s closed", rpc)

    return call


def generic_handlers(
    deps: Deps, handlers: Mapping[str, Handler | StreamHandler]
) -> list[grpc.GenericRpcHandler]:
    """One generic handler per CRI service, covering every RPC of the proto."""
    known = {m.name for s in SERVICES for m in api.DESCRIPTOR.services_by_name[s].methods}
    unknown = set(handlers) - known
    if unknown:
        raise ValueError(f"handlers for RPCs the proto does not have: {sorted(unknown)}")
    result = []
    for service_name in SERVICES:
        service = api.DESCRIPTOR.services_by_name[service_name]
        methods = {}
        for method in service.methods:
            request_cls = getattr(api, method.input_type.name)
            response_cls = getattr(api, method.output_type.name)
            handler = handlers.get(method.name)
            if method.server_streaming:
                methods[method.name] = grpc.unary_stream_rpc_method_handler(
                    _stream(method.name, deps, handler),  # type: ignore[arg-type]
                    request_deserializer=_decoder(request_cls),
                    response_serializer=response_cls.SerializeToString,
                )
            else:
                methods[method.name] = grpc.unary_unary_rpc_method_handler(
                    _unary(method.name, deps, handler),  # type: ignore[arg-type]
                    request_deserializer=_decoder(request_cls),
                    response_serializer=response_cls.SerializeToString,
                )
        result.append(grpc.method_handlers_generic_handler(service.full_name, methods))
    return result
