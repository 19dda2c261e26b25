"""The one table from crio's errors to gRPC status codes."""

from __future__ import annotations

import grpc

from crio import errors

__all__ = ["status_code"]

_CODES: tuple[tuple[type[errors.CrioError], grpc.StatusCode], ...] = (
    (errors.NotFoundError, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExistsError, grpc.StatusCode.ALREADY_EXISTS),
    (errors.InvalidRequestError, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.ConfigError, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.WrongStateError, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.UnsupportedError, grpc.StatusCode.UNIMPLEMENTED),
    (errors.PermissionDeniedError, grpc.StatusCode.PERMISSION_DENIED),
    (errors.ResourceExhaustedError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.UnavailableError, grpc.StatusCode.UNAVAILABLE),
    (errors.DeadlineExceededError, grpc.StatusCode.DEADLINE_EXCEEDED),
    (errors.OCIRuntimeError, grpc.StatusCode.INTERNAL),
    (errors.StorageError, grpc.StatusCode.INTERNAL),
    (errors.PluginError, grpc.StatusCode.INTERNAL),
)


def status_code(exc: errors.CrioError) -> grpc.StatusCode:
    """The status code for one of crio's errors (the most specific class wins)."""
    for cls in type(exc).__mro__:
        for known, code in _CODES:
            if cls is known:
                return code
    return grpc.StatusCode.INTERNAL
