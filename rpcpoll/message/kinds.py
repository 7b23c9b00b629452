"""Field kinds: one object per proto type that checks a Python value and maps it to proto3 JSON.

msgspec does the wire work. A kind is what the rest needs: `check()` is the reference check
behind every generated `_check()` (the generated code inlines the common case and calls here
for anything else), and `to_json()` / `from_json()` implement protobuf's JSON mapping.
"""

from __future__ import annotations

import base64
import enum
import math
import re
import struct
import typing as t
from collections.abc import Mapping

from .wire import (
    FLOAT32_LIMIT,
    INT32_MAX,
    INT32_MIN,
    INT64_MAX,
    INT64_MIN,
    UINT32_MAX,
    UINT64_MAX,
    ClosedEnum,
)

__all__ = [
    "BOOL",
    "BYTES",
    "DOUBLE",
    "ENUM",
    "FIXED32",
    "FIXED64",
    "FLOAT",
    "INT32",
    "INT64",
    "SFIXED32",
    "SFIXED64",
    "SINT32",
    "SINT64",
    "STRING",
    "UINT32",
    "UINT64",
    "EnumKind",
    "Kind",
    "UnknownEnumName",
    "describe",
]


def describe(value: object) -> str:
    """The type name error messages use for `value`."""
    return type(value).__name__


class Kind:
    """How values of one proto type are checked and mapped to JSON.

    `check(value, where)` returns the value a message should hold (the value itself, or a
    plain `str`/`int`/`float`/`list`/`dict` for a subclass or another iterable that the wire
    cannot carry as is) and raises TypeError or ValueError whose message starts with `where`.
    """

    __slots__ = ("name", "zero")

    def __init__(self, name: str, zero: t.Any = None) -> None:
        self.name = name
        self.zero = zero

    def __repr__(self) -> str:
        return f"<rpcpoll kind {self.name}>"

    def check(self, value: t.Any, where: str) -> t.Any:
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


class IntKind(Kind):
    __slots__ = ("hi", "json_string", "lo")

    def __init__(self, name: str, lo: int, hi: int, *, json_string: bool) -> None:
        super().__init__(name, 0)
        self.lo, self.hi = lo, hi
        self.json_string = json_string

    def check(self, value: t.Any, where: str) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{where}: expected int ({self.name}), got {describe(value)}")
        if not self.lo <= value <= self.hi:
            raise ValueError(f"{where}: {value} is out of range for {self.name}")
        return value if value.__class__ is int or isinstance(value, enum.Enum) else int(value)

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
                try:
                    as_float = float(value)
                except ValueError:
                    as_float = math.nan
                if not as_float.is_integer():  # garbage, a fraction, NaN or infinity
                    raise ValueError(f"{where}: {value!r} is not an integer") from None
                number = int(as_float)
        else:
            raise TypeError(f"{where}: expected an integer, got {describe(value)}")
        if not self.lo <= number <= self.hi:
            raise ValueError(f"{where}: {number} is out of range for {self.name}")
        return number

    def json_key(self, key: t.Any) -> str:
        return str(int(key))


