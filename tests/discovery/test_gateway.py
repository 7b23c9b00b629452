"""The JSON gateway client against a real etcd: kv, leases, watch, error mapping, fail-over."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from discovery_testutil import EtcdProcess, free_port

from rpcpoll.discovery import (
    EtcdGateway,
    EtcdProtocolError,
    EtcdResponseError,
    EtcdUnavailable,
)


def test_put_get_range_delete(gateway: EtcdGateway, prefix: str) -> None:
    base = f"{prefix}/".encode()
    rev1 = gateway.put(base + b"a", b"1")
    rev2 = gateway.put(base + b"b", b"\x00\xff binary")
    assert rev2 == rev1 + 1
    gateway.put(base[:-1] + b"0", b"outside the prefix")  # "/" + 1 == "0"

    got = gateway.get(base + b"b")
    assert got is not None
    assert got.value == b"\x00\xff binary"
    assert (got.create_revision, got.mod_revision, got.version, got.lease) == (rev2, rev2, 1, 0)
    assert gateway.get(base + b"missing") is None  # etcd omits kvs and count

    listed = gateway.get_prefix(base)
    assert [kv.key for kv in listed.kvs] == [base + b"a", base + b"b"]
    assert listed.revision >= rev2 + 1

    assert gateway.delete(base + b"a") == 1
    assert gateway.delete(base + b"a") == 0
    assert gateway.delete(base, b"\0") >= 1  # [base, end of keyspace)


def test_empty_value_round_trips(gateway: EtcdGateway, prefix: str) -> None:
    gateway.put(f"{prefix}/empty".encode(), b"")
    got = gateway.get(f"{prefix}/empty".encode())
    assert got is not None
    assert got.value == b""


def test_lease_grant_keepalive_revoke(gateway: EtcdGateway, prefix: str) -> None:
    lease = gateway.grant(1)
    assert lease.id > 0
    assert lease.ttl == 2  # etcd's minimum
    key = f"{prefix}/leased".encode()
    gateway.put(key, b"v", lease=lease.id)
    got = gateway.get(key)
    assert got is not None
    assert got.lease == lease.id
    assert gateway.keepalive(lease.id) == 2
    assert 0 < gateway.time_to_live(lease.id) <= 2

    started = time.monotonic()
    assert gateway.revoke(lease.id) is True
    assert gateway.get(key) is None  # the key goes with the lease, at once
    assert time.monotonic() - started < 1.0
    assert gateway.revoke(lease.id) is False  # 404, NOT_FOUND: tolerated
    assert gateway.keepalive(lease.id) == 0  # HTTP 200 without TTL: the lease is gone
    assert gateway.time_to_live(lease.id) == -1


def test_error_statuses_are_typed(gateway: EtcdGateway, prefix: str) -> None:
    with pytest.raises(EtcdResponseError) as info:
        gateway.put(f"{prefix}/k".encode(), b"v", lease=12345)
    assert info.value.not_found
    assert (info.value.status, info.value.code) == (404, 5)
    assert "lease not found" in str(info.value)

    with pytest.raises(EtcdResponseError) as info:
        gateway.compact(10**12)  # a future revision: OUT_OF_RANGE
    assert info.value.code == 11
    assert not info.value.not_found

    with pytest.raises(EtcdResponseError) as info:
        gateway.call("/v3/kv/put", {"key": "not base64!"})
    assert info.value.status in (400, 500)

    with pytest.raises(EtcdResponseError) as info:
        gateway.call("/v3/no/such/path", {})
    assert info.value.status == 404


def test_unreachable_endpoint_is_etcd_unavailable() -> None:
    port = free_port()  # nothing listens there
    gateway = EtcdGateway(f"127.0.0.1:{port}", timeout=1.0)
    with pytest.raises(EtcdUnavailable, match=f"127.0.0.1:{port}"):
        gateway.get(b"k")
    with pytest.raises(EtcdUnavailable):
        gateway.watch(b"k", 1)


def test_silent_endpoint_times_out() -> None:
    with socket.socket() as silent:  # accepts (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        gateway = EtcdGateway(f"127.0.0.1:{silent.getsockname()[1]}", timeout=0.3)
        started = time.monotonic()
        with pytest.raises(EtcdUnavailable, match="timed out"):
            gateway.get(b"k")
        assert time.monotonic() - started < 2.0


def test_fails_over_to_the_next_endpoint_and_stays_there(etcd: EtcdProcess, prefix: str) -> None:
    dead = f"127.0.0.1:{free_port()}"
    gateway = EtcdGateway([dead, etcd.endpoint], timeout=1.0)
    gateway.put(f"{prefix}/k".encode(), b"v")
    assert gateway._preferred == 1  # the next call starts with the endpoint that answered
    got = gateway.get(f"{prefix}/k".encode())
    assert got is not None
    assert got.value == b"v"
    with gateway.watch(f"{prefix}/".encode(), 1) as stream:
        first = stream.read(timeout=5)
    assert first is not None
    assert first.created


@pytest.fixture
def not_etcd() -> Iterator[str]:
    """An HTTP server that answers every POST with 200 and a body that is not JSON."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = b"<html>hello</html>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_non_json_answer_is_a_protocol_error(not_etcd: str) -> None:
    with pytest.raises(EtcdProtocolError, match="not JSON"):
        EtcdGateway(not_etcd, timeout=2.0).get(b"k")


