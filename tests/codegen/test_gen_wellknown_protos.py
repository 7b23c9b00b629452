"""The .proto files bundled with grpcio-tools generate and import cleanly, descriptor.proto too.

Compiling the well-known types' own files (`google/protobuf/duration.proto`, ...) gives modules
that re-export the runtime's classes (`rpcpoll.message.Duration`, ...), whose JSON forms are
the proto3 mapping, compared here with json_format on protobuf's own classes. The other
bundled files (`type.proto`, `api.proto`, `descriptor.proto`, ...) give ordinary classes.
"""

from __future__ import annotations

import datetime
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from codegen_testutil import (
    Generated,
    any_payloads,
    generate_package,
    json_values,
    messages,
    pb_class_for,
    to_protobuf,
)
from google.protobuf import descriptor_pb2, json_format, wrappers_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rpcpoll.message as rm
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


# -- the well-known types themselves ------------------------------------------------------------

WELL_KNOWN_FILES = {
    "any": ["Any"],
    "duration": ["Duration"],
    "empty": ["Empty"],
    "field_mask": ["FieldMask"],
    "struct": ["Struct", "Value", "ListValue", "NullValue"],
    "timestamp": ["Timestamp"],
    "wrappers": [
        "DoubleValue",
        "FloatValue",
        "Int64Value",
        "UInt64Value",
        "Int32Value",
        "UInt32Value",
        "BoolValue",
        "StringValue",
        "BytesValue",
    ],
}
RUNTIME_CLASSES: list[type[rm.Message]] = [
    getattr(rm, name)
    for names in WELL_KNOWN_FILES.values()
    for name in names
    if name != "NullValue"
]


@pytest.mark.parametrize("stem", sorted(WELL_KNOWN_FILES))
def test_compiling_a_well_known_proto_gives_the_runtime_classes(
    bundled: Generated, stem: str
) -> None:
    module = bundled.module(f"google.protobuf.{stem}_rpc")
    assert sorted(module.__all__) == sorted(WELL_KNOWN_FILES[stem])
    for name in WELL_KNOWN_FILES[stem]:
        assert getattr(module, name) is getattr(rm, name)


def test_wrappers_compiled_directly_are_the_runtime_wrappers(bundled: Generated) -> None:
    wrappers = bundled.module("google.protobuf.wrappers_rpc")
    # at its default, a wrapper message's value is left out, whatever 0.0 object holds it
    assert wrappers.DoubleValue(value=float("0")).to_bytes() == b"\x80"
    assert wrappers.DoubleValue(value=-0.0).to_bytes() != b"\x80"
    assert wrappers.DoubleValue(value=float("0")).to_dict() == 0.0
    value = wrappers.Int64Value(value=2**40)
    assert value.to_dict() == str(2**40)  # a bare value, as proto3 JSON has it
    assert wrappers.Int64Value.from_dict("5") == wrappers.Int64Value(value=5)
    assert wrappers.Int64Value.from_bytes(value.to_bytes()) == value


def _durations() -> st.SearchStrategy[rm.Duration]:
    limit = 315_576_000_000
    valid = st.integers(-limit, limit).flatmap(
        lambda seconds: st.builds(
            rm.Duration,
            seconds=st.just(seconds),
            nanos=st.integers(0, 999_999_999).map(lambda n: -n if seconds < 0 else n)
            if seconds
            else st.integers(-999_999_999, 999_999_999),
        )
    )
    limit_days = datetime.timedelta(days=3_652_000)
    deltas = st.timedeltas(min_value=-limit_days, max_value=limit_days)
    return valid | st.builds(rm.Duration.from_timedelta, deltas) | messages(rm.Duration)


def _timestamps() -> st.SearchStrategy[rm.Timestamp]:
    valid = st.builds(
        rm.Timestamp,
        seconds=st.integers(-62_135_596_800, 253_402_300_799),
        nanos=st.integers(0, 999_999_999),
    )
    aware = st.datetimes(timezones=st.just(datetime.timezone.utc))
    return valid | st.builds(rm.Timestamp.from_datetime, aware) | messages(rm.Timestamp)


def _special(cls: type[rm.Message]) -> st.SearchStrategy[Any]:
    """Random instances, valid or not, with the valid ones well represented."""
    if cls is rm.Duration:
        return _durations()
    if cls is rm.Timestamp:
        return _timestamps()
    if cls is rm.Struct:
        return st.dictionaries(st.text(max_size=4), json_values, max_size=3).map(rm.Struct.of)
    if cls is rm.ListValue:
        return st.lists(json_values, max_size=3).map(rm.ListValue.from_dict)
    if cls is rm.Value:
        return json_values.map(rm.Value.from_dict) | messages(rm.Value)
    if cls is rm.FieldMask:
        paths = st.from_regex(r"[a-z]{1,4}(_[a-z]{1,4}){0,2}(\.[a-z]{1,4}){0,1}", fullmatch=True)
        return st.lists(paths, max_size=3).map(lambda p: rm.FieldMask(paths=p)) | messages(cls)
    if cls is rm.Any:
        packed = any_payloads().map(rm.Any.pack)
        return st.just(rm.Any()) | packed | packed.map(rm.Any.pack)
    return messages(cls, 3)


