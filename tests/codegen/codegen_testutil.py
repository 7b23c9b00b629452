"""Helpers for the code generator's tests.

- `generate_package()` generates .proto files into a uniquely named package and imports it.
- `messages()` is a hypothesis strategy for any generated message class, driven by the field
  table the generated module registers (so it covers every case without per-case code).
- `to_protobuf()` builds the protobuf twin of a generated message field by field (not through
  JSON), so `json_format.MessageToDict` can be compared with `to_dict()` independently.
"""

from __future__ import annotations

import datetime
import enum
import importlib
import math
import subprocess
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from google.protobuf import json_format
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
}


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
        return st.sampled_from(list(cls)) | st.integers(-(2**31), 2**31 - 1)
    if cls is rm.Empty:
        return st.just(rm.Empty())
    if cls is rm.Any:
        return st.none() if depth <= 0 else st.builds(rm.Any.pack, _any_payloads())
    if isinstance(cls, type) and issubclass(cls, rm.Message):
        return None if depth <= 0 else messages(cls, depth - 1)
    raise AssertionError(f"no strategy for {kind!r}")


def _any_payloads() -> st.SearchStrategy[rm.Message]:
    # Any holds a message of a type the test imports; Empty is always registered.
    return st.just(rm.Empty())


def messages(cls: type[rm.Message], depth: int = 2) -> st.SearchStrategy[Any]:
    """Random valid instances of a generated message class."""
    fields = cls.__rpcpoll_info__.fields
    kwargs: dict[str, st.SearchStrategy[Any]] = {}
    oneofs: dict[str, list[tuple[str, st.SearchStrategy[Any]]]] = {}
    for field in fields:
        value = value_of(field.kind, depth)
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
        elif field.optional:
            kwargs[field.name] = st.none() | value
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
    if name == "google.protobuf.Timestamp":
        pb.FromDatetime(value)
    elif name == "google.protobuf.Duration":
        pb.FromTimedelta(value)
    elif name in ("google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"):
        json_format.ParseDict(value, pb)
    elif name == "google.protobuf.FieldMask":
        pb.paths.extend(value)
    elif name == "google.protobuf.Empty":
        pb.SetInParent()
    elif name == "google.protobuf.Any":
        inner = value.unpack()
        inner_class = _pb_class_for(type(inner))
        pb.Pack(to_protobuf(inner, inner_class))
    elif descriptor.file.name == "google/protobuf/wrappers.proto":
        pb.value = value
    else:
        pb.SetInParent()
        pb.CopyFrom(to_protobuf(value, type(pb)))


def _pb_class_for(cls: type[rm.Message]) -> type[PbMessage]:
    from google.protobuf import empty_pb2

    if cls is rm.Empty:
        return empty_pb2.Empty
    raise AssertionError(f"no protobuf class known for {cls}")
