"""The servers bench/bench_stream.py measures, one per process.

    python bench/stream_servers.py KIND --gen-dir DIR

KIND: rpcpoll (rpcpoll's Server with a sync handler of bench/streambench.proto, default mode),
grpc-sync (grpc.server with a 10-thread pool, a servicer of the same .proto), discard (a server
on rpcpoll.transport that reads 4-byte length-prefixed frames and throws them away, answering
the byte count to an empty frame: the one-way reference for uploads). The echo reference is
bench/echo_servers.py rpcpoll-poller. DIR holds streambench_rpc.py (rpcpoll gen) and
streambench_pb2*.py (grpc_tools.protoc). Prints "READY <port>" once listening; stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Iterator
from concurrent import futures
from typing import Any


def serve_rpcpoll() -> None:
    from streambench_rpc import Chunk, DownloadRequest, StreamBenchHandler, UploadSummary

    from rpcpoll.server import Server
    from rpcpoll.service import CallContext

    class Bench(StreamBenchHandler):  # type: ignore[misc]
        def download(self, request: DownloadRequest, context: CallContext) -> Iterator[Chunk]:
            chunk = Chunk(data=b"x" * request.size)
            for _ in range(request.count):
                yield chunk

        def upload(self, requests: Iterator[Chunk], context: CallContext) -> UploadSummary:
            size = chunks = 0
            for chunk in requests:
                size += len(chunk.data)
                chunks += 1
            return UploadSummary(size=size, chunks=chunks)

        def ping_pong(self, requests: Iterator[Chunk], context: CallContext) -> Iterator[Chunk]:
            yield from requests

        def ping(self, request: Chunk, context: CallContext) -> Chunk:
            return request

    server = Server("127.0.0.1:0", Bench(), exit_wait=1.0)
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("READY", server.address.rsplit(":", 1)[1], flush=True)
    while not stop.wait(0.5):
        pass
    server.shutdown(1.0)


def serve_grpc_sync() -> None:
    import grpc
    import streambench_pb2 as pb
    import streambench_pb2_grpc as pb_grpc

    class Bench(pb_grpc.StreamBenchServicer):  # type: ignore[misc]
        def Download(self, request: Any, context: Any) -> Iterator[Any]:
            chunk = pb.Chunk(data=b"x" * request.size)
            for _ in range(request.count):
                yield chunk

        def Upload(self, request_iterator: Any, context: Any) -> Any:
            size = chunks = 0
            for chunk in request_iterator:
                size += len(chunk.data)
                chunks += 1
            return pb.UploadSummary(size=size, chunks=chunks)

        def PingPong(self, request_iterator: Any, context: Any) -> Iterator[Any]:
            yield from request_iterator

        def Ping(self, request: Any, context: Any) -> Any:
            return request

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=10))
    pb_grpc.add_StreamBenchServicer_to_server(Bench(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("READY", port, flush=True)
    while not stop.wait(0.5):
        pass
    server.stop(1).wait()


def serve_discard() -> None:
    """Length-prefixed frames read and dropped on rpcpoll.transport; an empty frame is
    answered with the bytes received so far (8 bytes, big-endian)."""
    from rpcpoll.transport import Connection, EventLoop, create_listener

    counts: dict[int, int] = {}

    def on_request(_ctx: Any, conn: Connection) -> None:
        reader = conn.reader()
        received = counts.get(id(conn), 0)
        while len(reader) >= 4:
            size = int.from_bytes(reader.peek(4), "big")
            if len(reader) < 4 + size:
                break
            reader.skip(4 + size)
            if size == 0:
                conn.writer().write_binary(received.to_bytes(8, "big"))
                conn.flush()
                received = 0
            received += size
        counts[id(conn)] = received
        reader.release()

    loop = EventLoop(on_request, run_on_poller=True)
    listener = create_listener("tcp", ("127.0.0.1", 0))
    stopper = threading.Thread(target=loop.shutdown, args=(1.0,))
    signal.signal(signal.SIGTERM, lambda *_: stopper.start())
    threading.Timer(0.05, lambda: print("READY", listener.address[1], flush=True)).start()
    loop.serve(listener)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=["rpcpoll", "grpc-sync", "discard"])
    parser.add_argument("--gen-dir", help="where streambench_rpc.py and streambench_pb2*.py are")
    args = parser.parse_args()
    if args.gen_dir:
        sys.path.insert(0, args.gen_dir)
    {"rpcpoll": serve_rpcpoll, "grpc-sync": serve_grpc_sync, "discard": serve_discard}[args.kind]()


if __name__ == "__main__":
    main()
