r"""`AccessLog`: one log line per call, on the logger "rpcpoll.access" at INFO.

    peer=127.0.0.1:50122 rpc=echo.EchoService/Echo status=OK duration_ms=0.184 \
        request_bytes=140 response_bytes=140

(one line, wrapped here; logfmt `key=value` pairs; a stream adds `requests=N responses=N`,
its sizes being totals). The same values are on the log record as attributes for structured
formatters: `rpc_peer`, `rpc_service`, `rpc_method`, `rpc_kind`, `rpc_code` (the name),
`duration_ms`, `request_bytes`, `response_bytes`, `requests`, `responses`.

Sizes are those of the messages' encodings (`len(message.to_bytes())`: the payload without the
TTHeader header; a peer's own encoding of the same message may differ by a few bytes). They
cost an encode per message, so they are computed only when the logger is enabled for INFO; a
disabled access log costs one `isEnabledFor` check per call. The duration is measured around
the rest of the chain: from the middleware's call to the handler's return, or, for a streamed
response, to its end.

On a server the line is written when the call ends; on a client (the same middleware works
there) when the reply or error comes back, with the peer the call went to.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ..middleware import Endpoint, Middleware
from ._calls import call_status, observe_call, observe_call_async

__all__ = ["ACCESS_LOGGER", "AccessLog"]

ACCESS_LOGGER = "rpcpoll.access"


class AccessLog(Middleware):
    """Log each call on `logger` (default "rpcpoll.access") at `level` (default INFO)."""

    def __init__(self, logger: logging.Logger | None = None, level: int = logging.INFO) -> None:
        self.logger = logger or logging.getLogger(ACCESS_LOGGER)
        self.level = level

    def __call__(self, request: Any, context: Any, next: Endpoint) -> Any:
        if not self.logger.isEnabledFor(self.level):
            return next(request, context)
        return observe_call(_Entry(self, context), request, context, next)

    async def call_async(self, request: Any, context: Any, next: Endpoint) -> Any:
        if not self.logger.isEnabledFor(self.level):
            return await next(request, context)
        return await observe_call_async(_Entry(self, context), request, context, next)


class _Entry:
    """One call's line in the making: counts and sizes of its messages, then the line."""

    __slots__ = ("_context", "_log", "_started", "request_bytes", "requests", "response_bytes",
                 "responses")  # fmt: skip

    def __init__(self, log: AccessLog, context: Any) -> None:
        self._log = log
        self._context = context
        self._started = time.perf_counter()
        self.requests = self.responses = 0
        self.request_bytes = self.response_bytes = 0

    def request(self, message: Any) -> None:
        self.requests += 1
        self.request_bytes += _size(message)

    def response(self, message: Any) -> None:
        self.responses += 1
        self.response_bytes += _size(message)

    def end(self, error: BaseException | None) -> None:
        duration_ms = (time.perf_counter() - self._started) * 1000
        context = self._context
        code = call_status(error).name
        fields = {
            "rpc_peer": context.peer or "-",
            "rpc_service": context.service,
            "rpc_method": context.method,
            "rpc_kind": context.kind,
            "rpc_code": code,
            "duration_ms": round(duration_ms, 3),
            "request_bytes": self.request_bytes,
            "response_bytes": self.response_bytes,
            "requests": self.requests,
            "responses": self.responses,
        }
        text = "peer=%s rpc=%s/%s status=%s duration_ms=%.3f request_bytes=%d response_bytes=%d"
        args: tuple[Any, ...] = (
            fields["rpc_peer"], context.service, context.method, code, duration_ms,
            self.request_bytes, self.response_bytes,
        )  # fmt: skip
        if context.kind != "unary":
            text += " requests=%d responses=%d"
            args += (self.requests, self.responses)
        self._log.logger.log(self._log.level, text, *args, extra=fields)


def _size(message: Any) -> int:
    to_bytes = getattr(message, "to_bytes", None)
    if to_bytes is None:
        return 0
    try:
        return len(to_bytes())
    except Exception:  # a message that cannot be encoded is the call's problem, not the log's
        return 0
