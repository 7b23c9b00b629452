"""The RPC server runtime: `Server` serves generated handlers over rpcpoll's transport."""

from .dispatch import Dispatcher
from .server import Server

__all__ = ["Dispatcher", "Server"]
