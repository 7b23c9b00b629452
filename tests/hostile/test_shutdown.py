"""SIGTERM under clients that reconnect as soon as a reply says `crrst`: no request a client
wrote after connecting may be reset unanswered (issue 14 lost 0-3 per SIGTERM: replies
carried crrst before the listener closed, so obeying clients landed in a backlog about to be
reset). Now the listener closes first (its backlog served), then replies say crrst; a client
reconnecting after that is refused at connect, before writing anything."""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Callable

import pytest
from hostile_testutil import Gate, ServeProcess, call_frame, host_port, read_frame

from rpcpoll.protocol.frame import CONNECTION_RESET_KEY, MessageType
from rpcpoll.protocol.status import StatusCode
from rpcpoll.server import Server

CLIENTS = 20


class RawClient(threading.Thread):
    """Connect, call, call, ...; reconnect on crrst; stop when refused."""

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(daemon=True)
        self.address = address
        self.answered = 0
        self.lost: list[str] = []  # requests written and never answered
        self.refused = 0

    def run(self) -> None:
        seq = 0
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                sock = socket.create_connection(self.address, timeout=2)
            except OSError:
                self.refused += 1  # refused at connect: nothing was written
                return
            with sock:
                while True:
                    seq += 1
                    try:
                        sock.sendall(call_frame(seq, "go"))
                        frame = read_frame(sock)
                    except OSError as exc:
                        self.lost.append(f"seq {seq}: {exc!r}")
                        break
                    if frame is None:
                        self.lost.append(f"seq {seq}: EOF before the reply")
                        break
                    if frame.seq_id == 0:  # the server's goodbye: our request was not read
                        assert CONNECTION_RESET_KEY in frame.metadata, frame
                        self.refused += 1
                        return
                    assert frame.message_type is MessageType.REPLY and frame.seq_id == seq
                    self.answered += 1
                    if CONNECTION_RESET_KEY in frame.metadata:
                        break  # the server asks us to go: reconnect at once


@pytest.mark.parametrize("run", range(3))
def test_sigterm_under_reconnecting_clients_loses_no_request(
    serve_process: Callable[..., ServeProcess], run: int
) -> None:
    server = serve_process("--exit-wait", "5")
    address = host_port(server.address)
    clients = [RawClient(address) for _ in range(CLIENTS)]
    for client in clients:
        client.start()
    time.sleep(0.3)
    assert server.stop(signal.SIGTERM) == 0
    for client in clients:
        client.join(25)
    lost = [item for client in clients for item in client.lost]
    assert not lost, lost
    assert sum(client.answered for client in clients) > 100
    assert sum(client.refused for client in clients) == CLIENTS


def test_an_idle_connection_is_told_goodbye_and_a_request_crossing_it_never_runs(
    serve: Callable[..., Server], gate: Gate
) -> None:
    """Shutdown closes an idle connection in two halves: a control frame saying the server is
    going (UNAVAILABLE, crrst: clients read it as "your requests were not read") and a FIN,
    then the close when the client closes. A request the client wrote before reading it
    crossed it on the wire: it never runs, and the connection is not reset under it."""
    server = serve()
    with socket.create_connection(host_port(server.address), timeout=5) as sock:
        sock.sendall(call_frame(1, "before"))
        reply = read_frame(sock)
        assert reply is not None and reply.seq_id == 1
        stopping = threading.Thread(target=server.shutdown, args=(5.0,))
        stopping.start()
        goodbye = read_frame(sock)
        assert goodbye is not None and goodbye.seq_id == 0, goodbye
        assert goodbye.message_type is MessageType.EXCEPTION
        assert goodbye.status == StatusCode.UNAVAILABLE
        assert "shutting down" in goodbye.status_message
        assert CONNECTION_RESET_KEY in goodbye.metadata
        sock.sendall(call_frame(2, "crossed"))
        assert sock.recv(1) == b"", "the goodbye is followed by the server's FIN"
        time.sleep(0.1)  # time for the crossed request to reach the server
    stopping.join(5)
    assert not stopping.is_alive()
    assert gate.runs == {"before": 1}
