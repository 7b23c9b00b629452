"""The runtime of generated messages: the `Message` base class, field kinds, msgpack and JSON.

A module written by `rpcpoll gen` subclasses `Message` once per proto message and implements
two methods per class, `_to_wire()` and `_from_wire()`, specialised to the message's fields so
that the hot path is straight-line code. Everything else (`to_bytes`, `from_bytes`, `to_dict`,
`from_dict`, `==`, `repr`) lives here and is driven by the field table that the generated
module registers with `describe_message()`.

Facts about the wire form that the rest of this module relies on:

- A message is a msgpack map keyed by field number. A field at its default value is left out;
  a field with presence (message fields, oneof members, proto3 `optional`, well-known wrapper
  types) is written whenever it is set, even to a zero value. Unknown numbers are ignored.
- msgpack >= 1.0 refuses int map keys unless unpacked with `strict_map_key=False`.
- `Timestamp` travels as msgpack's own timestamp extension (type -1), packed from an aware
  `datetime` with `Packer(datetime=True)` and unpacked with `timestamp=3`; `Duration` travels
  as a `[seconds, nanos]` array; wrapper types as the bare scalar; `Struct`, `Value` and
  `ListValue` as the msgpack map, value or array they describe (numbers as doubles, as in
  protobuf); `FieldMask` as an array of paths.
- The `to_dict()` form is protobuf's canonical proto3 JSON mapping, checked against
  `google.protobuf.json_format.MessageToDict` in the test suite.
"""

from __future__ import annotations

import base64
import datetime
import enum
import math
import re
import struct
import typing as t
from collections.abc import Iterable, Mapping
from typing import ClassVar, TypeVar

import msgpack

__all__ = [
    "BOOL",
    "BYTES",
    "DOUBLE",
    "DURATION",
    "ENUM",
    "FIELD_MASK",
    "FIXED32",
    "FIXED64",
    "FLOAT",
    "FLOAT32_LIMIT",
    "INT32",
    "INT64",
    "LIST_VALUE",
    "SFIXED32",
    "SFIXED64",
    "SINT32",
    "SINT64",
    "STRING",
    "STRUCT",
    "TIMESTAMP",
    "UINT32",
    "UINT64",
    "VALUE",
    "Any",
    "Buffer",
    "DecodeError",
    "Empty",
    "Field",
    "Kind",
    "Message",
    "NullValue",
    "check_message",
    "check_oneof",
    "decode_enum",
    "decode_list",
    "decode_map",
    "describe_enum",
    "describe_message",
    "encode_list",
    "encode_map",
    "message_type",
    "missing_field",
    "type_name",
]

M = TypeVar("M", bound="Message")

#: What `Message.from_bytes` accepts; any bytes-like object works, none is copied first.
Buffer = bytes | bytearray | memoryview

