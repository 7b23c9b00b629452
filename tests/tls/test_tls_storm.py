"""A storm of TLS handshakes does not stall the connections that are already established.

Server handshakes run on the poller in slices of at most 2 ms (tls_connection.py), so an
established connection waits at most about a slice for its turn, whatever the storm's size.
The storm comes from another process (its client-side crypto must not compete for this
process's GIL); the established connection measures its round trips meanwhile.
"""

from __future__ import annotations

import ssl
import subprocess
import sys
import time
from collections.abc import Callable

from pki import PKI
from testutil import wait_until
from tls_testutil import Served

from rpcpoll.transport import Connection, ServerTLS, dial_connection

STORM = 300  # connections handshaking at once (bench/bench_tls.py runs 1000)
P99_BOUND = 0.05  # seconds: an established round trip, during the storm, at the 99th percentile

STORM_CLIENT = """
import socket, ssl, sys, threading
host, port, cafile, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
context = ssl.create_default_context(cafile=cafile)
barrier = threading.Barrier(count)
done = []
def one():
    raw = socket.create_connection((host, port), timeout=30)
    barrier.wait()  # every connection is open before any handshake starts
    with context.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(b"x")
        if tls.recv(1) == b"x":
            done.append(1)
threads = [threading.Thread(target=one) for _ in range(count)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(len(done))
"""


def test_a_handshake_storm_does_not_stall_established_connections(
    serve: Callable[..., Served], server_tls: ServerTLS, client_ssl: ssl.SSLContext, pki: PKI
) -> None:
    served = serve(ssl=server_tls, run_on_poller=True)
    conn = dial_connection("tcp", served.target, 2.0, ssl=client_ssl, direct=True)
    conn.set_read_timeout(5.0)
    try:
        calm = _round_trips(conn, 200)
        storm = subprocess.Popen(
            [sys.executable, "-c", STORM_CLIENT, "127.0.0.1", str(served.address[1]),
             pki.ca.cert, str(STORM)],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        try:
            wait_until(lambda: server_tls.handshakes > 5, 30.0, "the storm to start")
            during: list[float] = []
            while storm.poll() is None and len(during) < 20000:
                during += _round_trips(conn, 50)
            out, _ = storm.communicate(timeout=60)
        finally:
            if storm.poll() is None:
                storm.kill()
                storm.wait(10)
        assert int(out.strip()) == STORM  # every storm connection completed and echoed
        assert server_tls.handshakes >= STORM + 1 and server_tls.failures == 0
        assert len(during) >= 50, "the storm ended before it could be measured"
        p99 = sorted(during)[int(len(during) * 0.99)]
        print(f"calm p99 {_p99(calm) * 1e3:.2f} ms, storm p99 {p99 * 1e3:.2f} ms")
        assert p99 < P99_BOUND
    finally:
        conn.close()


def _round_trips(conn: Connection, count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        conn.write(b"p" * 64)
        conn.next(64)
        conn.release()
        times.append(time.perf_counter() - started)
    return times


def _p99(times: list[float]) -> float:
    return sorted(times)[int(len(times) * 0.99)]
