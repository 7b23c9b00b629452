"""`rpcpoll demo`: the whole workflow on the bundled echo service, in one command.

It does what a user does: generates code from idl/echo.proto into a temporary directory,
writes a handler for the generated `EchoServiceHandler`, starts it with `rpcpoll serve` in its
own process on a free loopback port, calls it from the generated client, prints a latency
summary and stops the server with SIGTERM (a graceful shutdown).
"""

from __future__ import annotations

import importlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import Any, TextIO

import click

from .codegen import generate, write

__all__ = ["demo_command"]

HANDLER_SOURCE = '''\
"""The demo's handler: what you write after `rpcpoll gen`."""

from echo_rpc import EchoRequest, EchoResponse, EchoServiceHandler


class EchoHandler(EchoServiceHandler):
    def echo(self, request: EchoRequest, context) -> EchoResponse:
        return EchoResponse(message=request.message, payload=request.payload)
'''

_LISTENING = re.compile(r"serving \S+ \(\S+\) on (?P<address>\S+)")


def bundled_echo_proto() -> Path:
    """idl/echo.proto: shipped in the wheel as rpcpoll/_idl, or read from a source checkout."""
    packaged = Path(str(resources.files("rpcpoll") / "_idl" / "echo.proto"))
    if packaged.is_file():
        return packaged
    return Path(__file__).resolve().parents[1] / "idl" / "echo.proto"


@click.command("demo")
@click.option("--calls", default=3000, show_default=True, help="number of calls to make")
@click.option("--payload", default=128, show_default=True, help="payload bytes per call")
def demo_command(calls: int, payload: int) -> None:
    """Generate, serve and call the bundled echo service, then print calls/s, p50 and p99."""
    with tempfile.TemporaryDirectory(prefix="rpcpoll-demo-") as tmp:
        root = Path(tmp)
        gen = root / "gen"
        proto = root / "idl" / "echo.proto"
        proto.parent.mkdir()
        proto.write_text(bundled_echo_proto().read_text())

        click.echo(f"1. rpcpoll gen {proto.relative_to(root)} -o gen/")
        for path in write(generate([proto], [proto.parent]), gen):
            click.echo(f"     wrote {path.relative_to(root)}")
        (gen / "echo_server.py").write_text(HANDLER_SOURCE)
        click.echo("     wrote gen/echo_server.py (the handler: EchoHandler)")

        click.echo("2. rpcpoll serve echo_server:EchoHandler --address 127.0.0.1:0")
        command = [sys.executable, "-m", "rpcpoll", "serve", "echo_server:EchoHandler"]
        server = subprocess.Popen(
            [*command, "--address", "127.0.0.1:0", "--exit-wait", "2"],
            cwd=gen,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            address = _wait_for_address(server)
            click.echo(f"     listening on {address} (pid {server.pid})")
            sys.path.insert(0, str(gen))
            try:
                module = importlib.import_module("echo_rpc")
                latencies = _call(module, address, calls, payload)
            finally:
                sys.path.remove(str(gen))
                sys.modules.pop("echo_rpc", None)
        finally:
            code = _stop(server)
        _summarize(latencies, payload)
        click.echo(f"4. SIGTERM: the server shut down gracefully (exit status {code})")
        if code != 0:
            raise click.ClickException(f"the server exited with status {code}")


def _wait_for_address(server: subprocess.Popen[str], timeout: float = 30.0) -> str:
    assert server.stderr is not None
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        line = server.stderr.readline()
        if not line:
            break
        lines.append(line)
        match = _LISTENING.search(line)
        if match:
            return match["address"]
    server.kill()
    raise click.ClickException("the server did not start:\n" + "".join(lines))


def _call(module: ModuleType, address: str, calls: int, payload: int) -> list[float]:
    request = module.EchoRequest(message="hello", payload=b"x" * payload)
    latencies = []
    click.echo(f"3. {calls} calls from the generated EchoServiceClient")
    with module.EchoServiceClient(address, timeout=5.0) as client:
        client.echo(request)  # connect and warm up
        for i in range(calls):
            started = time.perf_counter()
            reply = client.echo(request)
            latencies.append(time.perf_counter() - started)
            if reply.payload != request.payload:
                raise click.ClickException("the echo came back different")
            _progress(sys.stdout, i + 1, calls)
    if sys.stdout.isatty():
        click.echo("")
    return latencies


def _progress(out: TextIO, done: int, total: int, width: int = 40) -> None:
    """A bar redrawn in place on a terminal; elsewhere (a pipe, a CI log) a plain line at each
    tenth of the way, so the output has no carriage returns."""
    if out.isatty():
        if done % max(1, total // width) and done != total:
            return
        filled = width * done // total
        out.write(f"\r     [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
    else:
        if done % max(1, total // 10) and done != total:
            return
        out.write(f"     {done}/{total} calls ({100 * done // total}%)\n")
    out.flush()


def _summarize(latencies: list[float], payload: int) -> None:
    if not latencies:
        return
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1e6

    total = sum(latencies)
    click.echo(
        f"     {len(latencies)} calls of {payload} B: {len(latencies) / total:,.0f} calls/s, "
        f"p50 {pct(0.50):.0f} us, p99 {pct(0.99):.0f} us, max {ordered[-1] * 1e6:.0f} us"
    )


def _stop(server: subprocess.Popen[Any]) -> int:
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    if server.stderr is not None:
        server.stderr.close()
    return server.returncode if server.returncode is not None else -1
