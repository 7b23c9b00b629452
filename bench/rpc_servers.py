"""The echo service of idl/echo.proto served by the contestants rpcpoll is compared with.

    python bench/rpc_servers.py KIND --pb-dir DIR

KIND: grpc-sync (grpc.server with a thread pool), grpc-aio (grpc.aio), bare-msgpack (the
pure-Python limit: one thread, level-triggered select.epoll, 4-byte length-prefixed msgpack,
each request decoded and its reply encoded: what a careful person writes in an afternoon),
asyncio-msgpack (the same on an asyncio Protocol, on uvloop when it is installed). DIR holds
echo_pb2.py and echo_pb2_grpc.py (bench_rpc.py generates them). Prints "READY <port>" once
listening; stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
from concurrent import futures
from typing import Any


def serve_grpc_sync(workers: int) -> None:
    import echo_pb2
    import echo_pb2_grpc
    import grpc

    class Echo(echo_pb2_grpc.EchoServiceServicer):  # type: ignore[misc]
        def Echo(self, request: Any, context: Any) -> Any:
            return echo_pb2.EchoResponse(message=request.message, payload=request.payload)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
    echo_pb2_grpc.add_EchoServiceServicer_to_server(Echo(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("READY", port, flush=True)
    while not stop.wait(0.5):
        pass
    server.stop(1).wait()


def serve_grpc_aio() -> None:
    import echo_pb2
    import echo_pb2_grpc
    import grpc

    class Echo(echo_pb2_grpc.EchoServiceServicer):  # type: ignore[misc]
        async def Echo(self, request: Any, context: Any) -> Any:
            return echo_pb2.EchoResponse(message=request.message, payload=request.payload)

    async def main() -> None:
        server = grpc.aio.server()
        echo_pb2_grpc.add_EchoServiceServicer_to_server(Echo(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        stop = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)
        print("READY", port, flush=True)
        await stop
        await server.stop(1)

    asyncio.run(main())


def serve_bare_msgpack() -> None:
    """Length-prefixed msgpack echo of {1: message, 2: payload} on a bare epoll loop."""
    import select
    import socket

    import msgpack

    unpackb, packb = msgpack.unpackb, msgpack.packb
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    listener.setblocking(False)
    ep = select.epoll()
    ep.register(listener.fileno(), select.EPOLLIN)
    conns: dict[int, tuple[socket.socket, bytearray, bytearray]] = {}
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("READY", listener.getsockname()[1], flush=True)
    while not stop.is_set():
        for fd, ev in ep.poll(0.2):
            if fd == listener.fileno():
                while True:
                    try:
                        c, _ = listener.accept()
                    except BlockingIOError:
                        break
                    c.setblocking(False)
                    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    conns[c.fileno()] = (c, bytearray(), bytearray())
                    ep.register(c.fileno(), select.EPOLLIN)
                continue
            c, inbuf, outbuf = conns[fd]
            if ev & select.EPOLLOUT and outbuf:
                try:
                    del outbuf[: c.send(outbuf)]
                except BlockingIOError:
                    pass
                if not outbuf:
                    ep.modify(fd, select.EPOLLIN)
            if not ev & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                continue
            try:
                data = c.recv(262144)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                ep.unregister(fd)
                c.close()
                del conns[fd]
                continue
            inbuf += data
            pos, end = 0, len(inbuf)
            replies = []
            while end - pos >= 4:
                n = int.from_bytes(inbuf[pos : pos + 4], "big")
                if end - pos < 4 + n:
                    break
                request = unpackb(inbuf[pos + 4 : pos + 4 + n], strict_map_key=False)
                reply = packb({1: request.get(1, ""), 2: request.get(2, b"")})
                replies.append(len(reply).to_bytes(4, "big"))
                replies.append(reply)
                pos += 4 + n
            if replies:
                del inbuf[:pos]
                pending = not outbuf
                outbuf += b"".join(replies)
                if pending:
                    try:
                        del outbuf[: c.send(outbuf)]
                    except BlockingIOError:
                        pass
                    if outbuf:
                        ep.modify(fd, select.EPOLLIN | select.EPOLLOUT)


def serve_asyncio_msgpack() -> None:
    """Length-prefixed msgpack echo of {1: message, 2: payload}: decoded and re-encoded."""
    import msgpack

    class EchoProtocol(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            self.buffer = bytearray()

        def data_received(self, data: bytes) -> None:
            buffer = self.buffer
            buffer += data
            pos, end, out = 0, len(buffer), []
            while end - pos >= 4:
                n = int.from_bytes(buffer[pos : pos + 4], "big")
                if end - pos < 4 + n:
                    break
                request = msgpack.unpackb(buffer[pos + 4 : pos + 4 + n], strict_map_key=False)
                reply = msgpack.packb({1: request.get(1, ""), 2: request.get(2, b"")})
                out.append(len(reply).to_bytes(4, "big") + reply)
                pos += 4 + n
            if pos:
                del buffer[:pos]
                self.transport.write(b"".join(out))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(EchoProtocol, "127.0.0.1", 0)
        stop = loop.create_future()
        loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
        print("READY", server.sockets[0].getsockname()[1], flush=True)
        async with server:
            await stop

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "kind", choices=["grpc-sync", "grpc-aio", "bare-msgpack", "asyncio-msgpack"]
    )
    parser.add_argument("--pb-dir", help="where echo_pb2.py and echo_pb2_grpc.py are")
    parser.add_argument("--workers", type=int, default=10, help="grpc-sync thread pool size")
    args = parser.parse_args()
    if args.pb_dir:
        sys.path.insert(0, args.pb_dir)
    if args.kind == "grpc-sync":
        serve_grpc_sync(args.workers)
    elif args.kind == "grpc-aio":
        serve_grpc_aio()
    elif args.kind == "bare-msgpack":
        serve_bare_msgpack()
    else:
        serve_asyncio_msgpack()


if __name__ == "__main__":
    main()
