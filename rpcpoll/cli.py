"""The `rpcpoll` command line."""

from __future__ import annotations

import click

from ._version import __version__
from .codegen.cli import gen
from .demo import demo_command
from .health.probe import health_command
from .server.cli import serve_command
from .tools.bench.cli import bench_command
from .tools.call import call_command, list_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rpcpoll")
def main() -> None:
    """rpcpoll: generate code from .proto files, serve handlers, call services."""


main.add_command(gen)
main.add_command(serve_command)
main.add_command(demo_command)
main.add_command(health_command)
main.add_command(call_command)
main.add_command(list_command)
main.add_command(bench_command)
