"""Bad input to `rpcpoll serve` and to clients: a one-line error and a documented exit status
(0 stopped, 1 serving failed, 2 bad arguments), never a traceback; addresses parsed by one
strict parser."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hostile_testutil import ServeProcess

from rpcpoll.examples.echo_rpc import EchoRequest, EchoServiceClient
from rpcpoll.transport.address import parse_address


def serve(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rpcpoll", "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--address", "localhost"], "expected HOST:PORT, got 'localhost'"),
        (["--address", "127.0.0.1:99999"], "between 0 and 65535, got 99999"),
        (["--address", "http://127.0.0.1:80"], "does not speak http"),
        (["--log-level", "verbose"], "'verbose' is not one of"),
        (["--max-frame-size", "lots"], "expected a size such as"),
        (["--max-calls", "0"], "--max-calls"),
        (["./no_such_file.py:Handler"], "no such file: ./no_such_file.py"),
    ],
)
def test_bad_serve_arguments_fail_with_one_line_and_status_2(args: list[str], message: str) -> None:
    done = serve(*args)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and message in errors[0], done.stderr
    assert "Traceback" not in done.stderr


def test_serve_loads_a_handler_from_a_file_path(
    tmp_path: Path, serve_process: Callable[..., ServeProcess]
) -> None:
    folder = tmp_path / "svc"
    folder.mkdir()
    (folder / "helper.py").write_text("SUFFIX = '!'\n")
    (folder / "svc.py").write_text(
        "from helper import SUFFIX\n"  # its neighbours are importable
        "from rpcpoll.examples.echo_rpc import EchoResponse, EchoServiceHandler\n"
        "class Loud(EchoServiceHandler):\n"
        "    def echo(self, request, context):\n"
        "        return EchoResponse(message=request.message.upper() + SUFFIX)\n"
    )
    server = serve_process(str(folder / "svc.py") + ":Loud")
    with EchoServiceClient(server.address, timeout=5) as client:
        assert client.echo(EchoRequest(message="hey")).message == "HEY!"
    assert server.stop() == 0


def test_limit_flags_reach_the_server(serve_process: Callable[..., ServeProcess]) -> None:
    server = serve_process("--max-frame-size", "64KiB", "--frame-timeout", "0.5")
    with EchoServiceClient(server.address, timeout=5) as client:
        assert client.echo(EchoRequest(payload=b"x" * 60_000)).payload == b"x" * 60_000
        with pytest.raises(Exception, match="UNAVAILABLE"):
            client.echo(EchoRequest(payload=b"x" * 70_000))  # over the server's 64 KiB


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("http://127.0.0.1:8888", "does not speak http"),
        ("localhost", "expected HOST:PORT"),
        ("127.0.0.1:70000", "between 0 and 65535"),
        ("::1:8888", "needs brackets"),
    ],
)
def test_a_client_with_a_bad_target_fails_at_once_with_one_line(target: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        EchoServiceClient(target)
    assert "\n" not in str(info.value)


def test_addresses_that_are_fine_still_parse() -> None:
    assert parse_address("127.0.0.1:0") == ("tcp", ("127.0.0.1", 0))
    assert parse_address("[::1]:8888") == ("tcp", ("::1", 8888))
    assert parse_address(":8888") == ("tcp", ("", 8888))
    assert parse_address(("10.0.0.1", 65535)) == ("tcp", ("10.0.0.1", 65535))
    assert parse_address("unix:/tmp/x.sock") == ("unix", "/tmp/x.sock")