@pytest.mark.parametrize("cls", RUNTIME_CLASSES, ids=lambda cls: cls.__name__)
def test_well_known_json_forms_are_json_formats(cls: type[rm.Message]) -> None:
    """to_dict() equals MessageToDict() of protobuf's class, or both refuse (an invalid
    Duration or Timestamp, a FieldMask path with no JSON form, NaN in a Value); from_dict()
    reads it back to a message that protobuf prints the same way."""
    pb_class = pb_class_for(cls)

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(_special(cls))
    def run(message: rm.Message) -> None:
        twin = to_protobuf(message, pb_class)
        try:
            theirs = json_format.MessageToDict(twin)
        except (ValueError, json_format.Error):
            with pytest.raises(ValueError):
                message.to_dict()
            return
        assert message.to_dict() == theirs
        back = cls.from_dict(theirs)
        assert json_format.MessageToDict(to_protobuf(back, pb_class)) == theirs
        assert json_format.MessageToDict(json_format.ParseDict(theirs, pb_class())) == theirs
        assert cls.from_bytes(message.to_bytes()) == message or theirs != theirs

    run()


@pytest.mark.parametrize(
    ("cls", "text"),
    [
        (rm.Duration, "1.5s"),
        (rm.Duration, "-0.000000001s"),
        (rm.Duration, "315576000000.999999999s"),
        (rm.Timestamp, "1972-01-01T10:00:20.021+05:30"),
        (rm.Timestamp, "0001-01-01T00:00:00Z"),
        (rm.FieldMask, "a.bC,dEF"),
        (rm.FieldMask, ""),
        (rm.Int64Value, "-9223372036854775808"),
        (rm.UInt64Value, 18446744073709551615),
        (rm.FloatValue, "NaN"),
        (rm.BytesValue, "_-8"),
        (rm.Value, None),
        (rm.Value, {"a": [1, "x", True, None, {}]}),
        (rm.Struct, {}),
        (rm.ListValue, [[], {}]),
        (rm.Any, {}),
    ],
)
def test_well_known_types_parse_what_parse_dict_parses(cls: type[rm.Message], text: Any) -> None:
    theirs = json_format.ParseDict(text, pb_class_for(cls)())
    ours = cls.from_dict(text)
    assert ours.to_dict() == json_format.MessageToDict(theirs)


@pytest.mark.parametrize(
    ("cls", "text"),
    [
        (rm.Duration, "1.5"),
        (rm.Duration, "315576000001s"),
        (rm.Timestamp, "1972-01-01 10:00:20Z"),
        (rm.Timestamp, "10000-01-01T00:00:00Z"),
        (rm.Timestamp, "2024-02-30T00:00:00Z"),
        (rm.FieldMask, "a_b"),
        (rm.FieldMask, ["a"]),
        (rm.Int32Value, 2**31),
        (rm.Int32Value, "x"),
        (rm.BoolValue, "true"),
        (rm.Struct, [1]),
        (rm.ListValue, {"a": 1}),
        (rm.Any, {"value": "x"}),
        (rm.Any, {"@type": "type.googleapis.com/no.such.Type"}),
    ],
)
def test_well_known_types_refuse_what_parse_dict_refuses(cls: type[rm.Message], text: Any) -> None:
    with pytest.raises((json_format.Error, TypeError, ValueError)):
        json_format.ParseDict(text, pb_class_for(cls)())
    with pytest.raises((TypeError, ValueError)):
        cls.from_dict(text)


@pytest.mark.parametrize(
    "inner",
    [
        rm.Duration(seconds=1, nanos=500_000_000),
        rm.Timestamp(seconds=1_700_000_000, nanos=1),
        rm.FieldMask(paths=["a.b_c"]),
        rm.Int32Value(value=0),
        rm.StringValue(value="x"),
        rm.Struct.of({"k": [1.0, None]}),
        rm.ListValue.from_dict([True]),
        rm.Value.from_dict("text"),
        rm.Empty(),
        rm.Any.pack(rm.BoolValue(value=True)),
    ],
    ids=lambda inner: type(inner).__name__,
)
def test_any_holding_a_well_known_type_is_protobufs_json(inner: rm.Message) -> None:
    packed = rm.Any.pack(inner)
    twin = to_protobuf(packed, pb_class_for(rm.Any))
    expected = json_format.MessageToDict(twin)
    assert packed.to_dict() == expected
    assert rm.Any.from_dict(expected) == packed
    assert packed.unpack() == inner
    if not isinstance(inner, rm.Empty):
        assert set(expected) == {"@type", "value"}


