"""What `rpcpoll serve` adds: handler warnings, each record's own logger name, the forced
exit on a second Ctrl-C, and the extra services' options."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

from ops_testutil import Serve, run

from rpcpoll.examples.echo import EchoHandler
from rpcpoll.examples.echo_rpc import EchoRequest, EchoResponse, EchoServiceClient
from rpcpoll.examples.echo_rpc import EchoServiceHandler as Base
from rpcpoll.server.handler_checks import handler_warnings
from rpcpoll.server.serve_extras import FORCED_EXIT_STATUS, ServeExtras, log_format


class Empty(Base):
    pass


class Misspelt(Base):
    def eco(self, request: Any, context: Any) -> EchoResponse:
        return EchoResponse()


class WireName(Base):
    def Echo(self, request: Any, context: Any) -> EchoResponse:
        return EchoResponse()


class WithHelpers(EchoHandler):
    def ecology(self) -> None:  # a helper next to the real rpc: fine
        pass


def test_a_handler_overriding_no_rpc_is_reported() -> None:
    (warning,) = handler_warnings(Empty)
    assert "Empty overrides no rpc of echo.EchoService" in warning and "echo" in warning


def test_a_misspelt_rpc_is_reported_with_the_name_it_resembles() -> None:
    warnings = handler_warnings(Misspelt)
    assert any("Misspelt.eco is not an rpc of echo.EchoService: did you mean echo?" in w
               for w in warnings)  # fmt: skip


def test_the_wire_name_instead_of_the_python_name_is_reported() -> None:
    assert any(
        "WireName.Echo" in w and "did you mean echo?" in w for w in handler_warnings(WireName)
    )


def test_a_correct_handler_gets_no_warning() -> None:
    assert handler_warnings(EchoHandler) == []
    assert handler_warnings(WithHelpers) == []


def test_log_lines_name_their_own_logger() -> None:
    assert "%(name)s" in log_format(False) and "rpcpoll" not in log_format(False)
    assert "%(name)s[%(process)d]" in log_format(True)


def test_extras_options_come_back_for_workers() -> None:
    options: dict[str, Any] = {"no_health": True, "no_describe": False, "other": 1}
    extras = ServeExtras.pop_from(options)
    assert options == {"other": 1}
    assert (extras.health, extras.describe) == (False, True)
    assert extras.argv() == ["--no-health"]


def test_serve_logs_records_under_their_own_names_and_warns_about_the_handler(
    handler_dir: Path,
) -> None:
    served = Serve("ops_service:Misspelt", cwd=handler_dir)
    code, log = served.stop()
    assert code == 0, log
    assert " rpcpoll.server INFO serving echo.EchoService" in log
    assert "rpcpoll.server WARNING Misspelt.eco is not an rpc" in log


def test_the_user_loggers_name_is_shown(server: Serve) -> None:
    assert any(" opsapp.handler INFO handler ready" in line for line in server.log)


def test_a_second_ctrl_c_exits_at_once_without_waiting_for_calls(handler_dir: Path) -> None:
    served = Serve("ops_service:OpsEcho", cwd=handler_dir)
    failures: list[BaseException] = []

    def slow_call() -> None:
        try:
            with EchoServiceClient(served.address, timeout=30) as client:
                client.echo(EchoRequest(message="sleep:20"))
        except Exception as exc:  # the server goes away: expected
            failures.append(exc)

    caller = threading.Thread(target=slow_call)
    caller.start()
    time.sleep(0.3)
    served.send(signal.SIGINT)
    time.sleep(0.3)
    assert served.proc.poll() is None  # draining: waiting for the slow call
    started = time.monotonic()
    code, log = served.stop(signal.SIGINT)
    caller.join(10)
    assert code == FORCED_EXIT_STATUS, log
    assert time.monotonic() - started < 3
    assert "second interrupt: exiting now" in log
    assert failures and not caller.is_alive()


def test_serve_help_lists_the_new_options() -> None:
    code, out, _err = run("serve", "--help")
    assert code == 0 and "--no-health" in out and "--no-describe" in out and "130" in out
