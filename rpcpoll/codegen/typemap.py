"""How proto types map to Python annotations, runtime kinds and inline wire checks.

The inline checks are the fast path of generated `_to_wire()` / `_from_wire()`: a value of the
exact expected class (and range) passes with a class comparison; anything else goes to the
kind's `encode()` / `decode()`, which accepts subclasses and raises the error naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.descriptor_pb2 import FieldDescriptorProto as F

__all__ = ["SCALARS", "WELL_KNOWN", "Scalar", "WellKnown"]

_INT32 = (-(2**31), 2**31 - 1)
_UINT32 = (0, 2**32 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_UINT64 = (0, 2**64 - 1)
_FLOAT32_LIMIT = "3.4028235e38"  # rpcpoll.message.FLOAT32_LIMIT


@dataclass(frozen=True)
class Scalar:
    """A proto scalar type."""

    kind: str  # the rpcpoll.message kind
    annotation: str  # the Python type
    zero: object
    bounds: tuple[int, int] | None = None  # integers
    single: bool = False  # float (32-bit) rather than double

    def encode_guard(self, var: str = "v") -> str:
        """True for a value `var` that must take the slow path of encoding."""
        guard = f"{var}.__class__ is not {self.annotation}"
        if self.bounds is not None:
            lo, hi = self.bounds
            guard += f" or not {lo} <= {var} <= {hi}"
        elif self.single:
            guard += f" or not -{_FLOAT32_LIMIT} <= {var} <= {_FLOAT32_LIMIT}"
        return guard

    def decode_guard(self, var: str = "v") -> str:
        """True for a decoded value `var` that must take the slow path of decoding."""
        guard = f"{var}.__class__ is not {self.annotation}"
        if self.bounds == _INT64:  # msgpack ints are >= -2**63 already
            guard += f" or {var} > {_INT64[1]}"
        elif self.bounds == _UINT64:  # ... and < 2**64
            guard += f" or {var} < 0"
        elif self.bounds is not None:
            lo, hi = self.bounds
            guard += f" or not {lo} <= {var} <= {hi}"
        elif self.single:  # as on encode, so that whatever decodes encodes again
            guard += f" or not -{_FLOAT32_LIMIT} <= {var} <= {_FLOAT32_LIMIT}"
        return guard


SCALARS: dict[int, Scalar] = {
    F.TYPE_INT32: Scalar("_msg.INT32", "int", 0, _INT32),
    F.TYPE_SINT32: Scalar("_msg.SINT32", "int", 0, _INT32),
    F.TYPE_SFIXED32: Scalar("_msg.SFIXED32", "int", 0, _INT32),
    F.TYPE_UINT32: Scalar("_msg.UINT32", "int", 0, _UINT32),
    F.TYPE_FIXED32: Scalar("_msg.FIXED32", "int", 0, _UINT32),
    F.TYPE_INT64: Scalar("_msg.INT64", "int", 0, _INT64),
    F.TYPE_SINT64: Scalar("_msg.SINT64", "int", 0, _INT64),
    F.TYPE_SFIXED64: Scalar("_msg.SFIXED64", "int", 0, _INT64),
    F.TYPE_UINT64: Scalar("_msg.UINT64", "int", 0, _UINT64),
    F.TYPE_FIXED64: Scalar("_msg.FIXED64", "int", 0, _UINT64),
    F.TYPE_DOUBLE: Scalar("_msg.DOUBLE", "float", 0.0),
    F.TYPE_FLOAT: Scalar("_msg.FLOAT", "float", 0.0, single=True),
    F.TYPE_BOOL: Scalar("_msg.BOOL", "bool", False),
    F.TYPE_STRING: Scalar("_msg.STRING", "str", ""),
    F.TYPE_BYTES: Scalar("_msg.BYTES", "bytes", b""),
}


@dataclass(frozen=True)
class WellKnown:
    """A well-known type with a native Python form (or a runtime class)."""

    shape: str  # "scalar" (wrappers), "kind", "message" or "enum"
    kind: str  # the rpcpoll.message kind, class or enum
    annotation: str
    scalar: Scalar | None = None
    uses_datetime: bool = False


def _wrapper(proto_type: int) -> WellKnown:
    scalar = SCALARS[proto_type]
    return WellKnown("scalar", scalar.kind, scalar.annotation, scalar)


#: Keyed by the type name as descriptors write it, with a leading dot.
WELL_KNOWN: dict[str, WellKnown] = {
    ".google.protobuf.Timestamp": WellKnown(
        "kind", "_msg.TIMESTAMP", "_dt.datetime", uses_datetime=True
    ),
    ".google.protobuf.Duration": WellKnown(
        "kind", "_msg.DURATION", "_dt.timedelta", uses_datetime=True
    ),
    ".google.protobuf.Struct": WellKnown("kind", "_msg.STRUCT", "dict[str, _t.Any]"),
    ".google.protobuf.Value": WellKnown("kind", "_msg.VALUE", "_t.Any"),
    ".google.protobuf.ListValue": WellKnown("kind", "_msg.LIST_VALUE", "list[_t.Any]"),
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
