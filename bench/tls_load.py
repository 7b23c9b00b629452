"""A closed-loop load generator for TTHeader echo over TLS (or plaintext), for bench_tls.py.

    python bench/tls_load.py HOST:PORT --request-hex HEX --reply-len N [--cafile CA]
        [--conns 4] [--depth 32] [--seconds 3] [--warmup 1]

One thread per connection (stdlib ssl releases the GIL while it encrypts): DEPTH copies of
the request go out at once, then every reply that comes back is answered by a new request,
so DEPTH stay in flight. Replies are counted by bytes (every reply to the replayed request
has the same length); the first one is checked to be a reply frame of that length. Prints
one JSON line: {"completed", "seconds", "qps"}.
"""

from __future__ import annotations

import argparse
import json
import socket
import ssl
import threading
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("target")
    parser.add_argument("--request-hex", required=True)
    parser.add_argument("--reply-len", type=int, required=True)
    parser.add_argument("--cafile")
    parser.add_argument("--conns", type=int, default=4)
    parser.add_argument("--depth", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    args = parser.parse_args()
    request = bytes.fromhex(args.request_hex)
    host, port = args.target.rsplit(":", 1)
    context = ssl.create_default_context(cafile=args.cafile) if args.cafile else None
    start = time.monotonic() + args.warmup
    end = start + args.seconds
    counts = [0] * args.conns
    errors: list[str] = []

    def run(index: int) -> None:
        raw = socket.create_connection((host, int(port)), timeout=10)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock = context.wrap_socket(raw, server_hostname="localhost") if context else raw
        try:
            sock.sendall(request * args.depth)
            pending = b""
            first = True
            while True:
                data = sock.recv(1 << 20)
                if not data:
                    errors.append("the server closed the connection")
                    return
                if first:
                    head = data[:4]
                    if int.from_bytes(head, "big") + 4 != args.reply_len:
                        errors.append(f"unexpected reply {data[:32]!r}")
                        return
                    first = False
                pending_len = len(pending) + len(data)
                replies, rest = divmod(pending_len, args.reply_len)
                pending = b"\0" * rest  # only the count matters from here on
                now = time.monotonic()
                if start <= now < end:
                    counts[index] += replies
                if now >= end:
                    return
                if replies:
                    sock.sendall(request * replies)
        finally:
            sock.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(args.conns)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise SystemExit(f"tls_load: {errors[0]}")
    completed = sum(counts)
    print(json.dumps({"completed": completed, "seconds": args.seconds,
                      "qps": completed / args.seconds}))  # fmt: skip


if __name__ == "__main__":
    main()
