"""Helpers for the code generator's tests.

- `GOOD_CASES`, `CORPUS_MODULES` and `CLASS_NAMES` describe the case corpus under cases/;
  `corpus_classes()` lists its message classes (nested ones too) by proto full name.
- `generate_package()` generates .proto files into a uniquely named package and imports it.
- `messages()` is a hypothesis strategy for any generated message class, driven by the field
  table the generated module registers (so it covers every case without per-case code);
  `json_inputs()` draws near-valid and invalid dicts for `from_dict`.
- `to_protobuf()` builds the protobuf twin of a generated message field by field (not through
  JSON), so `json_format.MessageToDict` can be compared with `to_dict()` independently;
  `pb_class_for()` finds the twin's class.
"""

from __future__ import annotations

import datetime
import enum
import importlib
import math
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from google.protobuf import descriptor_pool, json_format, message_factory
from google.protobuf.message import Message as PbMessage
from hypothesis import strategies as st

import rpcpoll.message as rm
from rpcpoll.codegen import generate, write

CASES = Path(__file__).parent / "cases"

#: Every case that must generate: (folder, files to pass, -I root) relative to CASES.
GOOD_CASES: dict[str, tuple[list[str], str]] = {
    "scalars": (["scalars/scalars.proto"], "scalars"),
    "keywords": (["keywords/keywords.proto"], "keywords"),
    "nested": (["nested_names/nested.proto"], "nested_names"),
    "oneof": (["oneof_zero/oneof.proto"], "oneof_zero"),
    "maps": (["maps/maps.proto"], "maps"),
    "wkt": (["well_known/wkt.proto"], "well_known"),
    "defaults": (["proto2_defaults/defaults.proto"], "proto2_defaults"),
    "editions": (["editions/editions.proto"], "editions"),
    "deep": (["deep/deep.proto"], "deep"),
    "streaming": (["streaming/streaming.proto"], "streaming"),
    "cross": (
        [
            "cross_package/acme/common/money.proto",
            "cross_package/acme/shop/public.proto",
            "cross_package/acme/shop/order.proto",
        ],
        "cross_package",
    ),
    "p2": (["proto2_corpus/unittest_p2.proto"], "proto2_corpus"),
    "ed2023": (["editions2023/features.proto", "editions2023/quiet.proto"], "editions2023"),
    "googleapis": (
        [
            "googleapis/google/type/money.proto",
            "googleapis/google/type/latlng.proto",
            "googleapis/google/type/date.proto",
            "googleapis/acme/geo/place.proto",
        ],
        "googleapis",
    ),
}


#: The generated modules of each good case, as imported from its package.
CORPUS_MODULES: dict[str, list[str]] = {
    "scalars": ["scalars_rpc"],
    "keywords": ["keywords_rpc"],
    "nested": ["nested_rpc"],
    "oneof": ["oneof_rpc"],
    "maps": ["maps_rpc"],
    "wkt": ["wkt_rpc"],
    "defaults": ["defaults_rpc"],
    "editions": ["editions_rpc"],
    "deep": ["deep_rpc"],
    "streaming": ["streaming_rpc"],
    "cross": ["acme.common.money_rpc", "acme.shop.public_rpc", "acme.shop.order_rpc"],
    "p2": ["unittest_p2_rpc"],
    "ed2023": ["features_rpc", "quiet_rpc"],
    "googleapis": [
        "google.type.money_rpc",
        "google.type.latlng_rpc",
        "google.type.date_rpc",
        "acme.geo.place_rpc",
    ],
}
assert set(CORPUS_MODULES) == set(GOOD_CASES)


