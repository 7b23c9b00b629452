"""Echo servers for 4-byte big-endian length-prefixed frames, one per contestant.

Every server parses each frame and writes a reply frame (the same bytes) per request, and
sends all replies of one read batch together. Run one per process:

    python bench/echo_servers.py KIND [--unix PATH]

KIND is one of: bare (single-threaded select.epoll, the pure-Python limit), asyncio (asyncio
streams, uvloop if installed and --uvloop is given), rpcpoll-poller (rpcpoll.transport with
handlers on the poller thread), rpcpoll-pool (handlers on the worker pool). The server prints
"READY <port or path>" on stdout once it accepts connections, and stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import select
import signal
import socket
import sys
import threading
from typing import Any


def listen(unix: str | None) -> socket.socket:
    if unix:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(unix)
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    return sock


def announce(sock: socket.socket) -> None:
    where = sock.getsockname()
    print("READY", where[1] if isinstance(where, tuple) else where, flush=True)


# ----------------------------------------------------------------------------- bare epoll


def serve_bare(sock: socket.socket) -> None:
    """One thread, level-triggered epoll, bytearray buffers: what a careful person writes."""
    sock.setblocking(False)
    ep = select.epoll()
    ep.register(sock.fileno(), select.EPOLLIN)
    conns: dict[int, tuple[socket.socket, bytearray, bytearray]] = {}
    from_bytes = int.from_bytes
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    announce(sock)
    while not stop.is_set():
        for fd, ev in ep.poll(0.2):
            if fd == sock.fileno():
                while True:
                    try:
                        c, _ = sock.accept()
                    except BlockingIOError:
                        break
                    c.setblocking(False)
                    if c.family != socket.AF_UNIX:
                        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    conns[c.fileno()] = (c, bytearray(), bytearray())
                    ep.register(c.fileno(), select.EPOLLIN)
                continue
            c, inbuf, outbuf = conns[fd]
            if ev & select.EPOLLOUT and outbuf:
                try:
                    sent = c.send(outbuf)
                    del outbuf[:sent]
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
            view = memoryview(inbuf)
            pos, end = 0, len(inbuf)
            replies = []
            while end - pos >= 4:
                n = from_bytes(view[pos : pos + 4], "big")
                if end - pos < 4 + n:
                    break
                replies.append(view[pos : pos + 4 + n])  # the reply frame: same bytes
                pos += 4 + n
            if replies:
                pending = not outbuf
                outbuf += b"".join(replies)
                replies.clear()
                view.release()
                del inbuf[:pos]
                if pending:
                    try:
                        sent = c.send(outbuf)
                        del outbuf[:sent]
                    except BlockingIOError:
                        pass
                    if outbuf:
                        ep.modify(fd, select.EPOLLIN | select.EPOLLOUT)
            else:
                view.release()


# ----------------------------------------------------------------------------- asyncio


def serve_asyncio(sock: socket.socket, use_uvloop: bool) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                header = await reader.readexactly(4)
                payload = await reader.readexactly(int.from_bytes(header, "big"))
                writer.write(header + payload)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, sock=sock, limit=1 << 22)
        loop = asyncio.get_running_loop()
        stop = loop.create_future()
        loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
        announce(sock)
        async with server:
            await stop

    if use_uvloop:
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


# ----------------------------------------------------------------------------- rpcpoll


def serve_rpcpoll(sock: socket.socket, on_poller: bool) -> None:
    from rpcpoll.transport import Connection, EventLoop, convert_listener

    from_bytes = int.from_bytes

    def on_request(ctx: Any, conn: Connection) -> None:
        reader, writer = conn.reader(), conn.writer()
        peek, next_, write = reader.peek, reader.next, writer.write_binary
        available = len(reader)
        while available >= 4:
            n = from_bytes(peek(4), "big")
            if available < 4 + n:
                break
            write(next_(4 + n))  # copied if small, linked (zero-copy) if large
            available -= 4 + n
        reader.release()
        writer.flush()

    loop = EventLoop(on_request, run_on_poller=on_poller)
    listener = convert_listener(sock)
    sock.close()
    stopper = threading.Thread(target=loop.shutdown, args=(1.0,))
    signal.signal(signal.SIGTERM, lambda *_: stopper.start())
    threading.Timer(0.05, announce, args=(listener.socket,)).start()
    loop.serve(listener)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=["bare", "asyncio", "rpcpoll-poller", "rpcpoll-pool"])
    parser.add_argument("--unix", help="listen on this Unix socket path instead of TCP")
    parser.add_argument("--uvloop", action="store_true", help="asyncio on uvloop")
    args = parser.parse_args()
    sock = listen(args.unix)
    if args.kind == "bare":
        serve_bare(sock)
    elif args.kind == "asyncio":
        serve_asyncio(sock, args.uvloop)
    else:
        serve_rpcpoll(sock, on_poller=args.kind == "rpcpoll-poller")
    sys.exit(0)


if __name__ == "__main__":
    main()
