"""The RPC server runtime: `Server` serves generated handlers over rpcpoll's transport;
`Supervisor` runs several server processes on one address; `Registration` publishes a server
in a registry while it serves."""

from .dispatch import Dispatcher
from .registration import Registration, open_registry
from .server import Server
from .supervisor import RestartPolicy, Supervisor

__all__ = ["Dispatcher", "Registration", "RestartPolicy", "Server", "Supervisor", "open_registry"]