_INT32 = (-(2**31), 2**31 - 1)
_UINT32 = (0, 2**32 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_UINT64 = (0, 2**64 - 1)
#: The largest value a `float` (32-bit) field takes: the largest float32, 0x1.fffffep+127,
#: rounded up to the 8 digits protobuf prints it with; it still rounds to that float32.
FLOAT32_LIMIT = 3.4028235e38
_MAX_DURATION_SECONDS = 315_576_000_000  # protobuf's limit: +-10,000 years


class DecodeError(ValueError):
    """Bytes (or a decoded value) that are not a valid encoding of the expected message."""


# ---------------------------------------------------------------------------------------------
# msgpack plumbing


def _new_packer() -> t.Any:
    return msgpack.Packer(datetime=True)


# A Packer reuses its internal buffer, which makes `pack` a good deal cheaper than `packb`, but
# it must not be used by two threads at once. Message.to_bytes takes a packer out of this pool
# and puts it back, so concurrent callers never share one; list.pop/append are atomic. (msgpack
# resets a packer's buffer when `pack` raises, so a failed call leaves it reusable.)
_PACKERS: list[t.Any] = [_new_packer()]


_unpackb = msgpack.unpackb


def _describe(value: t.Any) -> str:
    return type(value).__name__


# ---------------------------------------------------------------------------------------------
# Kinds: one object per proto type that knows how to check, encode, decode and JSON-map a value.


class Kind:
    """How values of one proto type are checked, put on the wire and mapped to JSON.

    `encode` checks a Python value and returns what goes on the wire, raising `TypeError` or
    `ValueError` that names `where`. `decode` does the reverse for a value msgpack produced,
    raising `DecodeError`. `to_json` / `from_json` implement protobuf's JSON mapping.
    """

    __slots__ = ("name", "zero")

    def __init__(self, name: str, zero: t.Any = None) -> None:
        self.name = name
        self.zero = zero
        _KINDS[self] = self

    def __repr__(self) -> str:
        return f"<rpcpoll kind {self.name}>"

    def encode(self, value: t.Any, where: str) -> t.Any:
        raise NotImplementedError

    def decode(self, value: t.Any, where: str) -> t.Any:
        raise NotImplementedError

    def to_json(self, value: t.Any) -> t.Any:
        return value

    def from_json(self, value: t.Any, where: str) -> t.Any:
        raise NotImplementedError

    def json_key(self, key: t.Any) -> str:
        """The JSON object key for a map key of this kind."""
        return str(key)

    def from_json_key(self, key: str, where: str) -> t.Any:
        return self.from_json(key, where)

    def is_default(self, value: t.Any, default: t.Any) -> bool:
        """Whether an implicit-presence field holding `value` is left out of JSON."""
        return bool(value == default)

    def fast(self, items: Iterable[t.Any]) -> bool:
        """Whether every item already has its final type and range, as a Python value and as
        a wire value, so that a list or dict of them can be used as is."""
        return False

    def encode_items(self, values: t.Any, where: str) -> list[t.Any]:
        """The wire form of a repeated field, item by item."""
        encode = self.encode
        return [encode(item, f"{where}[{i}]") for i, item in enumerate(_as_list(values, where))]

    def decode_items(self, values: t.Any, where: str) -> list[t.Any]:
        """A repeated field from its wire form, item by item."""
        if values.__class__ is not list:
            raise DecodeError(f"{where}: expected an array, got {_describe(values)}")
        decode = self.decode
        return [decode(item, f"{where}[{i}]") for i, item in enumerate(values)]


_KINDS: dict[object, Kind] = {}  # kinds by themselves, and by generated class (see _kind)


def _as_list(values: t.Any, where: str) -> list[t.Any]:
    if values.__class__ is list:
        return values
    if isinstance(values, (str, bytes, bytearray, memoryview, Mapping)) or not isinstance(
        values, Iterable
    ):
        raise TypeError(f"{where}: expected a list, got {_describe(values)}")
    return list(values)


class _IntKind(Kind):
    __slots__ = ("hi", "json_string", "lo")

    def __init__(self, name: str, bounds: tuple[int, int], *, json_string: bool) -> None:
        super().__init__(name, 0)
        self.lo, self.hi = bounds
        self.json_string = json_string

    def encode(self, value: t.Any, where: str) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{where}: expected int ({self.name}), got {_describe(value)}")
        if not self.lo <= value <= self.hi:
            raise ValueError(f"{where}: {value} is out of range for {self.name}")
        return int(value)

    def decode(self, value: t.Any, where: str) -> int:
        if value.__class__ is not int:
            raise DecodeError(f"{where}: expected {self.name}, got {_describe(value)}")
        if not self.lo <= value <= self.hi:
            raise DecodeError(f"{where}: {value} is out of range for {self.name}")
        return value

    def fast(self, items: Iterable[t.Any]) -> bool:
        lo, hi = self.lo, self.hi
        for item in items:  # noqa: SIM110 - a loop beats all() over a generator
            if item.__class__ is not int or not lo <= item <= hi:
                return False
        return True

    def to_json(self, value: t.Any) -> t.Any:
        return str(int(value)) if self.json_string else int(value)

    def from_json(self, value: t.Any, where: str) -> int:
        # protobuf accepts numbers, integral floats and strings of either.
        if isinstance(value, bool):
            raise TypeError(f"{where}: expected an integer, got a boolean")
        number: int
        if isinstance(value, int):
            number = value
        elif isinstance(value, float):
            if not value.is_integer():
                raise ValueError(f"{where}: {value!r} is not an integer")
            number = int(value)
        elif isinstance(value, str):
            if value != value.strip() or not value:
                raise ValueError(f"{where}: {value!r} is not an integer")
            try:
                number = int(value)
            except ValueError:
                as_float = float(value)  # raises ValueError for garbage
                if not as_float.is_integer():
                    raise ValueError(f"{where}: {value!r} is not an integer") from None
                number = int(as_float)
        else:
            raise TypeError(f"{where}: expected an integer, got {_describe(value)}")
        if not self.lo <= number <= self.hi:
            raise ValueError(f"{where}: {number} is out of range for {self.name}")
        return number

    def json_key(self, key: t.Any) -> str:
        return str(int(key))


class _FloatKind(Kind):
    __slots__ = ("single",)

    def __init__(self, name: str, *, single: bool) -> None:
        super().__init__(name, 0.0)
        self.single = single

    def encode(self, value: t.Any, where: str) -> float:
        if isinstance(value, float):
            number = float(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:
                raise ValueError(f"{where}: {value} is out of range for {self.name}") from None
        else:
            raise TypeError(f"{where}: expected float ({self.name}), got {_describe(value)}")
        if self.single and math.isfinite(number) and abs(number) > FLOAT32_LIMIT:
            raise ValueError(f"{where}: {value!r} is out of range for {self.name}")
        return number

    def decode(self, value: t.Any, where: str) -> float:
        # Some msgpack encoders write integral doubles as ints; accept them.
        if value.__class__ is float:
            number = value
        elif value.__class__ is int:
            try:
                number = float(value)
            except OverflowError:
                raise DecodeError(f"{where}: {value} is out of range for {self.name}") from None
        else:
            raise DecodeError(f"{where}: expected {self.name}, got {_describe(value)}")
        # The encoder's range, so that whatever decodes encodes again (NaN and inf are fine).
        if self.single and math.isfinite(number) and abs(number) > FLOAT32_LIMIT:
            raise DecodeError(f"{where}: {number!r} is out of range for {self.name}")
        return number

    def fast(self, items: Iterable[t.Any]) -> bool:
        limit = FLOAT32_LIMIT if self.single else math.inf
        for item in items:  # a plain loop: faster than all() over a generator
            if item.__class__ is not float or not -limit <= item <= limit:
                return False
        return True

    def is_default(self, value: t.Any, default: t.Any) -> bool:
        # protobuf compares bit patterns: -0.0 is not the default, and neither is NaN.
        return bool(value == default) and math.copysign(1.0, value) == math.copysign(1.0, default)

    def to_json(self, value: t.Any) -> t.Any:
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return _shortest_float32(value) if self.single else float(value)

    def from_json(self, value: t.Any, where: str) -> float:
        if isinstance(value, bool):
            raise TypeError(f"{where}: expected a number, got a boolean")
        if isinstance(value, (int, float)):
            number = float(value)
            if not math.isfinite(number):
                raise ValueError(f"{where}: use the strings NaN, Infinity or -Infinity")
        elif isinstance(value, str):
            special = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
            if value in special:
                return special[value]
            try:
                number = float(value)
            except ValueError:
                raise ValueError(f"{where}: {value!r} is not a number") from None
            if not math.isfinite(number):
                raise ValueError(f"{where}: {value!r} is not a number")
        else:
            raise TypeError(f"{where}: expected a number, got {_describe(value)}")
        if self.single:
            # Like protobuf, keep what a float32 keeps. FLOAT32_LIMIT rather than _FLOAT_MAX:
            # protobuf prints _FLOAT_MAX as 3.4028235e38 and should read that back.
            if abs(number) > FLOAT32_LIMIT:
                raise ValueError(f"{where}: {value!r} is out of range for {self.name}")
            (number,) = struct.unpack("<f", struct.pack("<f", number))
        return number


def _shortest_float32(value: float) -> float:
    """The shortest decimal that reads back as the same float32 (protobuf's ToShortestFloat)."""
    (single,) = struct.unpack("<f", struct.pack("<f", value))
    for precision in range(6, 18):
        candidate = float(f"{single:.{precision}g}")
        if struct.unpack("<f", struct.pack("<f", candidate))[0] == single:
            return candidate
    return float(single)


class _ExactKind(Kind):
    """A kind whose Python and wire values are both exactly `exact` (bool, str, bytes)."""

    __slots__ = ()
    exact: t.ClassVar[type]

    def fast(self, items: Iterable[t.Any]) -> bool:
        exact = self.exact
        for item in items:  # noqa: SIM110 - a loop beats all() over a generator
            if item.__class__ is not exact:
                return False
        return True

    def decode(self, value: t.Any, where: str) -> t.Any:
        if value.__class__ is not self.exact:
            raise DecodeError(f"{where}: expected {self.exact.__name__}, got {_describe(value)}")
        return value


class _BoolKind(_ExactKind):
    __slots__ = ()
    exact = bool

    def encode(self, value: t.Any, where: str) -> bool:
        if value.__class__ is not bool:
            raise TypeError(f"{where}: expected bool, got {_describe(value)}")
        return value

    def from_json(self, value: t.Any, where: str) -> bool:
        if value.__class__ is not bool:
            raise TypeError(f"{where}: expected true or false, got {_describe(value)}")
        return value

    def json_key(self, key: t.Any) -> str:
        return "true" if key else "false"

    def from_json_key(self, key: str, where: str) -> bool:
        if key not in ("true", "false"):
            raise ValueError(f"{where}: expected 'true' or 'false', got {key!r}")
        return key == "true"


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class _StringKind(_ExactKind):
    __slots__ = ()
    exact = str

    def encode(self, value: t.Any, where: str) -> str:
        if not isinstance(value, str):
            raise TypeError(f"{where}: expected str, got {_describe(value)}")
        return str(value)

    def from_json(self, value: t.Any, where: str) -> str:
        if not isinstance(value, str):
            raise TypeError(f"{where}: expected a string, got {_describe(value)}")
        if _LONE_SURROGATE.search(value):
            raise ValueError(f"{where}: string holds an unpaired surrogate")
        return value

    def from_json_key(self, key: str, where: str) -> str:
        return self.from_json(key, where)


class _BytesKind(_ExactKind):
    __slots__ = ()
    exact = bytes

    def encode(self, value: t.Any, where: str) -> bytes:
        if isinstance(value, (bytes, bytearray, memoryview)):
            return bytes(value)
        raise TypeError(f"{where}: expected bytes, got {_describe(value)}")

    def to_json(self, value: t.Any) -> str:
        return base64.b64encode(value).decode("ascii")

    def from_json(self, value: t.Any, where: str) -> bytes:
        # protobuf accepts the standard and the URL-safe alphabet, with or without padding.
        if not isinstance(value, str):
            raise TypeError(f"{where}: expected a base64 string, got {_describe(value)}")
        text = value.replace("-", "+").replace("_", "/").rstrip("=")
        try:
            return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except ValueError:
            raise ValueError(f"{where}: {value!r} is not valid base64") from None


INT32 = _IntKind("int32", _INT32, json_string=False)
SINT32 = _IntKind("sint32", _INT32, json_string=False)
SFIXED32 = _IntKind("sfixed32", _INT32, json_string=False)
UINT32 = _IntKind("uint32", _UINT32, json_string=False)
FIXED32 = _IntKind("fixed32", _UINT32, json_string=False)
INT64 = _IntKind("int64", _INT64, json_string=True)
SINT64 = _IntKind("sint64", _INT64, json_string=True)
SFIXED64 = _IntKind("sfixed64", _INT64, json_string=True)
UINT64 = _IntKind("uint64", _UINT64, json_string=True)
FIXED64 = _IntKind("fixed64", _UINT64, json_string=True)
DOUBLE = _FloatKind("double", single=False)
FLOAT = _FloatKind("float", single=True)
BOOL = _BoolKind("bool", False)
STRING = _StringKind("string", "")
BYTES = _BytesKind("bytes", b"")
#: The wire check shared by every enum: an int in int32 range (unknown values are allowed).
ENUM = _IntKind("enum", _INT32, json_string=False)


# ---------------------------------------------------------------------------------------------
# Enums


class NullValue(enum.IntEnum):
    """`google.protobuf.NullValue`: its one value maps to JSON null."""

    NULL_VALUE = 0


class _EnumInfo:
    __slots__ = ("by_name", "by_number", "full_name")

    def __init__(self, full_name: str, by_number: dict[int, str], by_name: dict[str, int]) -> None:
        self.full_name = full_name
        self.by_number = by_number
        self.by_name = by_name


_ENUMS: dict[type[enum.IntEnum], _EnumInfo] = {}


def describe_enum(
    cls: type[enum.IntEnum], full_name: str, renamed: Mapping[str, str] | None = None
) -> None:
    """Register a generated enum. `renamed` maps escaped Python member names to proto names."""
    proto_names = dict(renamed or {})
    by_number: dict[int, str] = {}
    by_name: dict[str, int] = {}
    for python_name, member in cls.__members__.items():
        proto_name = proto_names.get(python_name, python_name)
        by_number.setdefault(int(member), proto_name)  # for aliases the first name wins
        by_name[proto_name] = int(member)
    _ENUMS[cls] = _EnumInfo(full_name, by_number, by_name)


describe_enum(NullValue, "google.protobuf.NullValue")


def decode_enum(cls: type[enum.IntEnum], value: t.Any, where: str) -> t.Any:
    """Decode an enum field: its member, or the plain int when the schema does not know it."""
    if value.__class__ is not int or not -(2**31) <= value <= 2**31 - 1:
        ENUM.decode(value, where)  # raises the DecodeError
    # _value2member_map_ is Enum's own value -> member table: a dict lookup, where cls(value)
    # costs a metaclass call and raises for unknown values.
    return cls._value2member_map_.get(value, value)


class _UnknownEnumName(ValueError):
    """A JSON enum name the schema does not know; skipped under ignore_unknown_fields."""


class _EnumKind(Kind):
    __slots__ = ("cls",)

    def __init__(self, cls: type[enum.IntEnum]) -> None:
        super().__init__(cls.__qualname__, 0)
        self.cls = cls

    @property
    def info(self) -> _EnumInfo:
        # Looked up late: a kind may exist before describe_enum() has run for its class.
        return _ENUMS.get(self.cls) or _EnumInfo(self.cls.__qualname__, {}, {})

    def encode(self, value: t.Any, where: str) -> int:
        return ENUM.encode(value, where)

    def decode(self, value: t.Any, where: str) -> t.Any:
        return decode_enum(self.cls, value, where)

    def to_json(self, value: t.Any) -> t.Any:
        if self.cls is NullValue:
            return None
        return self.info.by_number.get(int(value), int(value))

    def from_json(self, value: t.Any, where: str) -> t.Any:
        if self.cls is NullValue and value is None:
            return NullValue.NULL_VALUE
        if isinstance(value, str):
            if value in self.info.by_name:
                return self.cls(self.info.by_name[value])
            try:
                number = int(value)
            except ValueError:
                message = f"{where}: {value!r} is not a value of {self.name}"
                raise _UnknownEnumName(message) from None
        elif isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            raise TypeError(f"{where}: expected an enum name, got {_describe(value)}")
        ENUM.encode(number, where)  # range check
        return self.cls._value2member_map_.get(number, number)


# ---------------------------------------------------------------------------------------------
# Message kinds and the helpers generated code calls for containers


class _MessageKind(Kind):
    __slots__ = ("cls",)

    def __init__(self, cls: type[Message]) -> None:
        super().__init__(cls.__qualname__)
        self.cls = cls

    def encode(self, value: t.Any, where: str) -> t.Any:
        return check_message(value, self.cls, where)._to_wire()

    def decode(self, value: t.Any, where: str) -> t.Any:
        return self.cls._from_wire(value)

    def encode_items(self, values: t.Any, where: str) -> list[t.Any]:
        cls = self.cls
        return [
            (
                item if item.__class__ is cls else check_message(item, cls, f"{where}[{i}]")
            )._to_wire()
            for i, item in enumerate(_as_list(values, where))
        ]

    def decode_items(self, values: t.Any, where: str) -> list[t.Any]:
        if values.__class__ is not list:
            raise DecodeError(f"{where}: expected an array, got {_describe(values)}")
        from_wire = self.cls._from_wire
        return [from_wire(item) for item in values]

    def to_json(self, value: t.Any) -> t.Any:
        return value.to_dict()

    def from_json(self, value: t.Any, where: str, *, ignore_unknown_fields: bool = False) -> t.Any:
        if not isinstance(value, Mapping):
            raise TypeError(f"{where}: expected an object, got {_describe(value)}")
        return self.cls.from_dict(value, ignore_unknown_fields=ignore_unknown_fields)


def _kind(spec: Kind | type) -> Kind:
    """The Kind for a kind object, a generated message class or a generated enum class."""
    found = _KINDS.get(spec)
    if found is None:
        if isinstance(spec, type) and issubclass(spec, Message):
            found = _MessageKind(spec)
        elif isinstance(spec, type) and issubclass(spec, enum.IntEnum):
            found = _EnumKind(spec)
        else:
            raise TypeError(f"not a field kind: {spec!r}")
        _KINDS[spec] = found
    return found


def check_message(value: t.Any, cls: type[M], where: str) -> M:
    """Return `value` if it is a `cls` message, else raise a TypeError naming `where`."""
    if not isinstance(value, cls):
        raise TypeError(f"{where}: expected {cls.__qualname__}, got {_describe(value)}")
    return value


def encode_list(values: t.Any, kind: Kind | type, where: str) -> list[t.Any]:
    """Check a repeated field and return its wire form (the list itself when it can)."""
    found = _KINDS.get(kind) or _kind(kind)
    if values.__class__ is list and found.fast(values):
        return values
    return found.encode_items(values, where)


def decode_list(values: t.Any, kind: Kind | type, where: str) -> list[t.Any]:
    """Decode a repeated field from its wire form; None (absent) is the empty list."""
    if values is None:
        return []
    found = _KINDS.get(kind) or _kind(kind)
    if values.__class__ is list and found.fast(values):
        return values
    return found.decode_items(values, where)


def encode_map(values: t.Any, key: Kind, value: Kind | type, where: str) -> dict[t.Any, t.Any]:
    """Check a map field and return its wire form (the dict itself when it can)."""
    value_kind = _KINDS.get(value) or _kind(value)
    if values.__class__ is dict and key.fast(values) and value_kind.fast(values.values()):
        return values
    if not isinstance(values, Mapping):
        raise TypeError(f"{where}: expected a dict, got {_describe(values)}")
    encode_key, encode_value = key.encode, value_kind.encode
    return {
        encode_key(k, f"{where} key"): encode_value(v, f"{where}[{k!r}]") for k, v in values.items()
    }


def decode_map(values: t.Any, key: Kind, value: Kind | type, where: str) -> dict[t.Any, t.Any]:
    """Decode a map field from its wire form; None (absent) is the empty dict."""
    if values is None:
        return {}
    if values.__class__ is not dict:
        raise DecodeError(f"{where}: expected a map, got {_describe(values)}")
    value_kind = _KINDS.get(value) or _kind(value)
    if key.fast(values) and value_kind.fast(values.values()):
        return values
    decode_key, decode_value = key.decode, value_kind.decode
    return {
        decode_key(k, f"{where} key"): decode_value(v, f"{where}[{k!r}]") for k, v in values.items()
    }


def missing_field(where: str) -> ValueError:
    """The error for a proto2 `required` field that is not set."""
    return ValueError(f"{where}: required field is not set")


def check_oneof(
    message: Message, oneof: str, members: tuple[str, ...], *, decoding: bool = False
) -> None:
    """Raise ValueError (DecodeError when `decoding`) if more than one member is set."""
    chosen = [name for name in members if getattr(message, name) is not None]
    if len(chosen) > 1:
        error = DecodeError if decoding else ValueError
        where = f"{type(message).__qualname__}.{oneof}"
        raise error(f"{where}: oneof has more than one member set ({', '.join(chosen)})")


# ---------------------------------------------------------------------------------------------
# Well-known types with a native Python form


class _TimestampKind(Kind):
    __slots__ = ()

    def encode(self, value: t.Any, where: str) -> datetime.datetime:
        if not isinstance(value, datetime.datetime):
            raise TypeError(f"{where}: expected datetime, got {_describe(value)}")
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"{where}: naive datetime; use a timezone-aware datetime")
        return value

    def decode(self, value: t.Any, where: str) -> datetime.datetime:
        if value.__class__ is not datetime.datetime:
            raise DecodeError(f"{where}: expected a timestamp, got {_describe(value)}")
        return value

    def to_json(self, value: t.Any) -> str:
        utc = value.astimezone(datetime.timezone.utc)
        # Not strftime: it does not zero-pad years below 1000 on every platform.
        text = (
            f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}"
            f"T{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}"
        )
        if utc.microsecond:
            fraction = f"{utc.microsecond:06d}"
            text += "." + (fraction[:3] if fraction.endswith("000") else fraction)
        return text + "Z"

    def from_json(self, value: t.Any, where: str) -> datetime.datetime:
        if not isinstance(value, str):
            raise TypeError(f"{where}: expected an RFC 3339 string, got {_describe(value)}")
        match = _RFC3339.fullmatch(value)
        if match is None:
            raise ValueError(f"{where}: {value!r} is not an RFC 3339 timestamp")
        year, month, day, hour, minute, second, fraction, offset = match.groups()
        micros = int((fraction or "")[1:7].ljust(6, "0"))  # nanoseconds are truncated
        if offset == "Z":
            tz = datetime.timezone.utc
        else:
            sign = -1 if offset[0] == "-" else 1
            tz = datetime.timezone(
                sign * datetime.timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6]))
            )
        try:
            parsed = datetime.datetime(
                int(year), int(month), int(day), int(hour), int(minute), int(second), micros, tz
            )
            return parsed.astimezone(datetime.timezone.utc)
        except (ValueError, OverflowError):
            raise ValueError(f"{where}: {value!r} is not a valid timestamp") from None