#: Every message of the corpus by proto full name, as `corpus_classes` lists them; a new case
#: must add its messages here.
CLASS_NAMES = [
    "acme.common.Money",
    "acme.geo.Place",
    "acme.shop.Order",
    "acme.shop.Receipt",
    "cases.deep.A",
    "cases.deep.A.B",
    "cases.deep.A.B.C",
    "cases.deep.A.B.C.D",
    "cases.deep.A.B.C.D.E",
    "cases.deep.Tree",
    "cases.ed2023.Item",
    "cases.ed2023.Record",
    "cases.ed2023.quiet.Quiet",
    "cases.ed2023.quiet.Quiet.Part",
    "cases.editions.Node",
    "cases.keywords.Keywords",
    "cases.keywords.list",
    "cases.maps.Item",
    "cases.maps.Maps",
    "cases.nested.Content",
    "cases.nested.Content.Line",
    "cases.nested.ContentLine",
    "cases.nested.Shadow",
    "cases.nested.Shadow.class_",
    "cases.oneof.Choice",
    "cases.oneof.Empty",
    "cases.p2.ForeignMessage",
    "cases.p2.KeywordFields",
    "cases.p2.TestAllTypes",
    "cases.p2.TestAllTypes.NestedMessage",
    "cases.p2.TestMap",
    "cases.p2.TestRequired",
    "cases.p2.TestRequiredForeign",
    "cases.p2.class",
    "cases.proto2.Defaults",
    "cases.scalars.Optionals",
    "cases.scalars.Repeated",
    "cases.scalars.Scalars",
    "cases.streaming.Req",
    "cases.streaming.Resp",
    "cases.wkt.Note",
    "cases.wkt.WellKnown",
    "google.type.Date",
    "google.type.LatLng",
    "google.type.Money",
]


def _nested(cls: type[rm.Message]) -> Iterator[type[rm.Message]]:
    for value in vars(cls).values():
        if isinstance(value, type) and issubclass(value, rm.Message):
            yield value
            yield from _nested(value)


def corpus_classes(cases: dict[str, Generated]) -> dict[str, type[rm.Message]]:
    """Every message class the corpus defines (nested ones too), by proto full name."""
    found: dict[str, type[rm.Message]] = {}
    for case, modules in CORPUS_MODULES.items():
        for name in modules:
            module = cases[case].module(name)
            for cls in vars(module).values():
                if (
                    isinstance(cls, type)
                    and issubclass(cls, rm.Message)
                    and cls.__module__ == module.__name__
                ):
                    for each in (cls, *_nested(cls)):
                        found[rm.type_name(each)] = each
    return dict(sorted(found.items()))


class Generated:
    """A generated package on sys.path."""

    def __init__(self, root: Path, package: str) -> None:
        self.root = root
        self.package = package

    @property
    def path(self) -> Path:
        return self.root / self.package

    def module(self, name: str) -> ModuleType:
        return importlib.import_module(f"{self.package}.{name}")


def generate_package(
    root: Path, protos: Sequence[Path], includes: Sequence[Path], prefix: str = "gen"
) -> Generated:
    """Generate `protos` into root/<unique package>/ and return it; root must be on sys.path."""
    package = f"{prefix}_{uuid.uuid4().hex[:10]}"
    write(generate(protos, includes), root / package)
    importlib.invalidate_caches()
    return Generated(root, package)


def compile_pb2(out: Path, protos: Sequence[Path], include: Path) -> None:
    """protobuf's own Python classes for `protos`, written to `out` (which must be on sys.path)."""
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{include}", f"--python_out={out}"]
        + [str(proto) for proto in protos],
        check=True,
    )
    importlib.invalidate_caches()


# ---------------------------------------------------------------------------------------------
# Hypothesis strategies from field tables

UTC = datetime.timezone.utc
_INT_BOUNDS = {
    kind: (kind.lo, kind.hi)  # type: ignore[attr-defined]
    for kind in (
        rm.INT32,
        rm.SINT32,
        rm.SFIXED32,
        rm.UINT32,
        rm.FIXED32,
        rm.INT64,
        rm.SINT64,
        rm.SFIXED64,
        rm.UINT64,
        rm.FIXED64,
    )
}

json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=6,
)
_paths = st.lists(st.from_regex(r"[a-z]{1,5}(_[a-z]{1,5}){0,2}(\.[a-z]{1,5}){0,1}", fullmatch=True))