def test_watch_put_and_delete_events(gateway: EtcdGateway, prefix: str) -> None:
    base = f"{prefix}/".encode()
    start = gateway.get_prefix(base).revision + 1
    with gateway.watch(base, start) as stream:
        created = stream.read(timeout=5)
        assert created is not None
        assert created.created
        gateway.put(base + b"x", b"1")
        gateway.put(base[:-1] + b"0", b"outside")  # not in the watched range
        gateway.delete(base + b"x")
        events = []
        while len(events) < 2:
            message = stream.read(timeout=5)
            assert message is not None
            events.extend(message.events)
    assert [(e.type, e.kv.key, e.kv.value) for e in events] == [
        ("PUT", base + b"x", b"1"),  # the gateway omits "type" for PUT
        ("DELETE", base + b"x", b""),
    ]


def test_watch_from_a_compacted_revision_is_canceled(gateway: EtcdGateway, prefix: str) -> None:
    base = f"{prefix}/".encode()
    first = gateway.put(base + b"k", b"1")
    last = gateway.put(base + b"k", b"2")
    gateway.compact(last)
    with gateway.watch(base, first) as stream:
        messages = [stream.read(timeout=5), stream.read(timeout=5)]
    assert messages[0] is not None
    assert messages[0].created
    assert messages[1] is not None
    assert messages[1].canceled
    assert messages[1].compact_revision == last


def test_watch_read_timeout_and_close_from_another_thread(
    gateway: EtcdGateway, prefix: str
) -> None:
    stream = gateway.watch(f"{prefix}/".encode(), 0)
    assert stream.read(timeout=5) is not None  # created
    with pytest.raises(TimeoutError):
        stream.read(timeout=0.05)  # an idle watch sends nothing
    stream.close()

    stream = gateway.watch(f"{prefix}/".encode(), 0)
    assert stream.read(timeout=5) is not None
    result: list[object] = []
    reader = threading.Thread(target=lambda: result.append(stream.read(timeout=None)))
    reader.start()
    time.sleep(0.1)  # let it block in recv
    started = time.monotonic()
    stream.close()
    reader.join(2)
    assert not reader.is_alive()
    assert result == [None]
    assert time.monotonic() - started < 1.0
    assert stream.read() is None
    stream.close()  # idempotent


def test_watch_ends_when_etcd_stops(etcd_own: EtcdProcess) -> None:
    gateway = etcd_own.gateway()
    with gateway.watch(b"x/", 0) as stream:
        assert stream.read(timeout=5) is not None
        etcd_own.stop()
        # A graceful stop sends a stream error first ("transport is closing" or "the client
        # connection is closing"), then EOF.
        try:
            end = stream.read(timeout=5)
        except EtcdUnavailable as exc:
            assert "closing" in str(exc)
            end = stream.read(timeout=5)
        assert end is None


def test_watch_ends_when_etcd_is_killed(etcd_own: EtcdProcess) -> None:
    with etcd_own.gateway().watch(b"x/", 0) as stream:
        assert stream.read(timeout=5) is not None
        etcd_own.kill()
        assert stream.read(timeout=5) is None  # EOF (or reset): no error line from a dead etcd
