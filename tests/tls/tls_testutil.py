"""Helpers of the TLS tests: an echo on_request and an EventLoop served on a thread."""

from __future__ import annotations

import threading
from typing import Any

from testutil import wait_until

from rpcpoll.transport import Connection, EventLoop, create_listener

__all__ = ["Served", "echo"]


def echo(_ctx: Any, conn: Connection) -> None:
    """Echo whatever arrived (transport-level tests)."""
    reader = conn.reader()
    n = len(reader)
    if n:
        data = bytes(reader.next(n))
        reader.release()
        conn.writer().write_binary(data)
        conn.flush()


class Served:
    """An EventLoop serving on its own thread, stopped at the end of the test."""

    def __init__(self, loop: EventLoop, network: str, address: str) -> None:
        self.loop = loop
        self.listener = create_listener(network, address)
        self.network = network
        self.address: Any = self.listener.address
        self.thread = threading.Thread(target=loop.serve, args=(self.listener,))
        self.thread.start()
        wait_until(lambda: loop.address is not None, message="the EventLoop to serve")

    @property
    def target(self) -> str:
        if self.network == "unix":
            return str(self.address)
        return f"{self.address[0]}:{self.address[1]}"

    def stop(self) -> None:
        if not self.loop.shutdown(2.0):
            for conn in self.loop.connections():
                conn.close()
            self.loop.shutdown(2.0)
        self.thread.join(5.0)
        assert not self.thread.is_alive()
