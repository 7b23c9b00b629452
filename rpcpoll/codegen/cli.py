"""`rpcpoll gen`: the command line of the code generator."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .diagnostics import CodegenError
from .generator import check, generate, write

__all__ = ["gen"]


@click.command("gen")
@click.argument("protos", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-I",
    "--proto-path",
    "includes",
    multiple=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory to look for .proto files and imports in; repeatable, searched in order. "
    "Default: the folder of each input file.",
)
@click.option(
    "-o",
    "--out",
    default=Path("."),
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory to write the generated package into.",
)
@click.option(
    "--check",
    "check_only",
    is_flag=True,
    help="Write nothing; exit 1 if the files on disk differ from what would be generated.",
)
def gen(protos: tuple[Path, ...], includes: tuple[Path, ...], out: Path, check_only: bool) -> None:
    """Generate Python modules from .proto files.

    For each PROTOS file a/b/x.proto (relative to its -I directory), writes OUT/a/b/x_rpc.py
    with its messages and enums and, for each service S, SClient and SHandler.
    Errors are printed as file:line:col: message, with exit status 1.
    """
    try:
        generation = generate(protos, includes)
    except CodegenError as exc:
        for diagnostic in exc.diagnostics:
            click.echo(str(diagnostic), err=True)
        sys.exit(1)
    for warning in generation.warnings:
        click.echo(str(warning), err=True)
    for module, proto in generation.dependencies.items():
        if not (out / module).is_file():
            click.echo(
                f"warning: the generated code imports {module}, the module of {proto}, "
                f"which is not in {out}; generate {proto} too",
                err=True,
            )

    if check_only:
        stale = check(generation, out)
        for stale_path in stale:
            click.echo(f"{stale_path}: out of date", err=True)
        if stale:
            click.echo(f"{len(stale)} file(s) differ; run rpcpoll gen to update them", err=True)
            sys.exit(1)
        return
    for written in write(generation, out):
        click.echo(f"wrote {written}")
