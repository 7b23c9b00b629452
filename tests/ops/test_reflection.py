"""The describe service: descriptors rebuilt from generated modules must generate the same
modules back (field tables, enums, services), and the service answers what a server runs."""

from __future__ import annotations

import enum
import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from google.protobuf import descriptor_pb2

from rpcpoll import NotFoundError
from rpcpoll.codegen import generate
from rpcpoll.examples.echo import EchoHandler
from rpcpoll.health import HealthService
from rpcpoll.message import Enum as ProtoEnum
from rpcpoll.message import Message
from rpcpoll.reflection import DescribeRequest, ReflectionClient, ReflectionService
from rpcpoll.reflection.descriptors import descriptor_set, file_of, modules_descriptor_set
from rpcpoll.reflection.loader import GeneratedPackage, generation_from_descriptors
from rpcpoll.service import LocalChannel, ServiceDescriptor

PROTOS = Path(__file__).parent / "protos"
FILES = ["shop/common.proto", "shop/orders.proto", "shop/legacy.proto"]


@pytest.fixture(scope="module")
def shop() -> Iterator[dict[str, ModuleType]]:
    """The test protos, generated and imported (proto file name -> module)."""
    generation = generate([PROTOS / name for name in FILES], [PROTOS])
    with GeneratedPackage("shop_gen") as package:
        package.load(generation)
        yield {name: package.module_for(name) for name in FILES}


def tables(module: ModuleType) -> dict[str, Any]:
    """Everything the runtime knows about a module's messages, enums and services."""
    found: dict[str, Any] = {}

    def visit(namespace: dict[str, Any]) -> None:
        for value in list(namespace.values()):
            if not isinstance(value, type) or value.__module__ != module.__name__:
                continue
            if issubclass(value, Message) and "__rpcpoll_info__" in value.__dict__:
                info = value.__rpcpoll_info__
                if info.full_name not in found:
                    found[info.full_name] = [_field(f) for f in info.fields]
                    visit(dict(vars(value)))
            elif issubclass(value, ProtoEnum):
                members = [(name, int(member)) for name, member in value.__members__.items()]
                found[value.__qualname__] = (members, _closed(value))
        for value in namespace.values():
            if isinstance(value, ServiceDescriptor):
                found[value.full_name] = [
                    (m.name, m.python_name, m.client_streaming, m.server_streaming, m.idempotent,
                     m.request_type.__rpcpoll_info__.full_name,
                     m.response_type.__rpcpoll_info__.full_name)
                    for m in value.methods.values()
                ]  # fmt: skip

    visit(dict(vars(module)))
    return found


def _field(field: Any) -> tuple[Any, ...]:
    kind = getattr(field.kind, "full_name", None) or field.kind.name
    key = field.key.name if field.key is not None else None
    return (field.number, field.name, field.proto_name, field.json_name, kind, field.repeated,
            key, field.optional, field.required, field.oneof)  # fmt: skip


def _closed(cls: type[enum.IntEnum]) -> bool:
    from rpcpoll.message import ClosedEnum

    return issubclass(cls, ClosedEnum)


def test_descriptors_rebuilt_from_modules_generate_the_same_modules(
    shop: dict[str, ModuleType],
) -> None:
    files = modules_descriptor_set(shop.values())
    names = [proto.name for proto in files.file]
    assert set(FILES) <= set(names)
    assert names.index("shop/common.proto") < names.index("shop/orders.proto")  # deps first
    with GeneratedPackage() as package:
        package.load(generation_from_descriptors(files))
        for name, original in shop.items():
            assert tables(package.module_for(name)) == tables(original), name


def test_file_syntax_follows_what_the_file_needs(shop: dict[str, ModuleType]) -> None:
    files = {proto.name: proto for proto in modules_descriptor_set(shop.values()).file}
    assert files["shop/orders.proto"].syntax == "proto3"
    assert files["shop/legacy.proto"].syntax == "editions"  # closed enum, required field
    assert "google/protobuf/timestamp.proto" in files["shop/orders.proto"].dependency
    assert file_of(shop["shop/orders.proto"]) == "shop/orders.proto"


def test_the_describe_service_answers_every_service_it_was_given() -> None:
    service = ReflectionService(EchoHandler(), HealthService())
    with ReflectionClient(LocalChannel(service)) as client:
        answer = client.describe(DescribeRequest())
        assert answer.services == [
            "echo.EchoService",
            "grpc.health.v1.Health",
            "rpcpoll.reflection.v1.Reflection",
        ]
        files = descriptor_pb2.FileDescriptorSet.FromString(answer.file_descriptor_set)
        assert [f.name for f in files.file] == [
            "echo.proto",
            "grpc/health/v1/health.proto",
            "rpcpoll/reflection/v1/reflection.proto",
        ]
        only = client.describe(DescribeRequest(services=["echo.EchoService"]))
        assert only.services == ["echo.EchoService"]
        assert client.describe(DescribeRequest()) == answer  # kept, not rebuilt
        with pytest.raises(NotFoundError, match=r"no\.Such"):
            client.describe(DescribeRequest(services=["no.Such"]))


def test_descriptor_set_of_the_bundled_services_loads_back() -> None:
    files = descriptor_set([EchoHandler, HealthService, ReflectionService])
    with GeneratedPackage() as package:
        modules = package.load(generation_from_descriptors(files))
        names = {m.__name__.rsplit(".", 1)[1] for m in modules}
        assert names == {"echo_rpc", "health_rpc", "reflection_rpc"}
        health = package.module_for("grpc/health/v1/health.proto")
        assert health.HEALTH.methods["Watch"].server_streaming
    assert not [name for name in sys.modules if name.startswith(package.name)]
    assert not package.root.exists()


def test_a_module_carrying_its_own_descriptors_is_used_as_is(
    shop: dict[str, ModuleType],
) -> None:
    module = shop["shop/legacy.proto"]
    real = descriptor_pb2.FileDescriptorSet()
    real.file.add(name="shop/legacy.proto", package="shop.legacy", syntax="proto2")
    module.FILE_DESCRIPTOR_SET = real.SerializeToString()  # type: ignore[attr-defined]
    try:
        files = modules_descriptor_set([module])
    finally:
        del module.FILE_DESCRIPTOR_SET  # type: ignore[attr-defined]
    assert list(files.file) == list(real.file)
    importlib.invalidate_caches()