def test_any_resolves_well_known_types_without_any_import() -> None:
    # A fresh interpreter that imports nothing but rpcpoll.message.
    script = (
        "import rpcpoll.message as rm\n"
        "d = {'@type': 'type.googleapis.com/google.protobuf.Duration', 'value': '1.5s'}\n"
        "a = rm.Any.from_dict(d)\n"
        "assert a.unpack() == rm.Duration(seconds=1, nanos=500000000), a\n"
        "assert a.to_dict() == {'@type': d['@type'], 'value': '1.500s'}, a.to_dict()\n"
        "w = rm.Any.from_dict({'@type': 'x/google.protobuf.UInt64Value', 'value': '7'})\n"
        "assert w.unpack().value == 7\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.stdout == "ok\n", done.stderr


def test_type_api_and_source_context_generate_ordinary_classes(bundled: Generated) -> None:
    from google.protobuf import api_pb2, source_context_pb2, type_pb2

    type_module = bundled.module("google.protobuf.type_rpc")
    api_module = bundled.module("google.protobuf.api_rpc")
    source_context = bundled.module("google.protobuf.source_context_rpc")
    for cls in (type_module.Type, type_module.Field, api_module.Api, source_context.SourceContext):
        assert cls not in vars(rm).values() and issubclass(cls, rm.Message)
    theirs = api_pb2.Api(
        name="acme.Shop",
        version="v1",
        syntax=type_pb2.SYNTAX_PROTO3,
        source_context=source_context_pb2.SourceContext(file_name="acme/shop.proto"),
        methods=[api_pb2.Method(name="Buy", request_type_url="type.googleapis.com/acme.Order")],
        mixins=[api_pb2.Mixin(name="acme.Audit", root="audit")],
    )
    option = theirs.options.add(name="deprecated")
    option.value.Pack(wrappers_pb2.BoolValue(value=True))
    ours = api_module.Api.from_dict(json_format.MessageToDict(theirs))
    assert ours.to_dict() == json_format.MessageToDict(theirs)
    assert ours.options[0].value.unpack() == rm.BoolValue(value=True)
    assert api_module.Api.from_bytes(ours.to_bytes()) == ours
    field = type_module.Field(kind=type_module.Field.Kind.TYPE_STRING, number=1, name="x")
    assert type_module.Field.from_bytes(field.to_bytes()) == field
    assert field.to_dict() == json_format.MessageToDict(to_protobuf(field, type_pb2.Field))


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("type_rpc", "Type"),
        ("type_rpc", "Enum"),
        ("api_rpc", "Api"),
        ("source_context_rpc", "SourceContext"),
        ("descriptor_rpc", "FieldDescriptorProto"),
        ("descriptor_rpc", "FieldOptions"),
    ],
)
def test_ordinary_classes_of_bundled_protos_match_json_format(
    bundled: Generated, module: str, name: str
) -> None:
    from google.protobuf import api_pb2, descriptor_pb2, source_context_pb2, type_pb2  # noqa: F401

    cls = getattr(bundled.module(f"google.protobuf.{module}"), name)
    pb_class = pb_class_for(cls)

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(messages(cls, 1))
    def run(message: rm.Message) -> None:
        theirs = json_format.MessageToDict(to_protobuf(message, pb_class))
        assert message.to_dict() == theirs
        assert cls.from_dict(theirs) == message
        assert cls.from_bytes(message.to_bytes()) == message

    run()


@pytest.mark.parametrize(
    ("cls", "text"),
    [
        (rm.Duration, "1.0000000001s"),  # protobuf truncates digits beyond nanoseconds
        (rm.Duration, "+1s"),  # Python's int() takes a sign and spaces ...
        (rm.Duration, " 1s"),
        (rm.Duration, "1.s"),
        (rm.Timestamp, "1972-1-01T10:00:20Z"),  # ... and strptime one-digit fields
        (rm.Timestamp, "1972-01-01T10:00:20.Z"),
    ],
)
def test_well_known_text_protobufs_python_parser_accepts_by_accident_is_refused(
    cls: type[rm.Message], text: str
) -> None:
    # A known difference: the proto3 JSON mapping has no such forms, and rpcpoll refuses them.
    json_format.ParseDict(text, pb_class_for(cls)())
    with pytest.raises(ValueError, match=rf"^{cls.__name__}: '.*' is not"):
        cls.from_dict(text)


def test_timestamps_take_lower_case_t_and_z_as_rfc_3339_allows() -> None:
    # A known difference the other way: protobuf's Python parser refuses them.
    for text in ("1972-01-01t10:00:20Z", "1972-01-01T10:00:20z"):
        with pytest.raises(json_format.ParseError):
            json_format.ParseDict(text, pb_class_for(rm.Timestamp)())
        assert rm.Timestamp.from_dict(text) == rm.Timestamp(seconds=63108020)
