"""`rpcpoll health ADDRESS [SERVICE]`: one Check call, its answer as an exit status.

Like grpc_health_probe, for container probes and scripts: 0 when the service is SERVING and 1
when it is not, with a distinct status for each way the probe itself can fail.
"""

from __future__ import annotations

import enum
import sys

import click

from ..client import NO_RETRY, ClientChannel
from ..protocol.status import RpcError, StatusCode
from ..service import LocalChannel
from ..transport.address import parse_address
from .health_rpc import HealthCheckRequest, HealthCheckResponse, HealthClient

__all__ = ["ProbeStatus", "health_command", "probe"]


class ProbeStatus(enum.IntEnum):
    """`rpcpoll health`'s exit statuses."""

    SERVING = 0
    NOT_SERVING = 1  # NOT_SERVING, UNKNOWN, or a service the server does not know
    USAGE = 2  # bad arguments (click's status for usage errors)
    CONNECTION_FAILED = 3  # nothing listens there, or the connection failed
    TIMEOUT = 4  # no answer within --timeout
    RPC_FAILED = 5  # any other error, e.g. UNIMPLEMENTED: the server has no health service


def probe(
    target: str | LocalChannel, service: str = "", timeout: float = 1.0
) -> tuple[ProbeStatus, str]:
    """Check `service` ("" = the whole server) at `target`: (exit status, one-line text)."""
    if isinstance(target, str):
        channel = ClientChannel(target, timeout=timeout, connect_timeout=timeout, retry=NO_RETRY)
        client = HealthClient(channel)
    else:
        client = HealthClient(target)
    with client:
        try:
            reply = client.check(HealthCheckRequest(service=service), timeout=timeout)
        except RpcError as exc:
            return _failure(exc.code, str(exc), service)
    status = reply.status
    name = status.name or str(int(status))
    if status is HealthCheckResponse.ServingStatus.SERVING:
        return ProbeStatus.SERVING, f"status: {name}"
    return ProbeStatus.NOT_SERVING, f"status: {name}"


def _failure(code: StatusCode, text: str, service: str) -> tuple[ProbeStatus, str]:
    if code is StatusCode.NOT_FOUND:
        shown = service or '""'
        return ProbeStatus.NOT_SERVING, f"status: SERVICE_UNKNOWN (unknown service {shown})"
    if code is StatusCode.UNAVAILABLE:
        return ProbeStatus.CONNECTION_FAILED, f"connection failed: {text}"
    if code is StatusCode.DEADLINE_EXCEEDED:
        return ProbeStatus.TIMEOUT, f"timed out: {text}"
    if code is StatusCode.UNIMPLEMENTED:
        return ProbeStatus.RPC_FAILED, f"health check failed: {text} (no health service there?)"
    return ProbeStatus.RPC_FAILED, f"health check failed: {text}"


_EPILOG = (
    "Exit status: 0 SERVING; 1 not serving (NOT_SERVING, UNKNOWN, or a service the server does"
    " not know); 2 bad arguments; 3 connection failed; 4 timed out; 5 any other RPC error"
    " (e.g. the server has no health service)."
)


def _check_target(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        parse_address(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None
    return value


@click.command("health", epilog=_EPILOG)
@click.argument("address", callback=_check_target)
@click.argument("service", default="")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="seconds to wait for the answer (the connection included)",
)
def health_command(address: str, service: str, timeout: float) -> None:
    """Check the health of SERVICE ("" or omitted: the whole server) at ADDRESS.

    Calls grpc.health.v1.Health/Check and prints the status; the exit status says it too.
    """
    status, text = probe(address, service, timeout)
    click.echo(text, err=status not in (ProbeStatus.SERVING, ProbeStatus.NOT_SERVING))
    sys.exit(int(status))
