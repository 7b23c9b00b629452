"""A call as an observing middleware sees it: its messages one by one, then its end.

For a unary call that is one request, one response (or an error); for a stream the request
and/or the response is an iterator (an async iterator for async calls), wrapped here with
`rpcpoll.middleware.observe_stream` so that each message is seen as it passes and the end is
seen when the last stream ends, not when `next` returns.
"""

from __future__ import annotations

from typing import Any, Protocol

from ..middleware import Endpoint, observe_stream, status_of
from ..protocol.status import StatusCode

__all__ = [
    "STREAMED_REQUESTS",
    "STREAMED_RESPONSES",
    "Observation",
    "call_status",
    "observe_call",
    "observe_call_async",
]

#: kinds whose requests are an iterator, and kinds whose responses are
STREAMED_REQUESTS = frozenset({"client_stream", "bidi"})
STREAMED_RESPONSES = frozenset({"server_stream", "bidi"})


class Observation(Protocol):
    """What one call's observer is told: each request, each response, then the end once."""

    def request(self, message: Any) -> None: ...

    def response(self, message: Any) -> None: ...

    def end(self, error: BaseException | None) -> None: ...


def call_status(error: BaseException | None) -> StatusCode:
    """`status_of(error)`, plus CANCELLED for a stream whose consumer stopped early
    (GeneratorExit: the caller went away, or a client stopped reading)."""
    if isinstance(error, GeneratorExit):
        return StatusCode.CANCELLED
    return status_of(error)


def _requests(observation: Observation, request: Any, kind: str) -> Any:
    """The request, seen; a request stream, wrapped to be seen message by message. A client's
    bidi call may have no request iterable (it sends with `call.send()`): those are unseen."""
    if kind not in STREAMED_REQUESTS:
        observation.request(request)
        return request
    if request is None:
        return None
    return observe_stream(request, observation.request)


def observe_call(observation: Observation, request: Any, context: Any, next: Endpoint) -> Any:
    """`next(request, context)` with `observation` seeing its messages and its end (sync)."""
    kind = context.kind
    request = _requests(observation, request, kind)
    try:
        response = next(request, context)
    except BaseException as exc:
        observation.end(exc)
        raise
    if kind in STREAMED_RESPONSES:
        return observe_stream(response, observation.response, observation.end)
    observation.response(response)
    observation.end(None)
    return response


async def observe_call_async(
    observation: Observation, request: Any, context: Any, next: Endpoint
) -> Any:
    """`await next(request, context)` with `observation` seeing its messages and its end."""
    kind = context.kind
    request = _requests(observation, request, kind)
    try:
        response = await next(request, context)
    except BaseException as exc:
        observation.end(exc)
        raise
    if kind in STREAMED_RESPONSES:
        return observe_stream(response, observation.response, observation.end)
    observation.response(response)
    observation.end(None)
    return response
