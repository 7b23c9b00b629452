"""`rpcpoll bench ADDRESS pkg.Service/Method -d JSON -c 128 (-n CALLS | -z DURATION)`: ghz for
rpcpoll services.

The request is encoded once here, as the frame a client sends (`RequestTemplate`, with the
timeout and metadata given); `-j` load processes (rpcpoll/tools/bench/worker.py) replay it over
raw connections, each keeping its share of the `-c` calls in flight, and report what came
back. Progress goes to stderr; the summary (text or `--format json`) to stdout.

Exit status: 0 when the run completed (its errors are in the summary); 1 when no call
succeeded or the server could not be reached; 2 for bad input.
"""

from __future__ import annotations

import json
import multiprocessing
import re
import sys
import time
from pathlib import Path
from typing import Any

import click

from ...protocol.frame import FLAG_OUT_OF_ORDER, RequestTemplate, append_frame, reply_info
from ...transport.address import parse_address
from ..call import request_of
from ..common import (
    EXIT_FAILED,
    check_address,
    loaded_schema,
    metadata_option,
    parse_metadata,
    read_json,
    refuse_streaming,
    schema_options,
    user_errors,
)
from .progress import Progress
from .report import Summary, render_text, saturation_warning, summarize
from .worker import Result, WorkerConfig, run_worker

__all__ = ["bench_command", "parse_duration"]

_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?)\s*(ms|s|m|h)?\s*")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}

_EPILOG = (
    "Exit status: 0 when the run completed (errors are counted in the summary); 1 when no call"
    " succeeded or the server could not be reached; 2 for bad input. See docs/operating.md."
)


def parse_duration(text: str) -> float:
    """Seconds from "30s", "500ms", "2m", "1h" or a bare number of seconds."""
    match = _DURATION.fullmatch(text)
    if match is None or float(match[1]) <= 0:
        raise ValueError(f"expected a duration such as 30s, 500ms or 2m, got {text!r}")
    return float(match[1]) * _UNITS[match[2]]


def _check_duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


