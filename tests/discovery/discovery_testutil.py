"""Helpers for the discovery tests: a real etcd process, bounded waits, a change recorder."""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from testutil import wait_until

from rpcpoll.discovery import EtcdGateway, Instance

START_TIMEOUT = 10.0  # etcd answers /health in ~0.5 s fresh, ~2 s on restart (election)
STOP_TIMEOUT = 5.0  # SIGTERM normally stops it in < 0.5 s; SIGKILL after this


def find_etcd() -> str | None:
    """The etcd binary, or None when it is not installed."""
    found = shutil.which("etcd")
    if found:
        return found
    return "/usr/bin/etcd" if os.access("/usr/bin/etcd", os.X_OK) else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class EtcdTLS:
    """HTTPS for a test etcd: its certificate (serverAuth and clientAuth: its gateway presents
    it to its own gRPC server), the CA clients must be signed by, and a client context the
    fixture uses for /health."""

    cert: str
    key: str
    client_ca: str
    client: ssl.SSLContext


class EtcdProcess:
    """One single-member etcd on 127.0.0.1 (client and peer ports), data in `data_dir`.

    `start()` returns once /health says true; `stop()` is SIGTERM (SIGKILL after a bound);
    `kill()` is SIGKILL. `start()` again restarts on the same data dir and ports. With `tls`,
    clients speak HTTPS and must present a certificate (`--client-cert-auth`).
    """

    def __init__(
        self, binary: str, data_dir: Path, name: str = "test", tls: EtcdTLS | None = None
    ) -> None:
        self.tls = tls
        self.binary = binary
        self.data_dir = data_dir
        self.name = name
        self.client_port = free_port()
        self.peer_port = free_port()
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def url(self) -> str:
        return f"etcd://{self.endpoint}"

    def gateway(self, timeout: float = 3.0) -> EtcdGateway:
        return EtcdGateway(self.endpoint, timeout=timeout)

    def start(self) -> None:
        assert self.process is None, "etcd already running"
        scheme = "https" if self.tls is not None else "http"
        client = f"{scheme}://127.0.0.1:{self.client_port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        args = [
            self.binary,
            f"--name={self.name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster={self.name}={peer}",
            "--initial-cluster-state=new",  # ignored on restart: the WAL has the cluster
            "--log-level=warn",
        ]
        if self.tls is not None:
            args += [
                f"--cert-file={self.tls.cert}",
                f"--key-file={self.tls.key}",
                f"--trusted-ca-file={self.tls.client_ca}",
                "--client-cert-auth",
            ]
        with open(self.log_path, "ab") as log:  # closed here: the child keeps its own copy
            self.process = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not self._healthy():
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                raise RuntimeError(f"etcd exited with {code} while starting: {self.log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"etcd not healthy after {START_TIMEOUT} s: {self.log_tail()}")
            time.sleep(0.02)

    def _healthy(self) -> bool:
        conn: http.client.HTTPConnection
        if self.tls is not None:
            conn = http.client.HTTPSConnection(
                "127.0.0.1", self.client_port, timeout=1.0, context=self.tls.client
            )
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.client_port, timeout=1.0)
        try:
            conn.request("GET", "/health")
            return b'"true"' in conn.getresponse().read()
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def stop(self) -> None:
        """SIGTERM and wait; SIGKILL when it has not exited after STOP_TIMEOUT."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        self._end(signal.SIGKILL)

    def _end(self, sig: int) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_TIMEOUT)

    def log_tail(self, size: int = 2000) -> str:
        try:
            return self.log_path.read_bytes()[-size:].decode("utf-8", "replace")
        except OSError:
            return "(no log)"


class Changes:
    """Records what a subscription's `on_change` got; thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lists: list[list[Instance]] = []

    def __call__(self, instances: Sequence[Instance]) -> None:
        with self.lock:
            self.lists.append(list(instances))

    @property
    def count(self) -> int:
        with self.lock:
            return len(self.lists)

    def latest(self) -> list[Instance] | None:
        with self.lock:
            return list(self.lists[-1]) if self.lists else None

    def addresses(self) -> set[str] | None:
        latest = self.latest()
        return None if latest is None else {i.address for i in latest}

    def all(self) -> list[list[Instance]]:
        with self.lock:
            return [list(x) for x in self.lists]

    def wait_for(self, addresses: set[str], timeout: float = 5.0) -> None:
        """Wait until the latest notified list has exactly these addresses."""
        wait_until(
            lambda: self.addresses() == addresses,
            timeout,
            f"a notification with {sorted(addresses)} (latest: {self.addresses()})",
        )
