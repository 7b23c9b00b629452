"""rpcpoll: a high-performance RPC framework for Python, after ByteDance's netpoll and Kitex."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .middleware import ClientCallContext, Middleware
from .protocol.status import (
    AbortedError,
    AlreadyExistsError,
    CancelledError,
    DataLossError,
    DeadlineExceededError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    OutOfRangeError,
    PermissionDeniedError,
    ResourceExhaustedError,
    RpcError,
    StatusCode,
    UnauthenticatedError,
    UnavailableError,
    UnimplementedError,
    UnknownError,
    error_class,
)

if TYPE_CHECKING:
    from .server.server import Server

__all__ = [
    "AbortedError",
    "AlreadyExistsError",
    "CancelledError",
    "ClientCallContext",
    "DataLossError",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "InternalError",
    "InvalidArgumentError",
    "Middleware",
    "NotFoundError",
    "OutOfRangeError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "RpcError",
    "Server",
    "StatusCode",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "UnknownError",
    "__version__",
    "error_class",
]


def __getattr__(name: str) -> Any:
    # `rpcpoll.Server` is imported on first use: generated modules import `rpcpoll` for its
    # error classes, and a client process should not load the server runtime with them.
    if name == "Server":
        from .server.server import Server

        return Server
    raise AttributeError(f"module 'rpcpoll' has no attribute {name!r}")
