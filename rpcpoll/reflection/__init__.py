"""rpcpoll's describe service: a server's services as protobuf descriptors, so that clients
(`rpcpoll call`, `rpcpoll list`) need no local .proto or generated module.

`ReflectionService` is the handler. `rpcpoll.reflection.descriptors` builds the descriptors of
generated handlers; `rpcpoll.reflection.loader` turns descriptors back into imported modules
on the client (both import protobuf and the code generator, so they are not imported here).
"""

from .reflection_rpc import REFLECTION, DescribeRequest, DescribeResponse, ReflectionClient
from .service import ReflectionService

__all__ = [
    "REFLECTION",
    "DescribeRequest",
    "DescribeResponse",
    "ReflectionClient",
    "ReflectionService",
]