_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})"
)


class _DurationKind(Kind):
    __slots__ = ()

    def encode(self, value: t.Any, where: str) -> list[int]:
        if not isinstance(value, datetime.timedelta):
            raise TypeError(f"{where}: expected timedelta, got {_describe(value)}")
        micros = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
        seconds = abs(micros) // 1_000_000 * (1 if micros >= 0 else -1)  # toward zero
        nanos = (micros - seconds * 1_000_000) * 1_000
        if abs(seconds) > _MAX_DURATION_SECONDS:
            raise ValueError(f"{where}: {value} is out of range for Duration")
        return [seconds, nanos]

    def decode(self, value: t.Any, where: str) -> datetime.timedelta:
        if (
            value.__class__ is not list
            or len(value) != 2
            or value[0].__class__ is not int
            or value[1].__class__ is not int
        ):
            raise DecodeError(f"{where}: expected a [seconds, nanos] duration")
        seconds, nanos = value
        if (
            abs(seconds) > _MAX_DURATION_SECONDS
            or abs(nanos) > 999_999_999
            or (seconds > 0 > nanos)
            or (seconds < 0 < nanos)
        ):
            raise DecodeError(f"{where}: invalid duration {seconds}s {nanos}ns")
        micros = abs(nanos) // 1000 * (1 if nanos >= 0 else -1)  # nanoseconds are truncated
        return datetime.timedelta(seconds=seconds, microseconds=micros)

    def to_json(self, value: t.Any) -> str:
        seconds, nanos = self.encode(value, "Duration")
        sign = "-" if seconds < 0 or nanos < 0 else ""
        seconds, nanos = abs(seconds), abs(nanos)
        if nanos == 0:
            return f"{sign}{seconds}s"
        if nanos % 1_000_000 == 0:
            return f"{sign}{seconds}.{nanos // 1_000_000:03d}s"
        if nanos % 1_000 == 0:
            return f"{sign}{seconds}.{nanos // 1_000:06d}s"
        return f"{sign}{seconds}.{nanos:09d}s"

    def from_json(self, value: t.Any, where: str) -> datetime.timedelta:
        if not isinstance(value, str):
            raise TypeError(f"{where}: expected a duration string, got {_describe(value)}")
        match = re.fullmatch(r"(-)?(\d+)(?:\.(\d{1,9}))?s", value)
        if match is None:
            raise ValueError(f"{where}: {value!r} is not a duration like '1.5s'")
        negative, whole, fraction = match.groups()
        seconds, micros = int(whole), int((fraction or "")[:6].ljust(6, "0"))
        if seconds > _MAX_DURATION_SECONDS:
            raise ValueError(f"{where}: {value!r} is out of range for Duration")
        result = datetime.timedelta(seconds=seconds, microseconds=micros)
        return -result if negative else result


