"""Helpers for the operations tests: `rpcpoll` commands in their own processes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

LISTENING = re.compile(r"serving \S+ \(\S+\) on (?P<address>\S+)")

#: A handler for `rpcpoll serve` used by these tests: echo, with ways to fail, to sleep and
#: to show the metadata it received; it also logs through its own logger.
HANDLER_SOURCE = """\
import logging
import time

import rpcpoll
from rpcpoll.examples.echo_rpc import EchoResponse, EchoServiceHandler

log = logging.getLogger("opsapp.handler")


class OpsEcho(EchoServiceHandler):
    def __init__(self):
        log.info("handler ready")

    def echo(self, request, context):
        if request.message.startswith("fail:"):
            raise rpcpoll.RpcError(int(request.message[5:]), "asked to fail")
        if request.message.startswith("sleep:"):
            time.sleep(float(request.message[6:]))
        for key, value in context.metadata.items():
            context.set_reply_metadata("seen-" + key, value)
        return EchoResponse(message=request.message, payload=request.payload)


class Misspelt(EchoServiceHandler):
    def eco(self, request, context):
        return EchoResponse(message=request.message)
"""


def rpcpoll_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "rpcpoll", *args]


def run(*args: str, cwd: Path | None = None, stdin: str | None = None, timeout: float = 60):
    """`rpcpoll ARGS...` to completion: (exit status, stdout, stderr)."""
    done = subprocess.run(
        rpcpoll_command(*args),
        capture_output=True,
        text=True,
        cwd=cwd,
        input=stdin,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    return done.returncode, done.stdout, done.stderr


class Serve:
    """`rpcpoll serve ARGS...` in its own process, on a free loopback port."""

    def __init__(self, *args: str, cwd: Path | None = None) -> None:
        self.proc = subprocess.Popen(
            rpcpoll_command("serve", *args, "--address", "127.0.0.1:0", "--exit-wait", "5"),
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.proc.stderr is not None
        self.signalled = False
        self.log: list[str] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.log.append(line)
            match = LISTENING.search(line)
            if match:
                self.address = match["address"]
                return
        self.stop()
        pytest.fail("rpcpoll serve did not start:\n" + "".join(self.log))

    def send(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)
        self.signalled = True

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> tuple[int, str]:
        """Signal (unless `send` did: a second signal may land after the first stop's
        handlers are gone), wait, and return (exit status, the whole log)."""
        if self.proc.poll() is None and (not self.signalled or sig != signal.SIGTERM):
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        assert self.proc.stderr is not None
        rest = self.proc.stderr.read()
        self.proc.stderr.close()
        return self.proc.returncode, "".join(self.log) + rest
