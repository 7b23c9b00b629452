"""Fixtures for the RPC runtime tests: the generated test service, servers and clients."""

from __future__ import annotations

import importlib
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import rpcpoll
from rpcpoll.codegen import generate, write
from rpcpoll.server import Server
from rpcpoll.service import CallContext

IDL = Path(__file__).resolve().parent / "idl"


@pytest.fixture(scope="session")
def rpctest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The generated module of tests/rpc/idl/rpctest.proto."""
    out = tmp_path_factory.mktemp("rpc_generated")
    write(generate([IDL / "rpctest.proto"], [IDL]), out)
    sys.path.insert(0, str(out))
    try:
        yield importlib.import_module("rpctest_rpc")
    finally:
        sys.path.remove(str(out))
        sys.modules.pop("rpctest_rpc", None)


class Recorder:
    """What the test handler saw, shared with the test."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self.contexts: list[CallContext] = []
        self.release = threading.Event()

    def count(self, key: str) -> int:
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + 1
            return self.counts[key]


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    made = Recorder()
    yield made
    made.release.set()  # no handler outlives its test


@pytest.fixture
def handler(rpctest: ModuleType, recorder: Recorder) -> Any:
    Req, Resp = rpctest.Req, rpctest.Resp

    class TestHandler(rpctest.TestServiceHandler):  # type: ignore[misc, name-defined]
        def echo(self, request: Any, context: CallContext) -> Any:
            return Resp(text=request.text, blob=request.blob)

        def fail(self, request: Any, context: CallContext) -> Any:
            raise rpcpoll.RpcError(request.code, request.text)

        def crash(self, request: Any, context: CallContext) -> Any:
            raise ValueError("secret internal detail")

        def sleep(self, request: Any, context: CallContext) -> Any:
            recorder.contexts.append(context)
            recorder.release.wait(request.sleep_ms / 1000)  # the fixture cuts it short
            remaining = context.time_remaining()
            return Resp(text=request.text, remaining=-1.0 if remaining is None else remaining)

        def count(self, request: Any, context: CallContext) -> Any:
            return Resp(count=recorder.count(request.text or "count"))

        def peek(self, request: Any, context: CallContext) -> Any:
            return Resp(count=recorder.count(request.text or "peek"))

        def meta(self, request: Any, context: CallContext) -> Any:
            context.set_reply_metadata("echo", request.text)
            return Resp(metadata=dict(context.metadata))

    del Req
    return TestHandler()


@pytest.fixture(autouse=True)
def _no_leaked_fds_or_threads(no_leaks: None) -> None:
    """Every RPC test runs under the shared leak check (tests/conftest.py)."""


@pytest.fixture
def serve(tmp_path: Path, recorder: Recorder) -> Iterator[Callable[..., Server]]:
    """`serve(*handlers, address="127.0.0.1:0", **options) -> started Server`, stopped after."""
    servers: list[Server] = []

    def start(*handlers: Any, address: str = "127.0.0.1:0", **options: Any) -> Server:
        server = Server(address, *handlers, **options)
        server.start()
        servers.append(server)
        return server

    try:
        yield start
    finally:
        recorder.release.set()  # cut sleeping handlers short
        for server in servers:
            server.shutdown(1.0)


@pytest.fixture
def client(rpctest: ModuleType, handler: Any, serve: Callable[..., Server]) -> Iterator[Any]:
    """A TestServiceClient connected to a fresh server running the test handler."""
    server = serve(handler)
    with rpctest.TestServiceClient(server.address, timeout=5.0) as made:
        made.server = server
        yield made
