"""`python -m rpcpoll` is the `rpcpoll` command."""

from .cli import main

main()