def value_of(kind: Any, depth: int) -> st.SearchStrategy[Any] | None:
    """A strategy for one value of a field kind; None when too deep to recurse."""
    if kind in _INT_BOUNDS:
        lo, hi = _INT_BOUNDS[kind]
        return st.integers(lo, hi)
    if kind is rm.DOUBLE:
        return st.floats(allow_nan=False)
    if kind is rm.FLOAT:
        # protobuf cannot parse back the JSON it prints for +-FLT_MAX (3.4028235e38 > FLT_MAX)
        return st.floats(allow_nan=False, width=32).filter(lambda x: not 3.4e38 < abs(x) < math.inf)
    if kind is rm.BOOL:
        return st.booleans()
    if kind is rm.STRING:
        return st.text(max_size=8)
    if kind is rm.BYTES:
        return st.binary(max_size=8)
    if kind is rm.TIMESTAMP:
        return st.datetimes(timezones=st.just(UTC))
    if kind is rm.DURATION:
        limit = datetime.timedelta(days=3_650_000)
        return st.timedeltas(min_value=-limit, max_value=limit)
    if kind is rm.STRUCT:
        return st.dictionaries(st.text(max_size=5), json_values, max_size=3)
    if kind is rm.VALUE:
        return json_values.filter(lambda value: value is not None)
    if kind is rm.LIST_VALUE:
        return st.lists(json_values, max_size=3)
    if kind is rm.FIELD_MASK:
        return _paths
    cls = getattr(kind, "cls", None)
    if isinstance(cls, type) and issubclass(cls, enum.IntEnum):
        if cls is rm.NullValue:
            return st.just(rm.NullValue.NULL_VALUE)
        if issubclass(cls, rm.ClosedEnum):
            # A closed enum holds only numbers it defines: protobuf cannot even hold others
            # (it drops them on parse), and rpcpoll refuses them on encode.
            return st.sampled_from(list(cls))
        # An open enum holds any int32 (a plain int is accepted); unknown numbers are kept.
        return st.sampled_from(list(cls)) | st.integers(-(2**31), 2**31 - 1)
    if cls is rm.Empty:
        return st.just(rm.Empty())
    if cls is rm.Any:
        return st.none() if depth <= 0 else st.builds(rm.Any.pack, any_payloads())
    if isinstance(cls, type) and issubclass(cls, rm.Message):
        return None if depth <= 0 else messages(cls, depth - 1)
    raise AssertionError(f"no strategy for {kind!r}")


def any_payloads() -> st.SearchStrategy[rm.Message]:
    # Any holds a message of a type that is registered: the well-known types always are.
    return st.sampled_from(
        [
            rm.Empty(),
            rm.Duration(seconds=-1, nanos=-500_000_000),
            rm.Timestamp(seconds=1_700_000_000, nanos=1000),
            rm.Int64Value(value=2**40),
            rm.StringValue(value="x"),
            rm.FieldMask(paths=["a.b_c", "d"]),
            rm.Struct.of({"k": [1.0, None, "v"]}),
        ]
    )


def messages(cls: type[rm.Message], depth: int = 2) -> st.SearchStrategy[Any]:
    """Random valid instances of a generated message class."""
    fields = cls.__rpcpoll_info__.fields
    kwargs: dict[str, st.SearchStrategy[Any]] = {}
    oneofs: dict[str, list[tuple[str, st.SearchStrategy[Any]]]] = {}
    for field in fields:
        value = value_of(field.kind, depth)
        if value is None and field.required:
            value = messages(field.kind.cls, 0)  # type: ignore[attr-defined]
        if value is None:
            continue  # too deep: leave the message field unset
        if field.key is not None:
            key = value_of(field.key, depth)
            assert key is not None
            kwargs[field.name] = st.dictionaries(key, value, max_size=3)
        elif field.repeated:
            kwargs[field.name] = st.lists(value, max_size=3)
        elif field.oneof is not None:
            oneofs.setdefault(field.oneof, []).append((field.name, value))
        elif field.optional or field.required:
            # Explicit presence (proto2, proto3 optional, editions EXPLICIT, messages): None
            # is "not set". A required field left None can be built but not encoded.
            kwargs[field.name] = value if field.required else st.none() | value
        else:
            kwargs[field.name] = value

    @st.composite
    def build(draw: st.DrawFn) -> Any:
        values = {name: draw(strategy) for name, strategy in kwargs.items()}
        for members in oneofs.values():
            chosen = draw(st.sampled_from([None, *members]))
            if chosen is not None:
                name, strategy = chosen
                values[name] = draw(strategy)
        return cls(**values)

    return build()


# ---------------------------------------------------------------------------------------------
# protobuf twins


def to_protobuf(message: rm.Message, pb_class: type[PbMessage]) -> PbMessage:
    """The protobuf message with the same content as a generated rpcpoll message."""
    pb = pb_class()
    if isinstance(message, rm.Any):  # its value holds MessagePack: pack the twin instead
        _set_message(pb, message, None, pb_class.DESCRIPTOR)
        return pb
    for field in type(message).__rpcpoll_info__.fields:
        value = getattr(message, field.name)
        target = pb_class.DESCRIPTOR.fields_by_name[field.proto_name]
        if field.key is not None:
            container = getattr(pb, field.proto_name)
            value_type = target.message_type.fields_by_name["value"]
            for key, item in value.items():
                if value_type.message_type is not None:
                    _set_message(container[key], item, field.kind, value_type.message_type)
                else:
                    container[key] = item
        elif field.repeated:
            container = getattr(pb, field.proto_name)
            for item in value:
                if target.message_type is not None:
                    _set_message(container.add(), item, field.kind, target.message_type)
                else:
                    container.append(item)
        elif value is None:
            continue
        elif target.message_type is not None:
            _set_message(getattr(pb, field.proto_name), value, field.kind, target.message_type)
        else:
            setattr(pb, field.proto_name, value)
    return pb


