"""The bundled echo service: what `rpcpoll serve` runs without arguments and `rpcpoll demo` calls.

`echo_rpc.py` next to this file is `rpcpoll gen idl/echo.proto` output, kept in sync by a test.
"""

from __future__ import annotations

from rpcpoll.service import CallContext

from .echo_rpc import EchoRequest, EchoResponse, EchoServiceAsyncHandler, EchoServiceHandler

__all__ = ["AsyncEchoHandler", "EchoHandler"]


class EchoHandler(EchoServiceHandler):
    """Returns every request's message and payload unchanged."""

    def echo(self, request: EchoRequest, context: CallContext) -> EchoResponse:
        return EchoResponse(message=request.message, payload=request.payload)


class AsyncEchoHandler(EchoServiceAsyncHandler):
    """EchoHandler's answers from an `async def` method (served on the server's event loop)."""

    async def echo(self, request: EchoRequest, context: CallContext) -> EchoResponse:
        return EchoResponse(message=request.message, payload=request.payload)