@click.command("bench", epilog=_EPILOG)
@click.argument("address", callback=check_address)
@click.argument("method_name", metavar="pkg.Service/Method")
@click.option("-d", "--data", default=None, help="request as JSON; @FILE reads a file, @- stdin")
@metadata_option
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="calls in flight at once, over all connections",
)
@click.option("-n", "--total", "calls", type=click.IntRange(min=1), help="calls to make")
@click.option(
    "-z",
    "--duration",
    callback=_check_duration,
    help="run for this long (30s, 2m) instead of a number of calls",
)
@click.option(
    "-j",
    "--cpus",
    "processes",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="load processes (each uses up to one core)",
)
@click.option(
    "--connections",
    type=click.IntRange(min=1),
    default=None,
    help="connections over all processes [default: 4 per process, at most -c]",
)
@click.option(
    "--mux",
    is_flag=True,
    help="send calls flagged out-of-order, as a mux=True client does (the server runs a"
    " connection's calls concurrently); default: pipelined in order",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=20.0,
    show_default=True,
    help="per-call timeout sent to the server; also how long replies are awaited at the end",
)
@click.option(
    "--format",
    "output",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="summary format",
)
@schema_options
def bench_command(
    address: str,
    method_name: str,
    data: str | None,
    headers: tuple[str, ...],
    concurrency: int,
    calls: int | None,
    duration: float | None,
    processes: int,
    connections: int | None,
    mux: bool,
    timeout: float,
    output: str,
    module: str | None,
    protos: tuple[Path, ...],
    includes: tuple[Path, ...],
) -> None:
    """Load METHOD at ADDRESS and report throughput, latency percentiles and errors.

    -n CALLS or -z DURATION (default: -n 200 x -c). The schema comes from --module, --proto
    or the server's describe service, as for `rpcpoll call`.
    """
    if calls is not None and duration is not None:
        raise click.UsageError("give -n or -z, not both")
    if calls is None and duration is None:
        calls = 200 * concurrency
    metadata = parse_metadata(headers)
    body = read_json(data)
    with (
        loaded_schema(address, module, protos, includes, timeout=timeout) as schema,
        user_errors(),
    ):
        method = schema.method(method_name)
        refuse_streaming(method)  # TODO(streaming): stream benchmarks once streams exist
        payload = request_of(method, body).to_bytes()
        response_type = method.descriptor.response_type
    frame = _frame(method.service.full_name, method.descriptor.name, payload, timeout, metadata)
    frame_flags = FLAG_OUT_OF_ORDER if mux else 0
    if frame_flags:
        frame = frame[:6] + frame_flags.to_bytes(2, "big") + frame[8:]
    processes = min(processes, concurrency)
    total_connections = min(concurrency, connections or 4 * processes)
    total_connections = max(total_connections, processes)
    network, where = parse_address(address)
    configs = []
    for i in range(processes):
        conns = _share(total_connections, processes, i)
        config = WorkerConfig(
            index=i,
            network=network,
            address=where,
            frame=frame,
            ok_info=reply_info(),
            connections=conns,
            depth=max(1, -(-_share(concurrency, processes, i) // conns)),
            calls=None if calls is None else _share(calls, processes, i),
            seconds=duration,
            drain_seconds=timeout,
            connect_timeout=min(timeout, 5.0),
        )
        configs.append(config)
    results = _run(configs, calls, duration)
    summary = summarize(
        results,
        method=method.full_name,
        address=address,
        connections=total_connections,
        concurrency=sum(c.connections * c.depth for c in configs),
    )
    _check_sample(results, response_type, summary)
    if output == "json":
        click.echo(json.dumps(summary.to_json(), indent=2))
    else:
        click.echo(render_text(summary, _bar_character()))
    if summary.saturated and output == "json":
        click.echo(saturation_warning(summary), err=True)
    if summary.ok == 0:
        sys.exit(EXIT_FAILED)


def _frame(
    service: str, method: str, payload: bytes, timeout: float, metadata: dict[str, str]
) -> bytes:
    template = RequestTemplate(service, method)
    info = template.header_info(max(1, int(timeout * 1000)), metadata or None)
    out = bytearray()
    append_frame(out, 0, 0, info, payload)
    return bytes(out)


def _share(total: int, parts: int, index: int) -> int:
    return total // parts + (1 if index < total % parts else 0)


def _run(configs: list[WorkerConfig], calls: int | None, seconds: float | None) -> list[Result]:
    context = multiprocessing.get_context("spawn")
    progress = context.RawArray("q", 2 * len(configs))
    start = context.Event()
    pipes = []
    workers = []
    for config in configs:
        parent, child = context.Pipe(duplex=False)
        worker = context.Process(
            target=run_worker, args=(config, child, start, progress), daemon=True
        )
        worker.start()
        child.close()
        pipes.append(parent)
        workers.append(worker)
    try:
        for pipe in pipes:
            message = _receive(pipe, 60.0)
            if message[0] == "failed":
                raise click.ClickException(message[1])
        display = Progress(sys.stderr, total=calls, seconds=seconds)
        start.set()
        results: list[Result | None] = [None] * len(configs)
        while any(result is None for result in results):
            for i, pipe in enumerate(pipes):
                if results[i] is None and pipe.poll(0):
                    results[i] = _receive(pipe, 1.0)[1]
                elif results[i] is None and not workers[i].is_alive() and not pipe.poll(0):
                    raise click.ClickException(
                        f"load process {i} died (exit code {workers[i].exitcode})"
                    )
            display.update(sum(progress[0::2]), sum(progress[1::2]))
            time.sleep(0.05)
        display.finish()
        return [result for result in results if result is not None]
    finally:
        start.set()
        for worker in workers:
            worker.join(5.0)
            if worker.is_alive():
                worker.kill()
                worker.join()
        for pipe in pipes:
            pipe.close()


def _receive(pipe: Any, timeout: float) -> Any:
    if not pipe.poll(timeout):
        raise click.ClickException("a load process did not answer")
    try:
        return pipe.recv()
    except EOFError:
        raise click.ClickException("a load process died before reporting") from None


def _check_sample(results: list[Result], response_type: Any, summary: Summary) -> None:
    """The first successful reply of each process must decode as the response type."""
    for result in results:
        if result.sample is None:
            continue
        try:
            response_type.from_bytes(result.sample)
        except ValueError as exc:
            summary.messages.append(f"a reply does not decode as {response_type.__name__}: {exc}")
            return


def _bar_character() -> str:
    encoding = getattr(sys.stdout, "encoding", None) or "ascii"
    try:
        "∎".encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return "#"
    return "∎"
