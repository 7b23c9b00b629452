"""`ReflectionService`: answers rpcpoll.reflection.v1.Reflection/Describe for a server's handlers.

It is given the handlers the server runs (`rpcpoll serve` passes every handler it registers,
this service included) and answers with their services' full names and the
FileDescriptorSet that defines them (rpcpoll/reflection/descriptors.py), built once per
distinct request and kept.
"""

from __future__ import annotations

import threading

from ..protocol.status import NotFoundError
from ..service import AnyHandler, CallContext
from .reflection_rpc import DescribeRequest, DescribeResponse, ReflectionHandler

__all__ = ["ReflectionService"]


class ReflectionService(ReflectionHandler):
    """Describes the services of `handlers` (and its own); `add(handler)` adds one more."""

    def __init__(self, *handlers: AnyHandler | type[AnyHandler]) -> None:
        self._lock = threading.Lock()
        self._handlers: dict[str, type[AnyHandler]] = {}
        self._answers: dict[tuple[str, ...], DescribeResponse] = {}
        for handler in (*handlers, self):
            self.add(handler)

    def add(self, handler: AnyHandler | type[AnyHandler]) -> None:
        """Describe `handler`'s service too."""
        cls = handler if isinstance(handler, type) else type(handler)
        with self._lock:
            self._handlers.setdefault(cls.SERVICE.full_name, cls)
            self._answers.clear()

    @property
    def services(self) -> list[str]:
        """Full names of the services described, in the order they were added."""
        with self._lock:
            return list(self._handlers)

    def describe(self, request: DescribeRequest, context: CallContext) -> DescribeResponse:
        key = tuple(request.services)
        with self._lock:
            answer = self._answers.get(key)
            handlers = dict(self._handlers)
        if answer is not None:
            return answer
        names = list(key) or list(handlers)
        unknown = [name for name in names if name not in handlers]
        if unknown:
            raise NotFoundError(message=f"this server does not run {', '.join(unknown)}")
        from .descriptors import descriptor_set  # protobuf: loaded on the first describe

        files = descriptor_set(handlers[name] for name in names)
        answer = DescribeResponse(services=names, file_descriptor_set=files.SerializeToString())
        with self._lock:
            self._answers[key] = answer
        return answer