def _json_in(value: t.Any, where: str) -> t.Any:
    """Check a Struct/Value/ListValue given by the user; numbers become floats, as in protobuf."""
    if value is None:
        return None
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (int, float)):
        try:
            return float(value)
        except OverflowError:
            raise ValueError(f"{where}: {value} is too large for a JSON number") from None
    if isinstance(value, Mapping):
        return _json_object_in(value, where)
    if isinstance(value, (list, tuple)):
        return [_json_in(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise TypeError(f"{where}: {_describe(value)} is not a JSON value")


def _json_object_in(value: t.Any, where: str) -> dict[str, t.Any]:
    if not isinstance(value, Mapping):
        raise TypeError(f"{where}: expected a dict, got {_describe(value)}")
    result: dict[str, t.Any] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise TypeError(f"{where}: keys must be str, got {_describe(key)}")
        result[str(key)] = _json_in(item, f"{where}[{key!r}]")
    return result


def _json_wire(value: t.Any, where: str) -> t.Any:
    """Check a Struct/Value/ListValue that msgpack produced."""
    cls = value.__class__
    if value is None or cls is bool or cls is str or cls is float:
        return value
    if cls is int:
        try:
            return float(value)
        except OverflowError:
            raise DecodeError(f"{where}: {value} is too large for a JSON number") from None
    if cls is dict:
        return _json_object_wire(value, where)
    if cls is list:
        return [_json_wire(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise DecodeError(f"{where}: {_describe(value)} is not a JSON value")


def _json_object_wire(value: t.Any, where: str) -> dict[str, t.Any]:
    if value.__class__ is not dict:
        raise DecodeError(f"{where}: expected a map, got {_describe(value)}")
    for key in value:
        if key.__class__ is not str:
            raise DecodeError(f"{where}: keys must be str, got {_describe(key)}")
    return {key: _json_wire(item, f"{where}[{key!r}]") for key, item in value.items()}


def _json_out(value: t.Any) -> t.Any:
    if value.__class__ is float and not math.isfinite(value):
        raise ValueError("a Struct or Value number cannot be NaN or Infinity in JSON")
    if isinstance(value, dict):
        return {key: _json_out(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_out(item) for item in value]
    return value


class _ValueKind(Kind):
    """google.protobuf.Value (any JSON value), Struct (an object) or ListValue (an array)."""

    __slots__ = ("shape",)

    def __init__(self, name: str, shape: type | None) -> None:
        super().__init__(name)
        self.shape = shape

    def encode(self, value: t.Any, where: str) -> t.Any:
        if self.shape is dict:
            return _json_object_in(value, where)
        if self.shape is list:
            return _json_in(_as_list(value, where), where)
        return _json_in(value, where)

    def decode(self, value: t.Any, where: str) -> t.Any:
        if self.shape is dict:
            return _json_object_wire(value, where)
        if self.shape is list and value.__class__ is not list:
            raise DecodeError(f"{where}: expected an array, got {_describe(value)}")
        return _json_wire(value, where)

    def to_json(self, value: t.Any) -> t.Any:
        return _json_out(value)

    def from_json(self, value: t.Any, where: str) -> t.Any:
        return self.encode(value, where)


class _FieldMaskKind(Kind):
    __slots__ = ()

    def encode(self, value: t.Any, where: str) -> list[str]:
        return encode_list(value, STRING, where)

    def decode(self, value: t.Any, where: str) -> list[str]:
        if value.__class__ is not list:
            raise DecodeError(f"{where}: expected an array of paths, got {_describe(value)}")
        return decode_list(value, STRING, where)

    def to_json(self, value: t.Any) -> str:
        return ",".join(_snake_to_camel_path(path) for path in value)

    def from_json(self, value: t.Any, where: str) -> list[str]:
        if not isinstance(value, str):
            raise TypeError(f"{where}: expected a comma-separated string, got {_describe(value)}")
        return [_camel_to_snake_path(path, where) for path in value.split(",")] if value else []


def _snake_to_camel_path(path: str) -> str:
    if re.search(r"[A-Z]|_(?![a-z])", path):
        raise ValueError(f"FieldMask path {path!r} has no JSON form (must be lower snake_case)")
    return re.sub(r"_([a-z])", lambda m: m.group(1).upper(), path)


def _camel_to_snake_path(path: str, where: str) -> str:
    if "_" in path:
        raise ValueError(f"{where}: JSON FieldMask path {path!r} must be camelCase")
    return re.sub(r"[A-Z]", lambda m: "_" + m.group(0).lower(), path)


TIMESTAMP = _TimestampKind("google.protobuf.Timestamp")
DURATION = _DurationKind("google.protobuf.Duration")
STRUCT = _ValueKind("google.protobuf.Struct", dict)
VALUE = _ValueKind("google.protobuf.Value", None)
LIST_VALUE = _ValueKind("google.protobuf.ListValue", list)
FIELD_MASK = _FieldMaskKind("google.protobuf.FieldMask")


# ---------------------------------------------------------------------------------------------
# Field tables


class Field:
    """One field of a generated message, as registered by `describe_message()`.

    `kind` is a kind object (`INT32`, `TIMESTAMP`, ...), a generated message class or a
    generated enum class. A map field has a `key` kind; a repeated field has `repeated=True`.
    `optional=True` marks presence (None means unset); `required=True` a proto2 required field;
    every other field has implicit presence and is left out of JSON at `default`.
    """

    __slots__ = (
        "default",
        "json_name",
        "key",
        "kind",
        "name",
        "number",
        "oneof",
        "optional",
        "proto_name",
        "repeated",
        "required",
    )

    def __init__(
        self,
        number: int,
        name: str,
        kind: Kind | type,
        *,
        repeated: bool = False,
        key: Kind | None = None,
        optional: bool = False,
        required: bool = False,
        oneof: str | None = None,
        default: t.Any = None,
        proto_name: str | None = None,
        json_name: str | None = None,
    ) -> None:
        self.number = number
        self.name = name
        self.kind = _kind(kind)
        self.repeated = repeated
        self.key = key
        self.optional = optional or oneof is not None
        self.required = required
        self.oneof = oneof
        self.default = self.kind.zero if default is None else default
        self.proto_name = proto_name or name
        self.json_name = json_name or _json_name(self.proto_name)

    def __repr__(self) -> str:
        return f"<Field {self.number} {self.name}: {self.kind.name}>"


def _json_name(proto_name: str) -> str:
    """protoc's default JSON name: drop underscores, upper-case the letter after each."""
    parts = proto_name.split("_")
    return parts[0] + "".join(part[:1].upper() + part[1:] for part in parts[1:])


class _MessageInfo:
    __slots__ = ("by_json_name", "fields", "full_name")

    def __init__(self, full_name: str, fields: tuple[Field, ...]) -> None:
        self.full_name = full_name
        self.fields = fields
        self.by_json_name: dict[str, Field] = {}
        for field in fields:
            self.by_json_name[field.proto_name] = field
        for field in fields:
            self.by_json_name[field.json_name] = field


_MESSAGES: dict[str, type[Message]] = {}


def describe_message(cls: type[Message], full_name: str, *fields: Field) -> None:
    """Register a generated message class with its proto full name and field table."""
    cls.__rpcpoll_info__ = _MessageInfo(full_name, fields)
    _MESSAGES[full_name] = cls


def message_type(full_name: str) -> type[Message] | None:
    """The imported message class for a proto full name such as "echo.EchoRequest", if any."""
    return _MESSAGES.get(full_name)


def type_name(message: Message | type[Message]) -> str:
    """The proto full name of a generated message or message class, e.g. "echo.EchoRequest"."""
    cls = message if isinstance(message, type) else type(message)
    return cls.__rpcpoll_info__.full_name


# ---------------------------------------------------------------------------------------------
# The base class


class Message:
    """Base of every generated message class.

    Subclasses are slotted classes with a keyword-only constructor; they implement
    `_to_wire()` (return the msgpack map, checking every field) and `_from_wire()` (build an
    instance from the unpacked map, checking every field).
    """

    __slots__ = ()
    __rpcpoll_info__: ClassVar[_MessageInfo]

    def to_bytes(self) -> bytes:
        """Encode to msgpack. Raises TypeError/ValueError naming the offending field."""
        wire = self._to_wire()
        # _pack() inlined: this is the hottest path of the encoder.
        try:
            packer = _PACKERS.pop()
        except IndexError:
            packer = _new_packer()
        try:
            data: bytes = packer.pack(wire)
            return data
        except UnicodeEncodeError:
            raise ValueError(
                f"{type(self).__qualname__}: a string holds an unpaired surrogate "
                "and cannot be encoded as UTF-8"
            ) from None
        finally:
            _PACKERS.append(packer)

    @classmethod
    def from_bytes(cls: type[M], data: Buffer) -> M:
        """Decode from msgpack (any bytes-like object, not copied first).

        Unknown field numbers are ignored; an empty buffer is the message with all defaults.
        Raises DecodeError, and nothing else, on malformed input.
        """
        try:
            wire = _unpackb(data, strict_map_key=False, timestamp=3)
        except Exception as exc:  # msgpack raises ValueError, TypeError, OverflowError, ...
            if not isinstance(data, (bytes, bytearray, memoryview)) or len(data):
                raise DecodeError(f"{cls.__qualname__}: not valid msgpack ({exc})") from exc
            wire = {}  # protobuf's convention: no bytes at all is the default message
        try:
            return cls._from_wire(wire)
        except RecursionError:
            raise DecodeError(f"{cls.__qualname__}: message nests too deeply") from None

    def to_dict(self) -> dict[str, t.Any]:
        """protobuf's canonical proto3 JSON form, as `json_format.MessageToDict` gives it."""
        result: dict[str, t.Any] = {}
        for field in self.__rpcpoll_info__.fields:
            value = getattr(self, field.name)
            kind = field.kind
            if field.key is not None:
                if value:
                    key = field.key
                    result[field.json_name] = {
                        key.json_key(k): kind.to_json(v) for k, v in value.items()
                    }
            elif field.repeated:
                if value:
                    result[field.json_name] = [kind.to_json(item) for item in value]
            elif field.optional or field.required:
                if value is not None:
                    result[field.json_name] = kind.to_json(value)
            elif not kind.is_default(value, field.default):
                result[field.json_name] = kind.to_json(value)
        return result

    @classmethod
    def from_dict(
        cls: type[M], data: Mapping[str, t.Any], *, ignore_unknown_fields: bool = False
    ) -> M:
        """Build a message from its JSON form; accepts JSON names and proto field names.

        Raises ValueError or TypeError naming the field on bad input, and ValueError on an
        unknown field unless `ignore_unknown_fields`.
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"{cls.__qualname__}: expected a dict, got {_describe(data)}")
        info = cls.__rpcpoll_info__
        values: dict[str, t.Any] = {}
        oneofs: dict[str, str] = {}
        for json_key, raw in data.items():
            field = info.by_json_name.get(json_key)
            if field is None:
                if ignore_unknown_fields:
                    continue
                raise ValueError(f"{cls.__qualname__}: no field named {json_key!r}")
            if field.name in values:
                raise ValueError(f"{cls.__qualname__}: field {json_key!r} is given twice")
            where = f"{cls.__qualname__}.{field.name}"
            if raw is None and field.kind is not VALUE and field.kind.name != NullValue.__name__:
                continue  # JSON null means "not set"
            if field.oneof is not None:
                if field.oneof in oneofs:
                    raise ValueError(
                        f"{cls.__qualname__}.{field.oneof}: oneof has more than one member set "
                        f"({oneofs[field.oneof]}, {field.name})"
                    )
                oneofs[field.oneof] = field.name
            try:
                values[field.name] = _field_from_json(field, raw, where, ignore_unknown_fields)
            except _UnknownEnumName:
                if not ignore_unknown_fields:
                    raise
        return cls(**values)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in _slot_names(self))

    __hash__ = None  # type: ignore[assignment]  # messages are mutable

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{field.name}={getattr(self, field.name)!r}" for field in self.__rpcpoll_info__.fields
        )
        return f"{type(self).__qualname__}({fields})"

    def _to_wire(self) -> dict[int, t.Any]:
        raise NotImplementedError  # generated

    @classmethod
    def _from_wire(cls: type[M], wire: t.Any) -> M:
        raise NotImplementedError  # generated


def _slot_names(message: Message) -> tuple[str, ...]:
    names: tuple[str, ...] = type(message).__slots__
    return names


def _field_from_json(field: Field, raw: t.Any, where: str, ignore_unknown: bool) -> t.Any:
    kind = field.kind

    def one(value: t.Any, at: str) -> t.Any:
        if isinstance(kind, _MessageKind):
            return kind.from_json(value, at, ignore_unknown_fields=ignore_unknown)
        return kind.from_json(value, at)

    if field.key is not None:
        if not isinstance(raw, Mapping):
            raise TypeError(f"{where}: expected an object, got {_describe(raw)}")
        result: dict[t.Any, t.Any] = {}
        for k, v in raw.items():
            at = f"{where}[{k!r}]"
            try:
                result[field.key.from_json_key(k, at)] = one(v, at)
            except _UnknownEnumName:
                if not ignore_unknown:
                    raise
        return result
    if field.repeated:
        if not isinstance(raw, (list, tuple)):
            raise TypeError(f"{where}: expected a list, got {_describe(raw)}")
        items = []
        for i, item in enumerate(raw):
            at = f"{where}[{i}]"
            if item is None and kind is not VALUE:
                raise ValueError(f"{at}: null is not allowed in a repeated field")
            try:
                items.append(one(item, at))
            except _UnknownEnumName:
                if not ignore_unknown:
                    raise
        return items
    return one(raw, where)


# ---------------------------------------------------------------------------------------------
# Messages of well-known types that stay messages: Empty and t.Any


class Empty(Message):
    """`google.protobuf.Empty`: a message with no fields."""

    __slots__ = ()

    def __init__(self) -> None:
        pass

    def _to_wire(self) -> dict[int, t.Any]:
        return {}

    @classmethod
    def _from_wire(cls, wire: t.Any) -> Empty:
        if wire.__class__ is not dict:
            raise DecodeError(f"Empty: expected a map, got {_describe(wire)}")
        return cls.__new__(cls)


class Any(Message):
    """`google.protobuf.Any`: a message of any type, as a type URL and its encoded bytes.

    `value` holds rpcpoll's (msgpack) encoding of the packed message. Use `Any.pack(message)`
    and `any.unpack()`; `to_dict()`/`from_dict()` need the packed type's module imported.
    """

    __slots__ = ("type_url", "value")

    type_url: str
    value: bytes

    def __init__(self, *, type_url: str = "", value: bytes = b"") -> None:
        self.type_url = type_url
        self.value = value

    @classmethod
    def pack(cls, message: Message, type_url_prefix: str = "type.googleapis.com/") -> Any:
        """Wrap `message`: its type URL is the prefix followed by its proto full name."""
        prefix = type_url_prefix if type_url_prefix.endswith("/") else type_url_prefix + "/"
        return cls(type_url=prefix + type_name(message), value=message.to_bytes())

    @property
    def type_name(self) -> str:
        """The proto full name in `type_url` (the part after the last slash)."""
        return self.type_url.rpartition("/")[2]

    def is_type(self, cls: type[Message]) -> bool:
        """Whether this Any holds a `cls` message."""
        return self.type_name == type_name(cls)

    def unpack(self, cls: type[M] | None = None) -> M | Message:
        """Decode the packed message, as `cls` or as the imported class its type URL names.

        Raises TypeError if `cls` does not match the type URL or no such class is imported,
        and DecodeError if the bytes are malformed.
        """
        found = message_type(self.type_name)
        if cls is None:
            if found is None:
                raise TypeError(f"Any: no imported message type {self.type_name!r}")
            return found.from_bytes(self.value)
        if not self.is_type(cls):
            raise TypeError(f"Any holds {self.type_name!r}, not {type_name(cls)!r}")
        return cls.from_bytes(self.value)

    def _to_wire(self) -> dict[int, t.Any]:
        wire: dict[int, t.Any] = {}
        if self.type_url:
            wire[1] = STRING.encode(self.type_url, "Any.type_url")
        if self.value:
            wire[2] = BYTES.encode(self.value, "Any.value")
        return wire

    @classmethod
    def _from_wire(cls, wire: t.Any) -> Any:
        if wire.__class__ is not dict:
            raise DecodeError(f"Any: expected a map, got {_describe(wire)}")
        self = cls.__new__(cls)
        self.type_url = STRING.decode(wire.get(1, ""), "Any.type_url")
        self.value = BYTES.decode(wire.get(2, b""), "Any.value")
        return self

    def to_dict(self) -> dict[str, t.Any]:
        """`{"@type": url, ...fields of the packed message}`; `{}` for an empty Any."""
        if not self.type_url and not self.value:
            return {}
        return {"@type": self.type_url, **self.unpack().to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, t.Any], *, ignore_unknown_fields: bool = False) -> Any:
        if not isinstance(data, Mapping):
            raise TypeError(f"Any: expected a dict, got {_describe(data)}")
        if not data:
            return cls()
        if "@type" not in data:
            raise ValueError("Any: '@type' is missing")
        type_url = data["@type"]
        if not isinstance(type_url, str):
            raise TypeError("Any: '@type' must be a string")
        found = message_type(type_url.rpartition("/")[2])
        if found is None:
            raise ValueError(f"Any: no imported message type for {type_url!r}")
        rest = {key: value for key, value in data.items() if key != "@type"}
        inner = found.from_dict(rest, ignore_unknown_fields=ignore_unknown_fields)
        return cls(type_url=type_url, value=inner.to_bytes())


describe_message(Empty, "google.protobuf.Empty")
describe_message(
    Any,
    "google.protobuf.Any",
    Field(1, "type_url", STRING, json_name="typeUrl"),
    Field(2, "value", BYTES),
)
