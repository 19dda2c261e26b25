"""The one error hierarchy of crio.

Every error crio raises on purpose is a :class:`CrioError`. The gRPC layer
maps each class to one status code (``crio.server.status``) and kpod maps
them to exit codes; nothing below the server layer knows about gRPC.
Messages name the object and its id, and the field when input is at fault.
"""

from __future__ import annotations

__all__ = [
    "AlreadyExistsError",
    "ConfigError",
    "CrioError",
    "DeadlineExceededError",
    "InvalidRequestError",
    "NotFoundError",
    "OCIRuntimeError",
    "PermissionDeniedError",
    "PluginError",
    "ResourceExhaustedError",
    "StorageError",
    "UnavailableError",
    "UnsupportedError",
    "WrongStateError",
]


class CrioError(Exception):
    """Every error crio raises on purpose."""


class NotFoundError(CrioError):
    """The named object does not exist (NOT_FOUND)."""


class AlreadyExistsError(CrioError):
    """The name is already reserved by another object (ALREADY_EXISTS)."""


class InvalidRequestError(CrioError):
    """The request is malformed; the message names the field (INVALID_ARGUMENT)."""


class WrongStateError(CrioError):
    """The object exists but is in the wrong state for this call (FAILED_PRECONDITION)."""


class PermissionDeniedError(CrioError):
    """Refused by a rule or an authority: a blocked registry, the signature policy,
    a registry's authentication (PERMISSION_DENIED)."""


class UnsupportedError(CrioError):
    """crio does not do this, or not with this plugin (UNIMPLEMENTED)."""


class ResourceExhaustedError(CrioError):
    """A limit was reached: too many pending streams, no space (RESOURCE_EXHAUSTED)."""


class UnavailableError(CrioError):
    """A needed component is not ready yet, e.g. no network config (UNAVAILABLE)."""


class DeadlineExceededError(CrioError):
    """An operation ran out of its time, e.g. ExecSync's timeout (DEADLINE_EXCEEDED)."""


class OCIRuntimeError(CrioError):
    """The OCI runtime or its monitor failed; the message carries their stderr (INTERNAL)."""


class StorageError(CrioError):
    """The image and layer store failed or found itself inconsistent (INTERNAL)."""


class PluginError(CrioError):
    """A plugin failed to load, validate or answer (INTERNAL at run time)."""


class ConfigError(CrioError):
    """The configuration is invalid.

    ``str()`` is the one line crio prints before exiting with status 1:
    the file, the ``table.key``, what was given and what is expected.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        key: str | None = None,
    ) -> None:
        self.file = file
        self.key = key
        self.detail = message
        parts = [p for p in (file, key) if p]
        super().__init__(": ".join([*parts, message]))