def _set_message(pb: Any, value: Any, kind: Any, descriptor: Any) -> None:
    name = descriptor.full_name
    pb.SetInParent()
    if name == "google.protobuf.Any":
        if value.type_url or value.value:  # else: an empty Any, set
            inner = value.unpack()
            pb.Pack(to_protobuf(inner, pb_class_for(type(inner))))
    elif isinstance(value, rm.Message):  # generated, or a runtime well-known message
        pb.CopyFrom(to_protobuf(value, type(pb)))
    elif name == "google.protobuf.Timestamp":
        pb.FromDatetime(value)
    elif name == "google.protobuf.Duration":
        pb.FromTimedelta(value)
    elif name in ("google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"):
        json_format.ParseDict(value, pb)
    elif name == "google.protobuf.FieldMask":
        pb.paths.extend(value)
    elif descriptor.file.name == "google/protobuf/wrappers.proto":
        pb.value = value
    else:
        raise AssertionError(f"no protobuf form known for {value!r} as {name}")


def pb_class_for(cls: type[rm.Message]) -> type[PbMessage]:
    """protobuf's class for the same proto message as a generated (or runtime) class; its
    _pb2 module must have been imported (the well-known types are imported here)."""
    from google.protobuf import (  # noqa: F401  (registers the well-known types)
        any_pb2,
        duration_pb2,
        empty_pb2,
        field_mask_pb2,
        struct_pb2,
        timestamp_pb2,
        wrappers_pb2,
    )

    descriptor = descriptor_pool.Default().FindMessageTypeByName(rm.type_name(cls))
    return message_factory.GetMessageClass(descriptor)


# ---------------------------------------------------------------------------------------------
# Near-valid and invalid inputs

#: JSON-like values that are wrong, or right, for some field somewhere: numbers at and beyond
#: every range, the special strings of the JSON mapping, enum names of the corpus, bad base64.
_JSON_STRINGS = [
    "", "1", "-1", "1.5", "NaN", "Infinity", "-Infinity", "1e3", " 1", "0x10", "abc", "AAEC",
    "_w-_", "true", "false", "1970-01-01T00:00:00Z", "2024-02-30T00:00:00Z", "1.5s", "-0.5s",
    "a.b,cD", "FOO", "BAR", "COLOR_RED", "MAP_ENUM_BAR", "CLOSED_ONE", "4294967296",
    "9223372036854775808", "18446744073709551616", "-0", "1.0", "1e-3", "NULL_VALUE",
    "3.4028236e38",
]  # fmt: skip
_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**65), 2**65)
    | st.sampled_from([2**31, -(2**31) - 1, 2**32, 2**63, -(2**63) - 1, 2**64])
    | st.floats()
    | st.sampled_from(_JSON_STRINGS)
    | st.text(max_size=3)
)
json_garbage = st.recursive(
    _json_scalars,
    lambda children: (
        st.lists(children, max_size=2)
        | st.dictionaries(
            st.text(max_size=3) | st.sampled_from(["1", "true", "-5", "a", "c", "bb", "@type"]),
            children,
            max_size=2,
        )
    ),
    max_leaves=4,
)


@st.composite
def json_inputs(draw: st.DrawFn, cls: type[rm.Message]) -> dict[str, Any]:
    """A dict for `cls.from_dict`: some fields (by JSON or proto name) with values taken from
    the JSON form of a random valid message or from `json_garbage`."""
    info = cls.__rpcpoll_info__
    valid = draw(messages(cls)).to_dict()
    names = sorted({name for field in info.fields for name in (field.json_name, field.proto_name)})
    data: dict[str, Any] = {}
    for key in draw(st.lists(st.sampled_from(names), max_size=4, unique=True)) if names else []:
        field = info.by_json_name[key]
        if field.json_name in valid and draw(st.booleans()):
            data[key] = valid[field.json_name]
        else:
            data[key] = draw(json_garbage)
    return data
