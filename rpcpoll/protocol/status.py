"""Status codes and the RPC error hierarchy, modelled on gRPC's.

Codes travel on the wire as their integer values, so they are fixed forever; the numbers are
gRPC's, which makes logs and dashboards read the same across both stacks.
"""

from __future__ import annotations

import enum
from typing import ClassVar

__all__ = [
    "AbortedError",
    "AlreadyExistsError",
    "CancelledError",
    "DataLossError",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "InternalError",
    "InvalidArgumentError",
    "NotFoundError",
    "OutOfRangeError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "RpcError",
    "StatusCode",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "UnknownError",
    "error_class",
]


class StatusCode(enum.IntEnum):
    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class RpcError(Exception):
    """The root of every error a call can end with: a status code and a message.

    `RpcError(code, message)` builds the subclass registered for `code` when there is one, so
    `except UnavailableError` catches an UNAVAILABLE error however it was constructed. A handler
    raising an RpcError sends its code and message to the caller.
    """

    code: StatusCode = StatusCode.UNKNOWN
    _by_code: ClassVar[dict[StatusCode, type[RpcError]]] = {}

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "code" in cls.__dict__:
            RpcError._by_code.setdefault(cls.code, cls)

    def __new__(cls, *args: object, **kwargs: object) -> RpcError:
        if cls is RpcError and args:
            try:
                code = StatusCode(args[0])  # type: ignore[arg-type]
            except ValueError:
                code = StatusCode.UNKNOWN
            cls = RpcError._by_code.get(code, RpcError)
        return super().__new__(cls)

    def __init__(self, code: int | StatusCode | None = None, message: str = "") -> None:
        if isinstance(code, str) and not message:  # SomeSubclass("message")
            code, message = None, code
        if code is None:
            resolved = type(self).code
        else:
            try:
                resolved = StatusCode(code)
            except ValueError:
                resolved = StatusCode.UNKNOWN
        self.code = resolved
        self.message = message
        super().__init__(resolved, message)

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}" if self.message else self.code.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code.name}, {self.message!r})"

    def __reduce__(self) -> tuple[object, ...]:
        return (RpcError, (int(self.code), self.message))


class CancelledError(RpcError):
    code = StatusCode.CANCELLED


class UnknownError(RpcError):
    code = StatusCode.UNKNOWN


class InvalidArgumentError(RpcError):
    code = StatusCode.INVALID_ARGUMENT


class DeadlineExceededError(RpcError, TimeoutError):
    code = StatusCode.DEADLINE_EXCEEDED


class NotFoundError(RpcError):
    code = StatusCode.NOT_FOUND


class AlreadyExistsError(RpcError):
    code = StatusCode.ALREADY_EXISTS


class PermissionDeniedError(RpcError):
    code = StatusCode.PERMISSION_DENIED


class ResourceExhaustedError(RpcError):
    code = StatusCode.RESOURCE_EXHAUSTED


class FailedPreconditionError(RpcError):
    code = StatusCode.FAILED_PRECONDITION


class AbortedError(RpcError):
    code = StatusCode.ABORTED


class OutOfRangeError(RpcError):
    code = StatusCode.OUT_OF_RANGE


class UnimplementedError(RpcError, NotImplementedError):
    code = StatusCode.UNIMPLEMENTED


class InternalError(RpcError):
    code = StatusCode.INTERNAL


class UnavailableError(RpcError, ConnectionError):
    code = StatusCode.UNAVAILABLE


class DataLossError(RpcError):
    code = StatusCode.DATA_LOSS


class UnauthenticatedError(RpcError):
    code = StatusCode.UNAUTHENTICATED


def error_class(code: int | StatusCode) -> type[RpcError]:
    """The RpcError subclass for `code`: what `RpcError(code, message)` builds and a client
    raises for an error reply (UnknownError for a number outside StatusCode, RpcError for OK)."""
    try:
        resolved = StatusCode(code)
    except ValueError:
        resolved = StatusCode.UNKNOWN
    return RpcError._by_code.get(resolved, RpcError)
