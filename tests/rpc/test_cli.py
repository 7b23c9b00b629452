"""`rpcpoll serve` and `rpcpoll demo` as a user runs them: separate processes, signals."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rpcpoll.codegen import check, generate
from rpcpoll.examples.echo_rpc import EchoRequest, EchoServiceClient

REPO = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"serving (?P<service>\S+) \((?P<handler>\S+)\) on (?P<address>\S+)")


def rpcpoll_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "rpcpoll", *args]


def start_serve(*args: str, cwd: Path | None = None) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        rpcpoll_command("serve", *args),
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 30
    seen = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        match = LISTENING.search(line)
        if match:
            proc.startup_log = "".join(seen)  # type: ignore[attr-defined]
            return proc, match["address"]
    proc.kill()
    proc.wait()
    proc.stderr.close()
    pytest.fail("rpcpoll serve did not start:\n" + "".join(seen))


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> tuple[int, str]:
    proc.send_signal(sig)
    try:
        proc.wait(15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stderr is not None
    rest = proc.stderr.read()
    proc.stderr.close()
    return proc.returncode, rest


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_without_a_handler_serves_the_bundled_echo_and_stops_on_a_signal(sig: int) -> None:
    proc, address = start_serve("--address", "127.0.0.1:0")
    try:
        with EchoServiceClient(address, timeout=5) as client:
            reply = client.echo(EchoRequest(message="cli", payload=b"\x01\x02"))
        assert (reply.message, reply.payload) == ("cli", b"\x01\x02")
    finally:
        code, log = stop(proc, sig)
    assert code == 0, log
    assert "shutting down" in log and "Traceback" not in log


def test_serve_a_user_handler_on_a_unix_socket(tmp_path: Path) -> None:
    (tmp_path / "my_service.py").write_text(
        "from rpcpoll.examples.echo_rpc import EchoResponse, EchoServiceHandler\n"
        "class Shouty(EchoServiceHandler):\n"
        "    def echo(self, request, context):\n"
        "        return EchoResponse(message=request.message.upper())\n"
    )
    sock = tmp_path / "svc.sock"
    proc, address = start_serve("my_service:Shouty", "--unix", str(sock), cwd=tmp_path)
    try:
        assert address == f"unix:{sock}"
        with EchoServiceClient(address, timeout=5) as client:
            assert client.echo(EchoRequest(message="hey")).message == "HEY"
    finally:
        code, log = stop(proc)
    assert code == 0, log
    assert not sock.exists()


def test_serve_runs_an_async_handler_class() -> None:
    from rpcpoll.examples.echo_rpc import EchoRequest, EchoServiceClient

    proc, address = start_serve(
        "rpcpoll.examples.echo:AsyncEchoHandler", "--address", "127.0.0.1:0", "--no-uvloop"
    )
    try:
        with EchoServiceClient(address, timeout=5.0) as client:
            assert client.echo(EchoRequest(message="hi")).message == "hi"
    finally:
        code, stderr = stop(proc)
    assert code == 0, stderr
    assert "async handlers on asyncio" in proc.startup_log  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("handler", "message"),
    [
        ("no_such_module:Handler", "cannot import 'no_such_module'"),
        ("rpcpoll.examples.echo:Missing", "has no 'Missing'"),
        ("json:JSONDecoder", "not a subclass of a generated handler"),
        ("not-a-spec", "expected module:HandlerClass"),
    ],
)
def test_serve_with_a_bad_handler_path_fails_clearly(handler: str, message: str) -> None:
    done = subprocess.run(
        rpcpoll_command("serve", handler, "--address", "127.0.0.1:0"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_serve_on_a_busy_address_fails_clearly() -> None:
    proc, address = start_serve("--address", "127.0.0.1:0")
    try:
        done = subprocess.run(
            rpcpoll_command("serve", "--address", address),
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        stop(proc)
    assert done.returncode == 1
    assert "cannot listen on" in done.stderr and "Traceback" not in done.stderr


def test_demo_generates_serves_calls_and_shuts_down() -> None:
    done = subprocess.run(
        rpcpoll_command("demo", "--calls", "300"), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "300 calls of 128 B" in done.stdout and "calls/s" in done.stdout
    assert "p50" in done.stdout and "p99" in done.stdout
    assert "exit status 0" in done.stdout


def test_the_bundled_echo_module_is_what_rpcpoll_gen_writes() -> None:
    generation = generate([REPO / "idl" / "echo.proto"], [REPO / "idl"])
    assert check(generation, REPO / "rpcpoll" / "examples") == []
