"""`rpcpoll bench` against a live `rpcpoll serve`: counts, percentiles, errors by status,
JSON output, progress lines off a terminal; and its summary and progress pieces alone."""

from __future__ import annotations

import io
import json

import pytest
from ops_testutil import Serve, run

from rpcpoll.tools.bench.cli import parse_duration
from rpcpoll.tools.bench.progress import Progress
from rpcpoll.tools.bench.report import histogram, percentile, render_text, summarize
from rpcpoll.tools.bench.worker import Result

ECHO = "echo.EchoService/Echo"


def bench_json(*args: str) -> tuple[int, dict, str]:
    code, out, err = run("bench", *args, "--format", "json", timeout=120)
    return code, (json.loads(out) if out.strip() else {}), err


def test_a_counted_run_reports_every_call(server: Serve) -> None:
    code, report, err = bench_json(
        server.address, ECHO, "-d", '{"message": "b", "payload": "eHg="}', "-c", "16", "-n", "3000"
    )
    assert code == 0, err
    assert report["calls"] == report["ok"] == 3000 and report["errors"] == {}
    latency = report["latency_ms"]
    order = [latency[key] for key in ("min", "p50", "p90", "p99", "p99.9", "max")]
    assert order == sorted(order) and order[0] > 0
    assert sum(row["count"] for row in report["histogram"]) == 3000
    assert report["qps"] > 0 and report["seconds"] > 0
    client = report["client"]
    assert (client["processes"], client["connections"], client["concurrency"]) == (1, 4, 16)
    assert len(client["cpu_per_process"]) == 1 and isinstance(client["saturated"], bool)


def test_two_processes_split_the_calls_and_mux_flags_them_out_of_order(server: Serve) -> None:
    code, report, err = bench_json(
        server.address, ECHO, "-c", "8", "-n", "1001", "-j", "2", "--connections", "2", "--mux"
    )
    assert code == 0, err
    assert report["ok"] == 1001
    assert report["client"]["processes"] == 2 and report["client"]["connections"] == 2


def test_errors_are_counted_by_status(server: Serve) -> None:
    code, report, _err = bench_json(
        server.address, ECHO, "-d", '{"message": "fail:9"}', "-c", "4", "-n", "200"
    )
    assert report["errors"] == {"FAILED_PRECONDITION": 200} and report["ok"] == 0
    assert code == 1  # nothing succeeded


def test_a_timed_run_prints_plain_progress_lines_off_a_terminal(server: Serve) -> None:
    code, out, err = run("bench", server.address, ECHO, "-c", "8", "-z", "1.6s", timeout=120)
    assert code == 0, err
    progress = [line for line in err.splitlines() if line.startswith("progress: ")]
    assert progress and "\r" not in err
    assert "Requests/sec:" in out and "p99.9" in out and "Status codes:" in out
    assert "Latency histogram" in out


def test_bench_without_a_server_fails_in_one_line(unused_address: str) -> None:
    code, _out, err = run("bench", unused_address, ECHO, "--module", "rpcpoll.examples.echo_rpc")
    assert code == 1 and err.strip().startswith("Error: cannot connect to")
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-z", "soon"], "expected a duration"),
        (["-n", "5", "-z", "1s"], "not both"),
        (["-c", "0"], "-c"),
        (["-d", "[1]"], "bad request"),
    ],
)
def test_bench_bad_input_exits_2(server: Serve, args: list[str], message: str) -> None:
    code, _out, err = run("bench", server.address, ECHO, *args)
    assert code == 2 and message in err and "Traceback" not in err


def test_durations_parse() -> None:
    assert parse_duration("30s") == 30 and parse_duration("500ms") == 0.5
    assert parse_duration("2m") == 120 and parse_duration("1.5") == 1.5
    with pytest.raises(ValueError):
        parse_duration("0s")


def test_percentiles_and_histogram_are_exact_to_the_microsecond() -> None:
    counts = {100: 50, 200: 40, 1000: 9, 50_000: 1}
    assert percentile(counts, 50) == 100 and percentile(counts, 90) == 200
    assert percentile(counts, 99) == 1000 and percentile(counts, 99.9) == 50_000
    assert percentile({}, 50) is None
    rows = histogram(counts)
    assert sum(count for _edge, count in rows) == 100 and rows[-1][0] == 50_000
    assert [edge for edge, _count in rows] == sorted(edge for edge, _count in rows)


def test_the_summary_warns_when_the_client_is_saturated() -> None:
    busy = Result(ok=10, latency_us={120: 10}, started_ns=0, ended_ns=10**9, cpu_seconds=0.97)
    summary = summarize([busy], method=ECHO, address="a:1", connections=1, concurrency=1)
    assert summary.saturated and summary.to_json()["client"]["saturated"]
    assert "WARNING: rpcpoll bench was saturated" in render_text(summary)
    calm = Result(ok=10, latency_us={120: 10}, started_ns=0, ended_ns=10**9, cpu_seconds=0.3)
    assert not summarize([calm], method=ECHO, address="a:1", connections=1, concurrency=1).saturated


def test_progress_draws_a_bar_on_a_terminal_and_lines_elsewhere() -> None:
    tty = io.StringIO()
    bar = Progress(tty, total=100, seconds=None, tty=True)
    bar.update(50, 1)
    bar.finish()
    assert tty.getvalue().startswith("\r[") and " 50%" in tty.getvalue()
    assert tty.getvalue().endswith("\n")
    plain = io.StringIO()
    lines = Progress(plain, total=None, seconds=2.0, tty=False)
    lines.started -= 1.5  # as if 1.5 s had passed
    lines.update(3000, 0)
    assert plain.getvalue().startswith("progress: 1.5 s, 3,000 calls")
    lines.update(3100, 0)  # less than a second later: no new line
    assert plain.getvalue().count("\n") == 1


def test_bench_refuses_a_streaming_rpc_like_call(server: Serve) -> None:
    code, _out, err = run("bench", server.address, "grpc.health.v1.Health/Watch", "-n", "1")
    assert code == 1 and "streaming rpcs need rpcpoll >= 0.2" in err
