"""The .proto files bundled with grpcio-tools generate and import cleanly, descriptor.proto too."""

from __future__ import annotations

from pathlib import Path

import pytest
from codegen_testutil import Generated, generate_package
from google.protobuf import descriptor_pb2, json_format

from rpcpoll.codegen.parser import bundled_include

BUNDLED = sorted(bundled_include().glob("google/protobuf/**/*.proto"))


@pytest.fixture(scope="module")
def bundled(generated_root: Path) -> Generated:
    return generate_package(generated_root, BUNDLED, [bundled_include()], prefix="wkt")


def test_every_bundled_proto_is_found() -> None:
    names = {path.relative_to(bundled_include()).as_posix() for path in BUNDLED}
    assert {
        "google/protobuf/descriptor.proto",
        "google/protobuf/compiler/plugin.proto",
        "google/protobuf/any.proto",
        "google/protobuf/type.proto",
    } <= names


@pytest.mark.parametrize(
    "proto", BUNDLED, ids=[p.relative_to(bundled_include()).as_posix() for p in BUNDLED]
)
def test_bundled_proto_generates_and_imports(bundled: Generated, proto: Path) -> None:
    relative = proto.relative_to(bundled_include()).with_suffix("")
    module = bundled.module(".".join(relative.parts) + "_rpc")
    assert module.__all__
    for name in module.__all__:
        assert hasattr(module, name)


def test_descriptor_proto_messages_round_trip_a_real_descriptor(bundled: Generated) -> None:
    descriptor = bundled.module("google.protobuf.descriptor_rpc")
    real = descriptor_pb2.FileDescriptorProto()
    descriptor_pb2.DESCRIPTOR.CopyToProto(real)  # descriptor.proto describing itself
    ours = descriptor.FileDescriptorProto.from_dict(json_format.MessageToDict(real))
    assert descriptor.FileDescriptorProto.from_bytes(ours.to_bytes()) == ours
    assert ours.name == "google/protobuf/descriptor.proto"
    field = ours.message_type[0].field[0]
    assert field.type_ == descriptor.FieldDescriptorProto.Type.TYPE_MESSAGE
    assert field.label == descriptor.FieldDescriptorProto.Label.LABEL_REPEATED
    parsed = json_format.ParseDict(ours.to_dict(), descriptor_pb2.FileDescriptorProto())
    assert parsed.message_type[0].name == real.message_type[0].name
    assert len(parsed.message_type) == len(real.message_type)


def test_well_known_messages_keep_their_own_fields(bundled: Generated) -> None:
    timestamp = bundled.module("google.protobuf.timestamp_rpc")
    value = timestamp.Timestamp(seconds=1, nanos=2)
    assert timestamp.Timestamp.from_bytes(value.to_bytes()) == value
    plugin = bundled.module("google.protobuf.compiler.plugin_rpc")
    request = plugin.CodeGeneratorRequest(file_to_generate=["a.proto"])
    assert plugin.CodeGeneratorRequest.from_bytes(request.to_bytes()) == request
