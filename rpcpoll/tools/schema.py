"""Where the command-line clients find a service's methods and message classes.

Three sources, one result (`Schema`, the services by full name):

- `--module pkg.mod` (or `path/to/x_rpc.py`): a generated module, imported;
- `--proto FILE -I DIR`: .proto files generated in memory into a scratch package and imported,
  with the files they import generated too;
- neither: the server's describe service (rpcpoll.reflection.v1.Reflection/Describe), whose
  FileDescriptorSet is turned into modules the same way.

Every failure a user can cause is a `SchemaError` with a one-line message.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from ..codegen import CodegenError, Generation, generate
from ..codegen.parser import bundled_include
from ..service import MethodDescriptor, ServiceDescriptor

__all__ = [
    "STREAMING_SINCE",
    "Method",
    "Schema",
    "SchemaError",
    "from_descriptor_set",
    "from_module",
    "from_protos",
    "from_server",
]

#: The release whose runtime serves streams (the CLI refuses streaming rpcs until then).
STREAMING_SINCE = "0.2"


class SchemaError(Exception):
    """The method or its schema cannot be found or loaded (the user's input is wrong)."""


@dataclass(frozen=True)
class Method:
    """One rpc, ready to call."""

    service: ServiceDescriptor
    descriptor: MethodDescriptor

    @property
    def full_name(self) -> str:
        return f"{self.service.full_name}/{self.descriptor.name}"

    @property
    def streaming(self) -> bool:
        return not self.descriptor.unary

    def check_unary(self) -> None:
        """Raise SchemaError for a streaming rpc (until the runtime serves streams)."""
        # TODO(streaming): drop this once the runtime has streams: call.py and bench.py then
        # take the stream path for these methods.
        if self.streaming:
            raise SchemaError(
                f"{self.full_name} is a {_shape(self.descriptor)} rpc; streaming rpcs need"
                f" rpcpoll >= {STREAMING_SINCE}"
            )


@dataclass
class Schema:
    """Services by full name (and, for `list`, the ones to show)."""

    services: dict[str, ServiceDescriptor] = field(default_factory=dict)
    #: what the server says it runs (describe), in its order; None: every service loaded
    served: list[str] | None = None

    def add_module(self, module: ModuleType) -> None:
        for value in vars(module).values():
            if isinstance(value, ServiceDescriptor):
                self.services.setdefault(value.full_name, value)

    def shown(self) -> list[ServiceDescriptor]:
        """The services to list: those served (describe) or every one loaded, by name."""
        if self.served is not None:
            return [self.services[name] for name in self.served if name in self.services]
        return [self.services[name] for name in sorted(self.services)]

    def method(self, name: str) -> Method:
        """`pkg.Service/Method` (or `pkg.Service.Method`) -> Method; SchemaError naming the
        closest match otherwise."""
        service_name, method_name = _split(name)
        service = self.services.get(service_name)
        if service is None:
            hint = _closest(service_name, list(self.services))
            known = ", ".join(sorted(self.services)) or "none"
            raise SchemaError(f"unknown service {service_name!r}{hint} (known: {known})")
        method = service.methods.get(method_name)
        if method is None:
            by_python = {m.python_name: m for m in service.methods.values()}
            method = by_python.get(method_name)
        if method is None:
            hint = _closest(method_name, list(service.methods))
            known = ", ".join(service.methods)
            raise SchemaError(
                f"{service_name} has no method {method_name!r}{hint} (its methods: {known})"
            )
        return Method(service, method)


def _split(name: str) -> tuple[str, str]:
    if "/" in name:
        service, _, method = name.rpartition("/")
    else:
        service, _, method = name.rpartition(".")
    if not service or not method:
        raise SchemaError(f"expected pkg.Service/Method, got {name!r}")
    return service.lstrip("/"), method


def _closest(name: str, candidates: Sequence[str]) -> str:
    found = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f" (did you mean {found[0]}?)" if found else ""


def _shape(method: MethodDescriptor) -> str:
    if method.client_streaming and method.server_streaming:
        return "bidirectional streaming"
    return "client streaming" if method.client_streaming else "server streaming"


# ------------------------------------------------------------------------------ sources


def from_module(spec: str) -> Schema:
    """A generated module by dotted name (the current directory is importable) or by path."""
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = _import(spec)
    except SchemaError:
        raise
    except ImportError as exc:
        raise SchemaError(f"cannot import {spec!r}: {exc}") from None
    except Exception as exc:  # the module itself failed while loading
        raise SchemaError(f"importing {spec!r} failed: {type(exc).__name__}: {exc}") from None
    schema = Schema()
    schema.add_module(module)
    if not schema.services:
        raise SchemaError(f"{spec} defines no service (is it a module from rpcpoll gen?)")
    return schema


def _import(spec: str) -> ModuleType:
    if not (spec.endswith(".py") or "/" in spec or os.sep in spec):
        return importlib.import_module(spec)
    path = Path(spec).expanduser().resolve()
    if not path.is_file():
        raise SchemaError(f"no such file: {spec}")
    name = path.stem
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    loaded = importlib.util.spec_from_file_location(name, path)
    if loaded is None or loaded.loader is None:
        raise SchemaError(f"cannot load {spec}")
    module = importlib.util.module_from_spec(loaded)
    sys.modules[name] = module
    loaded.loader.exec_module(module)
    return module


def from_protos(
    protos: Sequence[Path], includes: Sequence[Path], package: Any, max_rounds: int = 16
) -> Schema:
    """.proto files generated into `package` (a GeneratedPackage) and imported; the files
    they import are generated too, found under the same -I roots."""
    roots = [*includes] or sorted({proto.parent for proto in protos}, key=str)
    wanted = list(protos)
    for _ in range(max_rounds):
        try:
            generation = generate(wanted, roots)
        except CodegenError as exc:
            first = exc.diagnostics[0] if exc.diagnostics else exc
            more = len(exc.diagnostics) - 1
            raise SchemaError(str(first) + (f" (and {more} more)" if more > 0 else "")) from None
        missing = _dependency_paths(generation, roots)
        if not missing:
            break
        wanted += missing
    return _schema_of(package, generation)


def _dependency_paths(generation: Generation, roots: Sequence[Path]) -> list[Path]:
    found = []
    for proto in generation.dependencies.values():
        for root in [*roots, bundled_include()]:
            if (root / proto).is_file():
                found.append(root / proto)
                break
        else:
            raise SchemaError(f"cannot find {proto} under any -I directory")
    return found


def from_descriptor_set(data: bytes, package: Any, served: Sequence[str] | None = None) -> Schema:
    """The modules of a serialized FileDescriptorSet (a describe answer), imported."""
    from google.protobuf import descriptor_pb2
    from google.protobuf.message import DecodeError

    from ..reflection.loader import generation_from_descriptors

    try:
        files = descriptor_pb2.FileDescriptorSet.FromString(data)
        generation = generation_from_descriptors(files)
    except (DecodeError, CodegenError, KeyError, ValueError) as exc:
        raise SchemaError(f"the server's descriptors do not load: {exc}") from None
    schema = _schema_of(package, generation)
    schema.served = list(served) if served is not None else None
    return schema


def _schema_of(package: Any, generation: Generation) -> Schema:
    schema = Schema()
    for module in package.load(generation):
        schema.add_module(module)
    return schema


def from_server(
    address: str,
    package: Any,
    *,
    timeout: float | None,
    metadata: Mapping[str, str] | None = None,
) -> Schema:
    """Ask the server's describe service; RpcError if the call fails (UNIMPLEMENTED with a
    hint when the server has no describe service)."""
    from ..protocol.status import RpcError, UnimplementedError
    from ..reflection import DescribeRequest, ReflectionClient

    with ReflectionClient(address, timeout=timeout) as client:
        try:
            answer = client.describe(DescribeRequest(), metadata=metadata)
        except UnimplementedError as exc:
            raise RpcError(
                exc.code,
                f"{address} does not describe its services ({exc.message}; was it started"
                " with --no-describe?): give --module or --proto",
            ) from None
    return from_descriptor_set(answer.file_descriptor_set, package, answer.services)
