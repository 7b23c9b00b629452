"""What generated field annotations are made of: ranged integers, enums that stay open, and the
MessagePack codec they travel through.

Facts about msgspec (0.18+) that this package relies on:

- A Struct field renamed to `"1"` is written under the MessagePack string key `"1"`; unknown
  keys are skipped on decode; with `omit_defaults=True` a field whose value *is* its default
  object is left out (an identity test, plus "empty" for list and dict factories): an equal
  but distinct value, such as a 0.0 float other than the default object, is written. So
  implicit-presence fields hold their default object when at their default (see `ZERO`).
- `Annotated[int, Meta(ge=..., le=...)]` is enforced on decode, also for dict keys. Nothing is
  enforced on construction or on encode: the encoder writes whatever object it finds, and
  refuses types it does not know (str and int *subclasses* among them, IntEnum excepted).
- An `IntEnum` field decodes a number the enum does not define by calling `cls(value)`, so
  `_missing_` decides what unknown numbers become.
- `__post_init__` runs after `__init__` *and* after every decode of that class.
- `Decoder.decode` takes any buffer (a memoryview slice of a receive buffer works) and copies
  `bytes` fields out of it; `Encoder.encode_into` writes into an existing bytearray.
"""

from __future__ import annotations

import datetime
import enum
import typing as t
from typing import Annotated

import msgspec

__all__ = [
    "FLOAT32_LIMIT",
    "INT32_MAX",
    "INT32_MIN",
    "ZERO",
    "ClosedEnum",
    "DateTime",
    "DecodeError",
    "Enum",
    "Float32",
    "Int32",
    "Int64",
    "Required",
    "UInt32",
    "UInt64",
    "drop_unknown",
    "encode",
    "encode_into",
    "field",
]

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
UINT32_MAX, UINT64_MAX = 2**32 - 1, 2**64 - 1
#: The largest value a `float` (32-bit) field takes: the largest float32, 0x1.fffffep+127,
#: rounded up to the 8 digits protobuf prints it with; it still rounds to that float32.
FLOAT32_LIMIT = 3.4028235e38

# Field annotations of generated messages. For type checkers they are plain ints and floats;
# msgspec enforces the ranges when it decodes.
Int32 = Annotated[int, msgspec.Meta(ge=INT32_MIN, le=INT32_MAX)]
"""int32, sint32 and sfixed32."""
UInt32 = Annotated[int, msgspec.Meta(ge=0, le=UINT32_MAX)]
"""uint32 and fixed32."""
Int64 = Annotated[int, msgspec.Meta(ge=INT64_MIN, le=INT64_MAX)]
"""int64, sint64 and sfixed64."""
UInt64 = Annotated[int, msgspec.Meta(ge=0)]
"""uint64 and fixed64 (msgspec takes no bound beyond int64; MessagePack has no int above
2**64 - 1 anyway)."""
Float32 = float
"""float. Its range (finite values up to FLOAT32_LIMIT, or +-inf, or NaN) cannot be said with
msgspec.Meta, so the generated `__post_init__` checks it."""
#: The default of every implicit-presence `double` and `float` field. msgspec's omit_defaults
#: compares a value with its field's default by identity, and floats are not interned: a 0.0
#: other than this object would be written. The generated `_check()` passes this object and
#: any non-zero float; any other 0.0 goes to `check_fields`, which stores this one instead.
ZERO = 0.0
DateTime = Annotated[datetime.datetime, msgspec.Meta(tz=True)]
"""google.protobuf.Timestamp as a field: a timezone-aware datetime (msgpack timestamp ext -1)."""

_T = t.TypeVar("_T")
if t.TYPE_CHECKING:
    Required: t.TypeAlias = t.Union[_T, None]  # noqa: UP007 (a generic alias)
else:

    class Required:
        """`Required[T]`: the annotation of a proto2 `required` field.

        Type checkers see `T | None` (None: not set yet, refused on encode); msgspec sees `T`,
        so that a payload holding nil for the field is a DecodeError, as a missing one is.
        """

        def __class_getitem__(cls, item: t.Any) -> t.Any:
            return item


#: msgspec.field, re-exported so that type checkers still see a field specifier in generated
#: code: `id: _msg.Int32 = _msg.field(name="1", default=0)`.
field = msgspec.field


class DecodeError(ValueError):
    """Bytes (or a dict) that are not a valid encoding of the expected message.

    The message names the message and the field path, e.g.
    ``Order.lines[2].price: Expected `int` <= 2147483647``.
    """


# One encoder for everything: msgspec keeps no state between calls, so threads may share it.
_ENCODER = msgspec.msgpack.Encoder()
encode = _ENCODER.encode
encode_into = _ENCODER.encode_into


# ---------------------------------------------------------------------------------------------
# Enums


class Enum(enum.IntEnum):
    """Base of generated enums: an open enum, as every proto3 enum is.

    A number the schema does not define is kept: decoding it (or calling `Color(7)`) gives a
    member-like value of the enum with that number, whose `name` is None. Such values are not
    cached, so hostile input cannot grow the enum.
    """

    @classmethod
    def _missing_(cls, value: object) -> t.Any:
        if not isinstance(value, int) or value.__class__ is not int:
            return None
        if not INT32_MIN <= value <= INT32_MAX:
            return None
        unknown = int.__new__(cls, value)
        unknown._name_ = None  # type: ignore[assignment]
        unknown._value_ = value
        return unknown

    def __repr__(self) -> str:
        if self._name_ is None:
            return f"{type(self).__name__}({int(self)})"
        return super().__repr__()

    @property
    def known(self) -> bool:
        """Whether the schema defines this number."""
        return self._name_ is not None


class ClosedEnum(Enum):
    """Base of generated closed enums (proto2, or editions with `enum_type = CLOSED`).

    As in protobuf, a message that receives a number its closed enum does not define treats the
    field as not set (a repeated field drops the item, a map the entry); see `drop_unknown`.
    """


def drop_unknown(values: t.Any) -> t.Any:
    """A list or dict of enum values without the unknown ones (closed enums); the same object
    when there are none."""
    items = values.values() if values.__class__ is dict else values
    if all(not isinstance(v, Enum) or v._name_ is not None for v in items):
        return values
    if values.__class__ is dict:
        return {k: v for k, v in values.items() if not isinstance(v, Enum) or v._name_ is not None}
    return [v for v in values if not isinstance(v, Enum) or v._name_ is not None]
