"""`rpcpoll serve --tls-cert/--tls-key/--tls-client-ca`, with --workers, and SIGHUP reloads.

Runs the real command as a user would (the bundled echo service) and reads its log.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pki import PKI, Issued
from testutil import wait_until

import rpcpoll
from rpcpoll.examples.echo_rpc import EchoRequest, EchoServiceClient
from rpcpoll.transport import dial_connection

SERVING = re.compile(r"serving \S+ \(\S+\) on (?P<address>\S+)")
RELOADED = "reloaded the TLS certificate"


class Serving:
    """A running `rpcpoll serve` and its log."""

    def __init__(self, proc: subprocess.Popen[bytes], log_path: Path) -> None:
        self.proc = proc
        self.log_path = log_path
        self.address = ""

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, predicate: Callable[[str], object], what: str) -> None:
        def check() -> object:
            if self.proc.poll() is not None:
                pytest.fail(f"rpcpoll serve exited ({self.proc.returncode}):\n{self.log()}")
            return predicate(self.log())

        wait_until(check, 20.0, what)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(15)


@pytest.fixture
def files(tmp_path: Path, pki: PKI) -> Path:
    """A directory with cert.pem and key.pem (the server certificate), to be replaced."""
    directory = tmp_path / "tls"
    directory.mkdir()
    install(directory, pki.server)
    return directory


def install(directory: Path, issued: Issued) -> None:
    """Put a certificate and key in place atomically, as a deployment would."""
    for source, name in ((issued.cert, "cert.pem"), (issued.key, "key.pem")):
        shutil.copy(source, directory / f"{name}.new")
        os.replace(directory / f"{name}.new", directory / name)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Serving]]:
    started: list[Serving] = []

    def start(*args: str) -> Serving:
        log_path = tmp_path / f"serve-{len(started)}.log"
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "rpcpoll", "serve", "--address", "127.0.0.1:0", *args],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=tmp_path,
            )
        serving = Serving(proc, log_path)
        started.append(serving)
        serving.wait_for_log(SERVING.search, "the serving line")
        match = SERVING.search(serving.log())
        assert match is not None
        serving.address = match["address"]
        return serving

    try:
        yield start
    finally:
        for serving in started:
            if serving.proc.poll() is None:
                serving.proc.kill()
                serving.proc.wait(10)
            for pid in re.findall(r"started \(pid (\d+)\)", serving.log()):
                try:
                    if b"rpcpoll" in Path(f"/proc/{pid}/cmdline").read_bytes():
                        os.kill(int(pid), signal.SIGKILL)
                except OSError:
                    pass


def server_name(address: str, context: ssl.SSLContext) -> str | None:
    """The common name of the certificate a new connection to `address` is shown."""
    conn = dial_connection("tcp", address, 5.0, ssl=context, direct=True)
    try:
        identity = conn.peer_identity
        return None if identity is None else identity.common_name
    finally:
        conn.close()


def test_serve_tls_and_reload_on_sighup_without_dropping_connections(
    serve: Callable[..., Serving], files: Path, pki: PKI, client_ssl: ssl.SSLContext
) -> None:
    serving = serve("--tls-cert", str(files / "cert.pem"), "--tls-key", str(files / "key.pem"))
    with EchoServiceClient(serving.address, timeout=5.0, ssl=client_ssl, mux=1) as client:
        assert client.echo(EchoRequest(message="before")).message == "before"
        assert server_name(serving.address, client_ssl) == "server"

        install(files, pki.ca.issue("server-renewed"))
        serving.proc.send_signal(signal.SIGHUP)
        serving.wait_for_log(lambda log: RELOADED in log, "the reload")

        assert client.echo(EchoRequest(message="after")).message == "after"  # same connection
        assert server_name(serving.address, client_ssl) == "server-renewed"

        (files / "key.pem").write_text("garbage")  # a bad reload keeps the current certificate
        serving.proc.send_signal(signal.SIGHUP)
        serving.wait_for_log(lambda log: "still serving the previous" in log, "the failure")
        assert server_name(serving.address, client_ssl) == "server-renewed"
        assert client.echo(EchoRequest(message="still")).message == "still"
    assert serving.stop() == 0, serving.log()
    assert "Traceback" not in serving.log()


def test_serve_tls_with_two_workers_reloads_every_worker(
    serve: Callable[..., Serving], files: Path, pki: PKI, client_ssl: ssl.SSLContext
) -> None:
    serving = serve(
        "--workers", "2", "--tls-cert", str(files / "cert.pem"), "--tls-key", str(files / "key.pem")
    )
    with EchoServiceClient(serving.address, timeout=5.0, ssl=client_ssl, mux=4) as client:
        for i in range(8):
            assert client.echo(EchoRequest(message=f"m{i}")).message == f"m{i}"
        install(files, pki.ca.issue("server-renewed"))
        serving.proc.send_signal(signal.SIGHUP)
        serving.wait_for_log(lambda log: log.count(RELOADED) == 2, "both workers to reload")
        for i in range(8):  # the ring's connections were made before the reload
            assert client.echo(EchoRequest(message=f"n{i}")).message == f"n{i}"
    # 16 new connections, spread over both workers by the kernel: all see the new certificate.
    assert {server_name(serving.address, client_ssl) for _ in range(16)} == {"server-renewed"}
    assert serving.stop() == 0, serving.log()


def test_serve_mtls_requires_a_client_certificate(
    serve: Callable[..., Serving],
    files: Path,
    pki: PKI,
    client_ssl: ssl.SSLContext,
    client_mtls: ssl.SSLContext,
) -> None:
    serving = serve(
        "--tls-cert", str(files / "cert.pem"), "--tls-key", str(files / "key.pem"),
        "--tls-client-ca", pki.ca.cert,
    )  # fmt: skip
    with EchoServiceClient(serving.address, timeout=5.0, ssl=client_mtls) as client:
        assert client.echo(EchoRequest(message="mine")).message == "mine"
    for options, refusal in (({"ssl": client_ssl}, "certificate required"), ({}, "requires TLS")):
        refused = EchoServiceClient(serving.address, timeout=5.0, **options)
        with refused, pytest.raises(rpcpoll.UnavailableError, match=refusal):
            refused.echo(EchoRequest(message="refused"))
    assert serving.stop() == 0, serving.log()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tls-cert", "missing.pem"], "no such file"),
        (["--tls-key", "key.pem"], "need --tls-cert"),
        (["--tls-cert", "{cert}", "--tls-key", "{other_key}"], "must match the certificate"),
        (["--tls-cert", "{cert}", "--tls-key", "{key}", "--tls-client-ca", "{key}"], "CA file"),
    ],
    ids=["missing", "key-alone", "wrong-key", "bad-ca"],
)
def test_unusable_tls_files_are_one_line_and_exit_status_2(
    tmp_path: Path, pki: PKI, args: list[str], message: str
) -> None:
    names = {"cert": pki.server.cert, "key": pki.server.key, "other_key": pki.client.key}
    argv = [arg.format(**names) for arg in args]
    result = subprocess.run(
        [sys.executable, "-m", "rpcpoll", "serve", "--address", "127.0.0.1:0", *argv],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=30,
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
