"""How proto types map to field annotations, runtime kinds and the inline checks of `_check()`.

An annotation is what msgspec decodes by and what type checkers see (`_msg.Int32` is an int with
a range). The inline checks are the fast path of a generated `_check()`: a value of the exact
expected class (and range) passes with a class comparison; anything else goes to
`rpcpoll.message.check_fields`, which accepts what the wire can carry and raises otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.descriptor_pb2 import FieldDescriptorProto as F

__all__ = ["RUNTIME_MESSAGES", "SCALARS", "WELL_KNOWN", "Scalar", "WellKnown"]

_INT32 = (-(2**31), 2**31 - 1)
_UINT32 = (0, 2**32 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_UINT64 = (0, 2**64 - 1)
FLOAT32_LIMIT = "3.4028235e38"  # rpcpoll.message.FLOAT32_LIMIT


@dataclass(frozen=True)
class Scalar:
    """A proto scalar type."""

    kind: str  # the rpcpoll.message kind
    annotation: str  # the field annotation, e.g. "_msg.Int32"
    python_type: str  # the exact class of a good value, e.g. "int"
    zero: object
    bounds: tuple[int, int] | None = None  # integers
    single: bool = False  # float (32-bit) rather than double

    def good(self, var: str, temp: str = "v", zero: str = "") -> str:
        """An expression true when `var` passes the fast path: exact class, in range; with
        `zero`, a float must also be non-zero or that very object.

        A range check reads `var` once into `temp` (a walrus), which the expression then uses.
        """
        if self.bounds is None and not self.single and not zero:
            return f"{var}.__class__ is {self.python_type}"
        test = f"({temp} := {var}).__class__ is {self.python_type}"
        if self.bounds is not None:
            lo, hi = self.bounds
            test += f" and {lo} <= {temp} <= {hi}"
        elif self.single:
            test += f" and -{FLOAT32_LIMIT} <= {temp} <= {FLOAT32_LIMIT}"
        if zero:
            test += f" and ({temp} or {temp} is {zero})"
        return test

    def bad(self, var: str) -> str:
        """The negation of `good`, written without a `not (...)` around it."""
        test = f"{var}.__class__ is not {self.python_type}"
        if self.bounds is not None:
            lo, hi = self.bounds
            test += f" or not {lo} <= {var} <= {hi}"
        elif self.single:
            test += f" or not -{FLOAT32_LIMIT} <= {var} <= {FLOAT32_LIMIT}"
        return test


SCALARS: dict[int, Scalar] = {
    F.TYPE_INT32: Scalar("_msg.INT32", "_msg.Int32", "int", 0, _INT32),
    F.TYPE_SINT32: Scalar("_msg.SINT32", "_msg.Int32", "int", 0, _INT32),
    F.TYPE_SFIXED32: Scalar("_msg.SFIXED32", "_msg.Int32", "int", 0, _INT32),
    F.TYPE_UINT32: Scalar("_msg.UINT32", "_msg.UInt32", "int", 0, _UINT32),
    F.TYPE_FIXED32: Scalar("_msg.FIXED32", "_msg.UInt32", "int", 0, _UINT32),
    F.TYPE_INT64: Scalar("_msg.INT64", "_msg.Int64", "int", 0, _INT64),
    F.TYPE_SINT64: Scalar("_msg.SINT64", "_msg.Int64", "int", 0, _INT64),
    F.TYPE_SFIXED64: Scalar("_msg.SFIXED64", "_msg.Int64", "int", 0, _INT64),
    F.TYPE_UINT64: Scalar("_msg.UINT64", "_msg.UInt64", "int", 0, _UINT64),
    F.TYPE_FIXED64: Scalar("_msg.FIXED64", "_msg.UInt64", "int", 0, _UINT64),
    F.TYPE_DOUBLE: Scalar("_msg.DOUBLE", "float", "float", 0.0),
    F.TYPE_FLOAT: Scalar("_msg.FLOAT", "_msg.Float32", "float", 0.0, single=True),
    F.TYPE_BOOL: Scalar("_msg.BOOL", "bool", "bool", False),
    F.TYPE_STRING: Scalar("_msg.STRING", "str", "str", ""),
    F.TYPE_BYTES: Scalar("_msg.BYTES", "bytes", "bytes", b""),
}


@dataclass(frozen=True)
class WellKnown:
    """A well-known type as a field: a native Python form, or a runtime class."""

    shape: str  # "scalar" (wrappers), "kind" (native form), "message" or "enum"
    kind: str  # the rpcpoll.message kind, class or enum
    annotation: str
    scalar: Scalar | None = None
    #: The values of a "kind" field need more than msgspec's decode (a range, numbers as
    #: floats); its class's __post_init__ hands them to the runtime.
    post_init: bool = False


def _wrapper(proto_type: int) -> WellKnown:
    scalar = SCALARS[proto_type]
    return WellKnown("scalar", scalar.kind, scalar.annotation, scalar)


#: Keyed by the type name as descriptors write it, with a leading dot.
WELL_KNOWN: dict[str, WellKnown] = {
    ".google.protobuf.Timestamp": WellKnown("kind", "_msg.TIMESTAMP", "_msg.DateTime"),
    ".google.protobuf.Duration": WellKnown(
        "kind", "_msg.DURATION", "_dt.timedelta", post_init=True
    ),
    ".google.protobuf.Struct": WellKnown(
        "kind", "_msg.STRUCT", "dict[str, _t.Any]", post_init=True
    ),
    ".google.protobuf.Value": WellKnown("kind", "_msg.VALUE", "_t.Any", post_init=True),
    ".google.protobuf.ListValue": WellKnown(
        "kind", "_msg.LIST_VALUE", "list[_t.Any]", post_init=True
    ),
    ".google.protobuf.FieldMask": WellKnown("kind", "_msg.FIELD_MASK", "list[str]"),
    ".google.protobuf.Empty": WellKnown("message", "_msg.Empty", "_msg.Empty"),
    ".google.protobuf.Any": WellKnown("message", "_msg.Any", "_msg.Any"),
    ".google.protobuf.NullValue": WellKnown("enum", "_msg.NullValue", "_msg.NullValue"),
    ".google.protobuf.DoubleValue": _wrapper(F.TYPE_DOUBLE),
    ".google.protobuf.FloatValue": _wrapper(F.TYPE_FLOAT),
    ".google.protobuf.Int64Value": _wrapper(F.TYPE_INT64),
    ".google.protobuf.UInt64Value": _wrapper(F.TYPE_UINT64),
    ".google.protobuf.Int32Value": _wrapper(F.TYPE_INT32),
    ".google.protobuf.UInt32Value": _wrapper(F.TYPE_UINT32),
    ".google.protobuf.BoolValue": _wrapper(F.TYPE_BOOL),
    ".google.protobuf.StringValue": _wrapper(F.TYPE_STRING),
    ".google.protobuf.BytesValue": _wrapper(F.TYPE_BYTES),
}

#: Well-known messages (and NullValue) that the runtime defines, with their proto3 JSON forms:
#: a module generated from google/protobuf/*.proto re-exports these instead of defining them,
#: and an rpc taking or returning one uses the runtime class.
RUNTIME_MESSAGES: dict[str, str] = {
    name: f"_msg.{name.rpartition('.')[2]}"
    for name in (
        ".google.protobuf.Any",
        ".google.protobuf.BoolValue",
        ".google.protobuf.BytesValue",
        ".google.protobuf.DoubleValue",
        ".google.protobuf.Duration",
        ".google.protobuf.Empty",
        ".google.protobuf.FieldMask",
        ".google.protobuf.FloatValue",
        ".google.protobuf.Int32Value",
        ".google.protobuf.Int64Value",
        ".google.protobuf.ListValue",
        ".google.protobuf.NullValue",
        ".google.protobuf.StringValue",
        ".google.protobuf.Struct",
        ".google.protobuf.Timestamp",
        ".google.protobuf.UInt32Value",
        ".google.protobuf.UInt64Value",
        ".google.protobuf.Value",
    )
}
