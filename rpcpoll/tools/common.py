"""Options and input handling shared by `rpcpoll call`, `rpcpoll list` and `rpcpoll bench`.

Exit statuses (grpcurl's convention for RPC errors):

- 0: success;
- 1: the command cannot do what was asked (a streaming rpc; a bench where no call succeeded);
- 2: bad input: arguments, JSON, an unknown service or method, IDL that does not load;
- 64 + code: the call failed with that status code (65 CANCELLED ... 80 UNAUTHENTICATED; 78
  UNAVAILABLE when nothing listens there, 68 DEADLINE_EXCEEDED, 76 UNIMPLEMENTED).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import click
import msgspec

from ..protocol.status import RpcError
from ..reflection.loader import GeneratedPackage
from ..transport.address import parse_address
from .schema import Method, Schema, SchemaError, from_module, from_protos, from_server

__all__ = [
    "EXIT_FAILED",
    "EXIT_RPC_BASE",
    "EXIT_USAGE",
    "check_address",
    "exit_for_rpc_error",
    "loaded_schema",
    "metadata_option",
    "parse_metadata",
    "read_json",
    "refuse_streaming",
    "schema_options",
    "user_errors",
]

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_RPC_BASE = 64


def check_address(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        try:
            parse_address(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx, param) from None
    return value


def schema_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--module, --proto, -I: where the method's schema comes from (else: the server)."""
    command = click.option(
        "-I",
        "--proto-path",
        "includes",
        multiple=True,
        type=click.Path(file_okay=False, exists=True, path_type=Path),
        help="directory the --proto files and their imports are relative to (repeatable)",
    )(command)
    command = click.option(
        "--proto",
        "protos",
        multiple=True,
        type=click.Path(dir_okay=False, path_type=Path),
        help=".proto file defining the service (repeatable); generated in memory",
    )(command)
    command = click.option(
        "--module",
        "module",
        default=None,
        metavar="MODULE",
        help="generated module defining the service (pkg.mod or path/to/x_rpc.py)",
    )(command)
    return command


def metadata_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "-H",
        "--header",
        "headers",
        multiple=True,
        metavar="KEY:VALUE",
        help="request metadata (repeatable)",
    )(command)


def parse_metadata(headers: tuple[str, ...]) -> dict[str, str]:
    metadata = {}
    for header in headers:
        key, sep, value = header.partition(":")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY:VALUE, got {header!r}", param_hint="-H")
        metadata[key.strip()] = value.strip()
    return metadata


def read_json(data: str | None) -> Any:
    """The request's JSON: the text itself, `@file`, or `@-` (standard input); {} if None."""
    if data is None:
        return {}
    source = "-d"
    if data.startswith("@"):
        source = data[1:] or "-"
        try:
            data = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
        except OSError as exc:
            message = f"cannot read {source}: {exc.strerror}"
            raise click.BadParameter(message, param_hint="-d") from None
    try:
        return msgspec.json.decode(data.encode() if data.strip() else b"{}")
    except msgspec.DecodeError as exc:
        raise click.BadParameter(f"{source} is not valid JSON: {exc}", param_hint="-d") from None


@contextlib.contextmanager
def loaded_schema(
    address: str | None,
    module: str | None,
    protos: tuple[Path, ...],
    includes: tuple[Path, ...],
    *,
    timeout: float | None,
    metadata: dict[str, str] | None = None,
) -> Iterator[Schema]:
    """The schema from --module, --proto or the server at `address`; the scratch package
    that holds generated modules lives until the block ends."""
    if module and protos:
        raise click.UsageError("give --module or --proto, not both")
    if includes and not protos:
        raise click.UsageError("-I needs --proto")
    if not (module or protos or address):
        raise click.UsageError("give an ADDRESS (to ask the server), --module or --proto")
    with GeneratedPackage() as package:
        try:
            if module:
                schema = from_module(module)
            elif protos:
                schema = from_protos(list(protos), list(includes), package)
            else:
                assert address is not None
                schema = from_server(address, package, timeout=timeout, metadata=metadata)
        except SchemaError as exc:
            raise click.UsageError(str(exc)) from None
        except RpcError as exc:
            exit_for_rpc_error(exc)
        yield schema


def refuse_streaming(method: Method) -> None:
    """Exit 1 with one line for a streaming rpc (until the runtime serves streams)."""
    # TODO(streaming): remove once streams exist; `call` then prints each message and
    # `bench` counts messages (see Method.check_unary).
    try:
        method.check_unary()
    except SchemaError as exc:
        click.echo(f"ERROR: {exc}", err=True)
        sys.exit(EXIT_FAILED)


def exit_for_rpc_error(exc: RpcError) -> NoReturn:
    """Print the error as one line and exit with 64 + its code."""
    click.echo(f"ERROR: {exc}", err=True)
    sys.exit(EXIT_RPC_BASE + int(exc.code))


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn the errors a user causes into one line and the documented exit status."""
    try:
        yield
    except SchemaError as exc:
        raise click.UsageError(str(exc)) from None
    except RpcError as exc:
        exit_for_rpc_error(exc)
