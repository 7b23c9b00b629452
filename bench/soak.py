"""A soak: `rpcpoll serve` under load, connection churn and hostile clients, for minutes.

Issue 14's last figure: after a long mixed run, the server's fds and RSS must come back within
a stated band of where they started. Everything runs against one `rpcpoll serve` (the bundled
echo; --frame-timeout 2 so that tricklers are cut in the soak's time scale) on loopback:

- load: threads of the generated client calling in a loop (sync pool and mux), every call
  checked; any failure is counted and printed;
- churn: a thread that connects, makes one call and closes, again and again;
- hostile, in rounds: connections trickling a frame one byte at a time, a pipelining client
  that never reads, nearly complete 1 MiB frames abandoned, garbage bytes, oversized metadata
  headers, streams opened and reset, and clients vanishing mid-call;
- every `--sample` seconds: the server's open fds (/proc/PID/fd) and RSS.

At the end the load stops, the server gets `--settle` seconds to go quiet (its memory release
runs after 5 s of quiet), and the final fds and RSS are compared with the idle server's before
the first client. The band: fds within +/-8 of the start, RSS within +32 MiB of the start.

    python bench/soak.py [--minutes 10] [--sample 10] [--settle 12]
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_hostile import Serve, frame  # noqa: E402

from rpcpoll.examples.echo_rpc import EchoRequest, EchoServiceClient  # noqa: E402
from rpcpoll.protocol.frame import FLAG_STREAMING, append_frame  # noqa: E402
from rpcpoll.protocol.stream import open_info, rst_info  # noqa: E402

FD_BAND = 8
RSS_BAND_MIB = 32.0


class Soak:
    def __init__(self, server: Serve) -> None:
        self.server = server
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.calls = 0
        self.failures: list[str] = []
        self.hostile_rounds = 0

    # -- well-behaved clients --------------------------------------------------------------

    def load(self, mux: bool) -> None:
        request = EchoRequest(message="soak", payload=b"x" * 256)
        with EchoServiceClient(self.server.address, timeout=5.0, mux=mux) as client:
            while not self.stop.is_set():
                try:
                    reply = client.echo(request)
                    if reply.payload != request.payload:
                        raise AssertionError("wrong reply")
                    with self.lock:
                        self.calls += 1
                except Exception as exc:  # counted and shown, the soak goes on
                    with self.lock:
                        self.failures.append(f"load: {type(exc).__name__}: {exc}")

    def churn(self) -> None:
        request = EchoRequest(message="churn")
        while not self.stop.is_set():
            try:
                with EchoServiceClient(self.server.address, timeout=5.0) as client:
                    client.echo(request)
                with self.lock:
                    self.calls += 1
            except Exception as exc:
                with self.lock:
                    self.failures.append(f"churn: {type(exc).__name__}: {exc}")

    # -- hostile clients -------------------------------------------------------------------

    def hostile(self) -> None:
        rounds = [
            self.tricklers,
            self.non_reader,
            self.abandoned_frames,
            self.garbage,
            self.big_headers,
            self.reset_streams,
            self.vanishing_callers,
        ]
        while not self.stop.is_set():
            for attack in rounds:
                if self.stop.is_set():
                    return
                try:
                    attack()
                except OSError:
                    pass  # the server closing on us is the expected answer to most of these
            self.hostile_rounds += 1

    def _connect(self) -> socket.socket:
        return socket.create_connection(self.server.hostport, timeout=5)

    def tricklers(self) -> None:
        socks = [self._connect() for _ in range(50)]
        data = frame(1, "trickle")
        try:
            for i in range(min(len(data), 6)):  # ~3 s: past the 2 s frame deadline
                for sock in socks:
                    try:
                        sock.send(data[i : i + 1])
                    except OSError:
                        pass
                time.sleep(0.5)
        finally:
            for sock in socks:
                sock.close()

    def non_reader(self) -> None:
        with self._connect() as sock:
            sock.settimeout(2)
            data = frame(1, payload=b"p" * 1024) * 64
            deadline = time.monotonic() + 3
            try:
                while time.monotonic() < deadline:
                    sock.sendall(data)  # blocks once the server stops reading us
            except OSError:
                pass

    def abandoned_frames(self) -> None:
        whole = frame(1, payload=b"a" * (1 << 20))
        socks = []
        for _ in range(20):
            sock = self._connect()
            sock.sendall(whole[:-1])
            socks.append(sock)
        time.sleep(0.5)
        for sock in socks:
            sock.close()

    def garbage(self) -> None:
        for _ in range(20):
            with self._connect() as sock:
                sock.sendall(os.urandom(random.randint(1, 4096)))

    def big_headers(self) -> None:
        metadata = {f"k{i}": "v" * 64 for i in range(200)}
        with self._connect() as sock:
            sock.settimeout(2)
            try:
                sock.sendall(frame(1, metadata=metadata))
                sock.recv(65536)
            except OSError:
                pass

    def reset_streams(self) -> None:
        # Streams of an unknown method, opened then reset at once: each must cost nothing
        # once gone.
        with self._connect() as sock:
            out = bytearray()
            for stream_id in range(1, 201, 2):
                info = open_info("Nope", "echo.EchoService")
                append_frame(out, FLAG_STREAMING, stream_id, info)
                append_frame(out, FLAG_STREAMING, stream_id, rst_info())
            sock.sendall(out)
            sock.settimeout(1)
            try:
                while sock.recv(65536):
                    pass
            except OSError:
                pass

    def vanishing_callers(self) -> None:
        for seq in range(50):
            sock = self._connect()
            sock.sendall(frame(seq + 1, payload=b"v" * 512))
            sock.close()  # gone before the reply

    # -- the run ---------------------------------------------------------------------------

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.server.proc.pid}/fd"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--settle", type=float, default=12.0, help="quiet seconds at the end")
    args = parser.parse_args()

    server = Serve("--frame-timeout", "2", "--max-unsent-bytes", "1MiB")
    soak = Soak(server)
    print(f"rpcpoll serve pid {server.proc.pid} on {server.address}; {args.minutes:g} min")
    time.sleep(1.0)
    baseline = (0.0, soak.fds(), server.mib())  # the idle server, before any client
    print(f"  idle: fds={baseline[1]}  rss={baseline[2]:.1f} MiB", flush=True)
    threads = [
        threading.Thread(target=soak.load, args=(False,), name="load-pool"),
        threading.Thread(target=soak.load, args=(True,), name="load-mux"),
        threading.Thread(target=soak.churn, name="churn"),
        threading.Thread(target=soak.hostile, name="hostile"),
    ]
    for thread in threads:
        thread.start()
    samples: list[tuple[float, int, float]] = []
    started = time.monotonic()
    try:
        end = started + args.minutes * 60
        while time.monotonic() < end:
            sample = (time.monotonic() - started, soak.fds(), server.mib())
            samples.append(sample)
            with soak.lock:
                calls, failed = soak.calls, len(soak.failures)
            print(
                f"  t={sample[0]:6.0f} s  fds={sample[1]:4d}  rss={sample[2]:7.1f} MiB"
                f"  calls={calls}  failed={failed}  hostile rounds={soak.hostile_rounds}",
                flush=True,
            )
            time.sleep(min(args.sample, max(0.0, end - time.monotonic())))
    finally:
        soak.stop.set()
        for thread in threads:
            thread.join(30)
    time.sleep(args.settle)
    final = (time.monotonic() - started, soak.fds(), server.mib())
    code = server.stop()
    first = baseline
    peak_rss = max([s[2] for s in samples] + [final[2]])
    peak_fds = max([s[1] for s in samples] + [final[1]])
    fds_ok = abs(final[1] - first[1]) <= FD_BAND
    rss_ok = final[2] - first[2] <= RSS_BAND_MIB
    print(f"\nafter {args.settle:g} s of quiet:")
    print(f"  fds: start {first[1]}, peak {peak_fds}, end {final[1]}"
          f"  (band +/-{FD_BAND}: {'within' if fds_ok else 'OUTSIDE'})")  # fmt: skip
    print(f"  rss: start {first[2]:.1f} MiB, peak {peak_rss:.1f} MiB, end {final[2]:.1f} MiB"
          f"  (band +{RSS_BAND_MIB:g} MiB: {'within' if rss_ok else 'OUTSIDE'})")  # fmt: skip
    print(f"  well-behaved calls: {soak.calls}, failed: {len(soak.failures)}")
    for failure in soak.failures[:10]:
        print(f"    {failure}")
    print(f"  hostile rounds: {soak.hostile_rounds}; server exit status after SIGTERM: {code}")


if __name__ == "__main__":
    main()