class FloatKind(Kind):
    __slots__ = ("single",)

    def __init__(self, name: str, *, single: bool) -> None:
        super().__init__(name, 0.0)
        self.single = single

    def check(self, value: t.Any, where: str) -> float:
        # An int is fine as it is: msgpack writes it as an int, and decoders take ints for
        # float fields.
        if isinstance(value, float):
            number = value if value.__class__ is float else float(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:
                raise ValueError(f"{where}: {value} is out of range for {self.name}") from None
            if value.__class__ is int and not self.single:
                return value
        else:
            raise TypeError(f"{where}: expected float ({self.name}), got {describe(value)}")
        if self.single:
            check_float32(number, where)
        return number

    def is_default(self, value: t.Any, default: t.Any) -> bool:
        # protobuf compares bit patterns: -0.0 is not the default, and neither is NaN.
        return bool(value == default) and math.copysign(1.0, value) == math.copysign(1.0, default)

    def to_json(self, value: t.Any) -> t.Any:
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return shortest_float32(value) if self.single else float(value)

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
            raise TypeError(f"{where}: expected a number, got {describe(value)}")
        if self.single:
            # Like protobuf, keep what a float32 keeps. FLOAT32_LIMIT rather than the exact
            # float32 maximum: protobuf prints that as 3.4028235e38 and should read it back.
            if abs(number) > FLOAT32_LIMIT:
                raise ValueError(f"{where}: {value!r} is out of range for {self.name}")
            (number,) = struct.unpack("<f", struct.pack("<f", number))
        return number


def check_float32(value: float, where: str) -> None:
    """Raise ValueError unless `value` is NaN, +-inf or a finite value a float32 can hold."""
    if math.isfinite(value) and abs(value) > FLOAT32_LIMIT:
        raise ValueError(f"{where}: {value!r} is out of range for float")


def shortest_float32(value: float) -> float:
    """The shortest decimal that reads back as the same float32 (protobuf's ToShortestFloat)."""
    (single,) = struct.unpack("<f", struct.pack("<f", value))
    for precision in range(6, 18):
        candidate = float(f"{single:.{precision}g}")
        if struct.unpack("<f", struct.pack("<f", candidate))[0] == single:
            return candidate
    return float(single)


class BoolKind(Kind):
    __slots__ = ()

    def check(self, value: t.Any, where: str) -> bool:
        if value.__class__ is not bool:
            raise TypeError(f"{where}: expected bool, got {describe(value)}")
        return bool(value)

    def from_json(self, value: t.Any, where: str) -> bool:
        if value.__class__ is not bool:
            raise TypeError(f"{where}: expected true or false, got {describe(value)}")
        return bool(value)

    def json_key(self, key: t.Any) -> str:
        return "true" if key else "false"

    def from_json_key(self, key: str, where: str) -> bool:
        if key not in ("true", "false"):
            raise ValueError(f"{where}: expected 'true' or 'false', got {key!r}")
        return key == "true"


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class StringKind(Kind):
    __slots__ = ()

    def check(self, value: t.Any, where: str) -> str:
        if not isinstance(value, str):
            raise TypeError(f"{where}: expected str, got {describe(value)}")
        if _LONE_SURROGATE.search(value):
            raise ValueError(f"{where}: the string holds an unpaired surrogate (not UTF-8)")
        return value if value.__class__ is str else str(value)

    def from_json(self, value: t.Any, where: str) -> str:
        if not isinstance(value, str):
            raise TypeError(f"{where}: expected a string, got {describe(value)}")
        if _LONE_SURROGATE.search(value):
            raise ValueError(f"{where}: string holds an unpaired surrogate")
        return value


class BytesKind(Kind):
    __slots__ = ()

    def check(self, value: t.Any, where: str) -> t.Any:
        if isinstance(value, bytes):
            return value if value.__class__ is bytes else bytes(value)
        if isinstance(value, (bytearray, memoryview)):
            return value  # the wire takes them as they are
        raise TypeError(f"{where}: expected bytes, got {describe(value)}")

    def to_json(self, value: t.Any) -> str:
        return base64.b64encode(value).decode("ascii")

    def from_json(self, value: t.Any, where: str) -> bytes:
        # protobuf accepts the standard and the URL-safe alphabet, with or without padding.
        if not isinstance(value, str):
            raise TypeError(f"{where}: expected a base64 string, got {describe(value)}")
        text = value.replace("-", "+").replace("_", "/").rstrip("=")
        try:
            return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except ValueError:
            raise ValueError(f"{where}: {value!r} is not valid base64") from None


INT32 = IntKind("int32", INT32_MIN, INT32_MAX, json_string=False)
SINT32 = IntKind("sint32", INT32_MIN, INT32_MAX, json_string=False)
SFIXED32 = IntKind("sfixed32", INT32_MIN, INT32_MAX, json_string=False)
UINT32 = IntKind("uint32", 0, UINT32_MAX, json_string=False)
FIXED32 = IntKind("fixed32", 0, UINT32_MAX, json_string=False)
INT64 = IntKind("int64", INT64_MIN, INT64_MAX, json_string=True)
SINT64 = IntKind("sint64", INT64_MIN, INT64_MAX, json_string=True)
SFIXED64 = IntKind("sfixed64", INT64_MIN, INT64_MAX, json_string=True)
UINT64 = IntKind("uint64", 0, UINT64_MAX, json_string=True)
FIXED64 = IntKind("fixed64", 0, UINT64_MAX, json_string=True)
DOUBLE = FloatKind("double", single=False)
FLOAT = FloatKind("float", single=True)
BOOL = BoolKind("bool", False)
STRING = StringKind("string", "")
BYTES = BytesKind("bytes", b"")
#: The range every enum value must be in, known to its enum or not.
ENUM = IntKind("enum", INT32_MIN, INT32_MAX, json_string=False)


# ---------------------------------------------------------------------------------------------
# Enums


class UnknownEnumName(ValueError):
    """A JSON enum name the schema does not know; skipped under ignore_unknown_fields."""


class EnumKind(Kind):
    """A generated enum (an IntEnum subclass) and its proto names (`renamed`: escaped Python
    member name -> proto name)."""

    __slots__ = ("by_name", "by_number", "closed", "cls", "full_name", "null")

    def __init__(
        self, cls: type[enum.IntEnum], full_name: str, renamed: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(cls.__qualname__, 0)
        self.cls = cls
        self.full_name = full_name
        self.null = full_name == "google.protobuf.NullValue"
        self.closed = issubclass(cls, ClosedEnum)
        proto_names = dict(renamed or {})
        self.by_number: dict[int, str] = {}
        self.by_name: dict[str, int] = {}
        for python_name, member in cls.__members__.items():
            proto_name = proto_names.get(python_name, python_name)
            self.by_number.setdefault(int(member), proto_name)  # for aliases the first wins
            self.by_name[proto_name] = int(member)

    def check(self, value: t.Any, where: str) -> t.Any:
        # Any int in range: a number this version of the schema does not know is still valid.
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{where}: expected {self.cls.__qualname__}, got {describe(value)}")
        if not INT32_MIN <= value <= INT32_MAX:
            raise ValueError(f"{where}: {value} is out of range for enum")
        if self.closed and int(value) not in self.by_number:
            raise ValueError(f"{where}: {int(value)} is not a value of the closed enum {self.name}")
        return value if isinstance(value, enum.Enum) or value.__class__ is int else int(value)

    def to_json(self, value: t.Any) -> t.Any:
        if self.null:
            return None
        return self.by_number.get(int(value), int(value))

    def from_json(self, value: t.Any, where: str) -> t.Any:
        if self.null and value is None:
            return self.cls(0)
        if isinstance(value, str):
            if value in self.by_name:
                return self.cls(self.by_name[value])
            try:
                number = int(value)
            except ValueError:
                raise UnknownEnumName(f"{where}: {value!r} is not a value of {self.name}") from None
        elif isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, float) and value.is_integer():
            number = int(value)  # as for integer fields (and ParseDict): 1.0 is 1
        else:
            raise TypeError(f"{where}: expected an enum name, got {describe(value)}")
        ENUM.check(number, where)  # range check
        member = self.cls(number)
        if member._name_ is None and self.closed:
            # protobuf's ParseDict refuses numbers a closed enum does not define.
            raise ValueError(f"{where}: {number} is not a value of the closed enum {self.name}")
        return member
