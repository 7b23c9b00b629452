"""`rpcpoll call` and `rpcpoll list`: grpcurl for rpcpoll services.

    rpcpoll call ADDRESS pkg.Service/Method -d '{"json": ...}' [-H key:value]... [--timeout S]
    rpcpoll list [ADDRESS] [--module M | --proto F [-I DIR]...]

The request is read as proto3 JSON (`-d TEXT`, `-d @file`, `-d @-` for standard input) and the
reply printed as proto3 JSON; the schema comes from a generated module, a .proto file or the
server itself (its describe service). Exit statuses: rpcpoll/tools/common.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ..client import ClientChannel
from ..protocol.status import RpcError
from .common import (
    check_address,
    exit_for_rpc_error,
    loaded_schema,
    metadata_option,
    parse_metadata,
    read_json,
    refuse_streaming,
    schema_options,
    user_errors,
)
from .schema import Method, Schema, SchemaError

__all__ = ["call_command", "list_command", "request_of"]

_CALL_EPILOG = (
    "Exit status: 0 OK; 1 not possible (a streaming rpc); 2 bad input (arguments, JSON, an"
    " unknown method, IDL that does not load); 64 + the status code when the call fails"
    " (68 DEADLINE_EXCEEDED, 76 UNIMPLEMENTED, 78 UNAVAILABLE: nothing listening, ...)."
    " See docs/operating.md."
)


def request_of(method: Method, data: Any) -> Any:
    """The request message from its JSON form; SchemaError naming the field when it is wrong."""
    request_type = method.descriptor.request_type
    try:
        request = request_type.from_dict(data)
        request.to_bytes()  # values are checked when encoded: fail here, not mid-call
    except (TypeError, ValueError) as exc:
        raise SchemaError(f"bad request for {method.full_name}: {exc}") from None
    return request


@click.command("call", epilog=_CALL_EPILOG)
@click.argument("address", callback=check_address)
@click.argument("method_name", metavar="pkg.Service/Method")
@click.option("-d", "--data", default=None, help="request as JSON; @FILE reads a file, @- stdin")
@metadata_option
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    help="seconds the call may take (sent to the server as its deadline)",
)
@click.option("-v", "--verbose", is_flag=True, help="print the reply metadata (to stderr)")
@schema_options
def call_command(
    address: str,
    method_name: str,
    data: str | None,
    headers: tuple[str, ...],
    timeout: float,
    verbose: bool,
    module: str | None,
    protos: tuple[Path, ...],
    includes: tuple[Path, ...],
) -> None:
    """Call METHOD at ADDRESS with a JSON request and print the JSON reply.

    The method's types come from --module, --proto, or (with neither) from the server's
    describe service, so no local IDL is needed against `rpcpoll serve`.
    """
    metadata = parse_metadata(headers)
    body = read_json(data)
    with (
        loaded_schema(address, module, protos, includes, timeout=timeout) as schema,
        user_errors(),
    ):
        method = schema.method(method_name)
        refuse_streaming(method)  # TODO(streaming): the stream path goes here
        request = request_of(method, body)
        reply, reply_metadata = _call(address, method, request, timeout, metadata)
    if verbose:
        for key, value in sorted(reply_metadata.items()):
            click.echo(f"{key}: {value}", err=True)
    click.echo(json.dumps(reply.to_dict(), indent=2, ensure_ascii=False))


def _call(
    address: str, method: Method, request: Any, timeout: float, metadata: dict[str, str]
) -> tuple[Any, dict[str, str]]:
    back: dict[str, str] = {}
    with ClientChannel(address, timeout=timeout) as channel:
        try:
            reply = channel.unary_call(
                method.service,
                method.descriptor,
                request,
                timeout=timeout,
                metadata=metadata or None,
                reply_metadata=back,
            )
        except RpcError as exc:
            for key, value in sorted(back.items()):
                click.echo(f"{key}: {value}", err=True)
            exit_for_rpc_error(exc)
    return reply, back


@click.command("list")
@click.argument("address", required=False, callback=check_address)
@click.argument("service", required=False)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    help="seconds to wait for the server's description",
)
@schema_options
def list_command(
    address: str | None,
    service: str | None,
    timeout: float,
    module: str | None,
    protos: tuple[Path, ...],
    includes: tuple[Path, ...],
) -> None:
    """List services and their methods (with request and response types).

    From --module or --proto, or from the server at ADDRESS (its describe service). With
    SERVICE, only that service.
    """
    with (
        loaded_schema(address, module, protos, includes, timeout=timeout) as schema,
        user_errors(),
    ):
        for line in _listing(schema, service):
            click.echo(line)


def _listing(schema: Schema, only: str | None) -> list[str]:
    services = schema.shown()
    if only is not None:
        if only not in schema.services:
            known = ", ".join(service.full_name for service in services)
            raise SchemaError(f"unknown service {only!r} (known: {known})")
        services = [schema.services[only]]
    lines = []
    for service in services:
        lines.append(service.full_name)
        for method in service.methods.values():
            request = _type_name(method.request_type)
            response = _type_name(method.response_type)
            if method.client_streaming:
                request = f"stream {request}"
            if method.server_streaming:
                response = f"stream {response}"
            lines.append(f"  {method.name}({request}) returns ({response})")
    return lines


def _type_name(cls: type) -> str:
    info = getattr(cls, "__rpcpoll_info__", None)
    return str(info.full_name) if info is not None else cls.__qualname__
