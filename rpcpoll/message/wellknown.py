"""protobuf's well-known types, in both of their Python forms.

As a *field* of a generated message, a well-known type takes its native Python form: Timestamp
an aware `datetime`, Duration a `timedelta`, the wrappers an optional scalar, Struct a `dict`,
Value any JSON value, ListValue a `list`, FieldMask a `list[str]`. The kinds below (TIMESTAMP,
DURATION, ...) check those values and give their JSON forms.

As a *message* (the request or response of an rpc, the content of an `Any`, or what compiling
`google/protobuf/*.proto` gives), each is one of the classes below, with the fields of its
.proto and the special JSON form of the proto3 mapping (`Duration(seconds=1, nanos=5*10**8)`
.to_dict() is "1.5s"). They are registered at import, so an `Any` can always hold them.
"""

from __future__ import annotations

import datetime
import math
import re
import typing as t
from collections.abc import Mapping

from .base import Field as F
from .base import (
    Message,
    check_oneof,
    describe_enum,
    describe_message,
    message_type,
    type_name,
)
from .kinds import (
    BOOL,
    BYTES,
    DOUBLE,
    FLOAT,
    INT32,
    INT64,
    STRING,
    UINT32,
    UINT64,
    Kind,
    describe,
)
from .wire import Enum, Float32, Int32, Int64, UInt32, UInt64, field

__all__ = [
    "DURATION",
    "FIELD_MASK",
    "LIST_VALUE",
    "STRUCT",
    "TIMESTAMP",
    "VALUE",
    "Any",
    "BoolValue",
    "BytesValue",
    "DoubleValue",
    "Duration",
    "Empty",
    "FieldMask",
    "FloatValue",
    "Int32Value",
    "Int64Value",
    "ListValue",
    "NullValue",
    "StringValue",
    "Struct",
    "Timestamp",
    "UInt32Value",
    "UInt64Value",
    "Value",
]

_MAX_DURATION_SECONDS = 315_576_000_000  # protobuf's limit: +-10,000 years
_MAX_DURATION = datetime.timedelta(seconds=_MAX_DURATION_SECONDS, microseconds=999_999)
_UTC = datetime.timezone.utc
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=_UTC)
_TIMESTAMP_MIN, _TIMESTAMP_MAX = -62_135_596_800, 253_402_300_799  # 0001-01-01, 9999-12-31


# ---------------------------------------------------------------------------------------------
# JSON text forms shared by the field kinds and the message classes


def _fraction(nanos: int) -> str:
    """protobuf's fractional seconds: none, or 3, 6 or 9 digits."""
    if nanos == 0:
        return ""
    if nanos % 1_000_000 == 0:
        return f".{nanos // 1_000_000:03d}"
    if nanos % 1_000 == 0:
        return f".{nanos // 1_000:06d}"
    return f".{nanos:09d}"


def duration_text(seconds: int, nanos: int) -> str:
    """A Duration's JSON string, e.g. "-1.500s"."""
    sign = "-" if seconds < 0 or nanos < 0 else ""
    return f"{sign}{abs(seconds)}{_fraction(abs(nanos))}s"


def parse_duration(value: t.Any, where: str) -> tuple[int, int]:
    """(seconds, nanos) of a Duration's JSON string."""
    if not isinstance(value, str):
        raise TypeError(f"{where}: expected a duration string, got {describe(value)}")
    match = re.fullmatch(r"(-)?(\d+)(?:\.(\d{1,9}))?s", value)
    if match is None:
        raise ValueError(f"{where}: {value!r} is not a duration like '1.5s'")
    negative, whole, fraction = match.groups()
    seconds, nanos = int(whole), int((fraction or "").ljust(9, "0"))
    if seconds > _MAX_DURATION_SECONDS:
        raise ValueError(f"{where}: {value!r} is out of range for Duration")
    return (-seconds, -nanos) if negative else (seconds, nanos)


def timestamp_text(seconds: int, nanos: int) -> str:
    """A Timestamp's JSON string (RFC 3339 in UTC), e.g. "1970-01-01T00:00:01.5Z"."""
    when = _EPOCH + datetime.timedelta(seconds=seconds)
    # Not strftime: it does not zero-pad years below 1000 on every platform.
    return (
        f"{when.year:04d}-{when.month:02d}-{when.day:02d}"
        f"T{when.hour:02d}:{when.minute:02d}:{when.second:02d}{_fraction(nanos)}Z"
    )


_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})"
)


def parse_timestamp(value: t.Any, where: str) -> tuple[int, int]:
    """(seconds since the epoch, nanos) of a Timestamp's JSON string."""
    if not isinstance(value, str):
        raise TypeError(f"{where}: expected an RFC 3339 string, got {describe(value)}")
    match = _RFC3339.fullmatch(value)
    if match is None:
        raise ValueError(f"{where}: {value!r} is not an RFC 3339 timestamp")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    if offset in ("Z", "z"):
        delta = datetime.timedelta(0)
    else:
        sign = -1 if offset[0] == "-" else 1
        delta = sign * datetime.timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6]))
    try:
        naive = datetime.datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second)
        )
    except ValueError:
        raise ValueError(f"{where}: {value!r} is not a valid timestamp") from None
    seconds = (naive - _EPOCH.replace(tzinfo=None) - delta) // datetime.timedelta(seconds=1)
    if not _TIMESTAMP_MIN <= seconds <= _TIMESTAMP_MAX:
        raise ValueError(f"{where}: {value!r} is out of range for Timestamp")
    return seconds, int((fraction or ".")[1:].ljust(9, "0"))


def _timedelta_parts(value: datetime.timedelta) -> tuple[int, int]:
    micros = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    seconds = abs(micros) // 1_000_000 * (1 if micros >= 0 else -1)  # toward zero
    return seconds, (micros - seconds * 1_000_000) * 1_000


def _field_mask_text(paths: t.Iterable[str]) -> str:
    return ",".join(_camel_case(path) for path in paths)


def _camel_case(path: str) -> str:
    """A FieldMask path in JSON, as protobuf writes it: no upper-case letter, and each "_"
    followed by a lower-case one (str.isupper / str.islower, as protobuf tests them)."""
    result, after_underscore = [], False
    for c in path:
        if c.isupper() or (after_underscore and not c.islower()):
            break
        if after_underscore:
            result.append(c.upper())
            after_underscore = False
        elif c == "_":
            after_underscore = True
        else:
            result.append(c)
    else:
        if not after_underscore:
            return "".join(result)
    raise ValueError(f"FieldMask path {path!r} has no JSON form (must be lower snake_case)")


def _field_mask_paths(value: t.Any, where: str) -> list[str]:
    if not isinstance(value, str):
        raise TypeError(f"{where}: expected a comma-separated string, got {describe(value)}")
    paths = []
    for path in value.split(",") if value else []:
        if "_" in path:
            raise ValueError(f"{where}: JSON FieldMask path {path!r} must be camelCase")
        paths.append("".join("_" + c.lower() if c.isupper() else c for c in path))
    return paths


# ---------------------------------------------------------------------------------------------
# Field kinds: the native forms


class TimestampKind(Kind):
    __slots__ = ()

    def check(self, value: t.Any, where: str) -> datetime.datetime:
        if not isinstance(value, datetime.datetime):
            raise TypeError(f"{where}: expected datetime, got {describe(value)}")
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"{where}: naive datetime; use a timezone-aware datetime")
        if value.__class__ is not datetime.datetime:  # the wire knows datetime itself only
            return datetime.datetime.fromtimestamp(value.timestamp(), value.tzinfo)
        checked: datetime.datetime = value
        return checked

    def to_json(self, value: t.Any) -> str:
        seconds, nanos = _timedelta_parts(value - _EPOCH)
        if nanos < 0:
            seconds, nanos = seconds - 1, nanos + 1_000_000_000
        return timestamp_text(seconds, nanos)

    def from_json(self, value: t.Any, where: str) -> datetime.datetime:
        seconds, nanos = parse_timestamp(value, where)
        # nanoseconds are truncated to what a datetime holds
        return _EPOCH + datetime.timedelta(seconds=seconds, microseconds=nanos // 1000)


class DurationKind(Kind):
    __slots__ = ()

    def check(self, value: t.Any, where: str) -> datetime.timedelta:
        if not isinstance(value, datetime.timedelta):
            raise TypeError(f"{where}: expected timedelta, got {describe(value)}")
        if not -_MAX_DURATION <= value <= _MAX_DURATION:
            raise ValueError(f"{where}: {value} is out of range for Duration")
        if value.__class__ is not datetime.timedelta:
            return datetime.timedelta(value.days, value.seconds, value.microseconds)
        checked: datetime.timedelta = value
        return checked

    def to_json(self, value: t.Any) -> str:
        return duration_text(*_timedelta_parts(value))

    def from_json(self, value: t.Any, where: str) -> datetime.timedelta:
        seconds, nanos = parse_duration(value, where)
        micros = abs(nanos) // 1000 * (1 if nanos >= 0 else -1)  # nanoseconds are truncated
        return datetime.timedelta(seconds=seconds, microseconds=micros)


def _json_value(value: t.Any, where: str, *, normalise: bool) -> t.Any:
    """Check a Struct/Value/ListValue value; with `normalise`, return a copy in which every
    number is a float (as in protobuf) and every array a list."""
    cls = value.__class__
    if value is None or cls is bool or cls is str or cls is float:
        return value
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (int, float)):
        try:
            number = float(value)
        except OverflowError:
            raise ValueError(f"{where}: {value} is too large for a JSON number") from None
        return number if normalise or cls is not int else value
    if isinstance(value, Mapping):
        return _json_object(value, where, normalise=normalise)
    if isinstance(value, (list, tuple)):
        items = [
            _json_value(item, f"{where}[{i}]", normalise=normalise) for i, item in enumerate(value)
        ]
        return items if normalise or cls is not list else value
    raise TypeError(f"{where}: {describe(value)} is not a JSON value")


def _json_object(value: t.Any, where: str, *, normalise: bool) -> t.Any:
    if not isinstance(value, Mapping):
        raise TypeError(f"{where}: expected a dict, got {describe(value)}")
    result = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise TypeError(f"{where}: keys must be str, got {describe(key)}")
        result[str(key)] = _json_value(item, f"{where}[{key!r}]", normalise=normalise)
    return result if normalise or value.__class__ is not dict else value


def _json_out(value: t.Any) -> t.Any:
    if value.__class__ is float and not math.isfinite(value):
        raise ValueError("a Struct or Value number cannot be NaN or Infinity in JSON")
    if isinstance(value, dict):
        return {key: _json_out(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_out(item) for item in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


class ValueKind(Kind):
    """google.protobuf.Value (any JSON value), Struct (an object) or ListValue (an array).

    `check` accepts ints (the wire carries them as ints); `normalise`, which the generated
    `__post_init__` applies on construction and decode, turns every number into a float.
    """

    __slots__ = ("shape",)

    def __init__(self, name: str, shape: type | None) -> None:
        super().__init__(name)
        self.shape = shape

    def _walk(self, value: t.Any, where: str, normalise: bool) -> t.Any:
        if self.shape is dict:
            return _json_object(value, where, normalise=normalise)
        if self.shape is list and not isinstance(value, (list, tuple)):
            raise TypeError(f"{where}: expected a list, got {describe(value)}")
        return _json_value(value, where, normalise=normalise)

    def check(self, value: t.Any, where: str) -> t.Any:
        return self._walk(value, where, False)

    def normalise(self, value: t.Any, where: str) -> t.Any:
        return self._walk(value, where, True)

    def to_json(self, value: t.Any) -> t.Any:
        return _json_out(value)

    def from_json(self, value: t.Any, where: str) -> t.Any:
        return self.normalise(value, where)


class FieldMaskKind(Kind):
    __slots__ = ()

    def check(self, value: t.Any, where: str) -> t.Any:
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{where}: expected a list of paths, got {describe(value)}")
        for i, path in enumerate(value):
            STRING.check(path, f"{where}[{i}]")
        return value

    def to_json(self, value: t.Any) -> str:
        return _field_mask_text(value)

    def from_json(self, value: t.Any, where: str) -> list[str]:
        return _field_mask_paths(value, where)


TIMESTAMP = TimestampKind("google.protobuf.Timestamp")
DURATION = DurationKind("google.protobuf.Duration")
STRUCT = ValueKind("google.protobuf.Struct", dict)
VALUE = ValueKind("google.protobuf.Value", None)
LIST_VALUE = ValueKind("google.protobuf.ListValue", list)
FIELD_MASK = FieldMaskKind("google.protobuf.FieldMask")


# ---------------------------------------------------------------------------------------------
# Message classes


class NullValue(Enum):
    """`google.protobuf.NullValue`: its one value maps to JSON null."""

    NULL_VALUE = 0


describe_enum(NullValue, "google.protobuf.NullValue")


class Empty(Message, kw_only=True):
    """`google.protobuf.Empty`: a message with no fields."""


class Duration(Message, kw_only=True):
    """`google.protobuf.Duration`: a signed span of time, JSON "1.5s"."""

    seconds: Int64 = field(name="1", default=0)
    nanos: Int32 = field(name="2", default=0)

    @classmethod
    def from_timedelta(cls, value: datetime.timedelta) -> Duration:
        seconds, nanos = _timedelta_parts(DURATION.check(value, "Duration"))
        return cls(seconds=seconds, nanos=nanos)

    def to_timedelta(self) -> datetime.timedelta:
        """The duration, truncated to microseconds."""
        micros = abs(self.nanos) // 1000 * (1 if self.nanos >= 0 else -1)
        return datetime.timedelta(seconds=self.seconds, microseconds=micros)

    def to_dict(self) -> t.Any:
        seconds, nanos = self.seconds, self.nanos
        if (
            abs(seconds) > _MAX_DURATION_SECONDS
            or abs(nanos) > 999_999_999
            or (seconds > 0 > nanos)
            or (seconds < 0 < nanos)
        ):
            raise ValueError(f"Duration: {seconds}s {nanos}ns is not a valid duration")
        return duration_text(seconds, nanos)

    @classmethod
    def from_dict(cls, data: t.Any, *, ignore_unknown_fields: bool = False) -> Duration:
        seconds, nanos = parse_duration(data, "Duration")
        return cls(seconds=seconds, nanos=nanos)


class Timestamp(Message, kw_only=True):
    """`google.protobuf.Timestamp`: a point in time, JSON "1972-01-01T10:00:20.021Z"."""

    seconds: Int64 = field(name="1", default=0)
    nanos: Int32 = field(name="2", default=0)

    @classmethod
    def from_datetime(cls, value: datetime.datetime) -> Timestamp:
        seconds, nanos = _timedelta_parts(TIMESTAMP.check(value, "Timestamp") - _EPOCH)
        if nanos < 0:
            seconds, nanos = seconds - 1, nanos + 1_000_000_000
        return cls(seconds=seconds, nanos=nanos)

    def to_datetime(self) -> datetime.datetime:
        """The time as an aware UTC datetime, truncated to microseconds."""
        return _EPOCH + datetime.timedelta(seconds=self.seconds, microseconds=self.nanos // 1000)

    def to_dict(self) -> t.Any:
        if not _TIMESTAMP_MIN <= self.seconds <= _TIMESTAMP_MAX or not (
            0 <= self.nanos <= 999_999_999
        ):
            raise ValueError(f"Timestamp: {self.seconds}s {self.nanos}ns is out of range")
        return timestamp_text(self.seconds, self.nanos)

    @classmethod
    def from_dict(cls, data: t.Any, *, ignore_unknown_fields: bool = False) -> Timestamp:
        seconds, nanos = parse_timestamp(data, "Timestamp")
        return cls(seconds=seconds, nanos=nanos)


class FieldMask(Message, kw_only=True):
    """`google.protobuf.FieldMask`: a set of field paths, JSON "a.b,cD"."""

    paths: list[str] = field(name="1", default_factory=list)

    def to_dict(self) -> t.Any:
        return _field_mask_text(self.paths)

    @classmethod
    def from_dict(cls, data: t.Any, *, ignore_unknown_fields: bool = False) -> FieldMask:
        return cls(paths=_field_mask_paths(data, "FieldMask"))


class _Wrapper(Message, kw_only=True):
    """A wrapper message: its JSON form is the bare value."""

    def to_dict(self) -> t.Any:
        (only,) = type(self).__rpcpoll_info__.fields
        return only.kind.to_json(getattr(self, only.name))

    @classmethod
    def from_dict(cls, data: t.Any, *, ignore_unknown_fields: bool = False) -> t.Any:
        (only,) = cls.__rpcpoll_info__.fields
        return cls(**{only.name: only.kind.from_json(data, cls.__qualname__)})


class DoubleValue(_Wrapper, kw_only=True):
    """`google.protobuf.DoubleValue`."""

    value: float = field(name="1", default=0.0)


class FloatValue(_Wrapper, kw_only=True):
    """`google.protobuf.FloatValue`."""

    value: Float32 = field(name="1", default=0.0)


class Int64Value(_Wrapper, kw_only=True):
    """`google.protobuf.Int64Value`."""

    value: Int64 = field(name="1", default=0)


class UInt64Value(_Wrapper, kw_only=True):
    """`google.protobuf.UInt64Value`."""

    value: UInt64 = field(name="1", default=0)


class Int32Value(_Wrapper, kw_only=True):
    """`google.protobuf.Int32Value`."""

    value: Int32 = field(name="1", default=0)


class UInt32Value(_Wrapper, kw_only=True):
    """`google.protobuf.UInt32Value`."""

    value: UInt32 = field(name="1", default=0)


class BoolValue(_Wrapper, kw_only=True):
    """`google.protobuf.BoolValue`."""

    value: bool = field(name="1", default=False)


class StringValue(_Wrapper, kw_only=True):
    """`google.protobuf.StringValue`."""

    value: str = field(name="1", default="")


class BytesValue(_Wrapper, kw_only=True):
    """`google.protobuf.BytesValue`."""

    value: bytes = field(name="1", default=b"")


class Struct(Message, kw_only=True):
    """`google.protobuf.Struct`: a JSON object of `Value`s. `Struct.of(dict)` builds one."""

    fields: dict[str, Value] = field(name="1", default_factory=dict)

    @classmethod
    def of(cls, data: Mapping[str, t.Any]) -> Struct:
        """The Struct message holding the JSON object `data`."""
        return cls.from_dict(STRUCT.normalise(data, "Struct"))

    def to_dict(self) -> t.Any:
        return {key: value.to_dict() for key, value in self.fields.items()}

    @classmethod
    def from_dict(cls, data: t.Any, *, ignore_unknown_fields: bool = False) -> Struct:
        if not isinstance(data, Mapping):
            raise TypeError(f"Struct: expected a dict, got {describe(data)}")
        return cls(fields={str(key): Value.from_dict(item) for key, item in data.items()})


class ListValue(Message, kw_only=True):
    """`google.protobuf.ListValue`: a JSON array of `Value`s."""

    values: list[Value] = field(name="1", default_factory=list)

    def to_dict(self) -> t.Any:
        return [value.to_dict() for value in self.values]

    @classmethod
    def from_dict(cls, data: t.Any, *, ignore_unknown_fields: bool = False) -> ListValue:
        if not isinstance(data, (list, tuple)):
            raise TypeError(f"ListValue: expected a list, got {describe(data)}")
        return cls(values=[Value.from_dict(item) for item in data])


class Value(Message, kw_only=True):
    """`google.protobuf.Value`: one JSON value; at most one member of `kind` is set."""

    null_value: NullValue | None = field(name="1", default=None)
    number_value: float | None = field(name="2", default=None)
    string_value: str | None = field(name="3", default=None)
    bool_value: bool | None = field(name="4", default=None)
    struct_value: Struct | None = field(name="5", default=None)
    list_value: ListValue | None = field(name="6", default=None)

    def __post_init__(self) -> None:
        check_oneof(self, "kind", _VALUE_MEMBERS)

    def which_kind(self) -> str | None:
        """The member of oneof kind that is set, or None."""
        for name in _VALUE_MEMBERS:
            if getattr(self, name) is not None:
                return name
        return None

    def to_dict(self) -> t.Any:
        which = self.which_kind()
        if which is None or which == "null_value":
            return None  # json_format prints a Value with no member set as null too
        value = getattr(self, which)
        if which == "number_value":
            if not math.isfinite(value):
                raise ValueError("Value: NaN and Infinity have no JSON form")
            return float(value)
        return value.to_dict() if isinstance(value, Message) else value

    @classmethod
    def from_dict(cls, data: t.Any, *, ignore_unknown_fields: bool = False) -> Value:
        if data is None:
            return cls(null_value=NullValue.NULL_VALUE)
        if isinstance(data, bool):
            return cls(bool_value=data)
        if isinstance(data, str):
            return cls(string_value=data)
        if isinstance(data, (int, float)):
            return cls(number_value=_json_value(data, "Value", normalise=True))
        if isinstance(data, Mapping):
            return cls(struct_value=Struct.from_dict(data))
        if isinstance(data, (list, tuple)):
            return cls(list_value=ListValue.from_dict(data))
        raise TypeError(f"Value: {describe(data)} is not a JSON value")


_VALUE_MEMBERS = (
    "null_value",
    "number_value",
    "string_value",
    "bool_value",
    "struct_value",
    "list_value",
)


class Any(Message, kw_only=True):
    """`google.protobuf.Any`: a message of any type, as a type URL and its encoded bytes.

    `value` holds rpcpoll's (MessagePack) encoding of the packed message. Use
    `Any.pack(message)` and `any.unpack()`. `to_dict()`/`from_dict()` need the packed type's
    module imported, except for well-known types, which are always known.
    """

    type_url: str = field(name="1", default="")
    value: bytes = field(name="2", default=b"")

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

    def unpack(self, cls: type[Message] | None = None) -> t.Any:
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

    def to_dict(self) -> t.Any:
        """`{"@type": url, ...fields}`, or `{"@type": url, "value": json}` for a well-known
        type with a special JSON form; `{}` for an empty Any."""
        if not self.type_url and not self.value:
            return {}
        inner = self.unpack().to_dict()
        if self.type_name in _SPECIAL_JSON:
            return {"@type": self.type_url, "value": inner}
        return {"@type": self.type_url, **inner}

    @classmethod
    def from_dict(cls, data: t.Any, *, ignore_unknown_fields: bool = False) -> Any:
        if not isinstance(data, Mapping):
            raise TypeError(f"Any: expected a dict, got {describe(data)}")
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
        if type_url.rpartition("/")[2] in _SPECIAL_JSON:
            if set(data) - {"@type", "value"}:
                raise ValueError(f"Any: {type_url!r} takes only '@type' and 'value'")
            inner = found.from_dict(data.get("value"))
        else:
            rest = {key: value for key, value in data.items() if key != "@type"}
            inner = found.from_dict(rest, ignore_unknown_fields=ignore_unknown_fields)
        return cls(type_url=type_url, value=inner.to_bytes())


def _scalar(kind: Kind) -> F:
    return F(1, "value", kind)


_REGISTER: list[tuple[type[Message], str, tuple[F, ...]]] = [
    (Empty, "google.protobuf.Empty", ()),
    (Duration, "google.protobuf.Duration", (F(1, "seconds", INT64), F(2, "nanos", INT32))),
    (Timestamp, "google.protobuf.Timestamp", (F(1, "seconds", INT64), F(2, "nanos", INT32))),
    (FieldMask, "google.protobuf.FieldMask", (F(1, "paths", STRING, repeated=True),)),
    (DoubleValue, "google.protobuf.DoubleValue", (_scalar(DOUBLE),)),
    (FloatValue, "google.protobuf.FloatValue", (_scalar(FLOAT),)),
    (Int64Value, "google.protobuf.Int64Value", (_scalar(INT64),)),
    (UInt64Value, "google.protobuf.UInt64Value", (_scalar(UINT64),)),
    (Int32Value, "google.protobuf.Int32Value", (_scalar(INT32),)),
    (UInt32Value, "google.protobuf.UInt32Value", (_scalar(UINT32),)),
    (BoolValue, "google.protobuf.BoolValue", (_scalar(BOOL),)),
    (StringValue, "google.protobuf.StringValue", (_scalar(STRING),)),
    (BytesValue, "google.protobuf.BytesValue", (_scalar(BYTES),)),
    (Struct, "google.protobuf.Struct", (F(1, "fields", Value, key=STRING),)),
    (ListValue, "google.protobuf.ListValue", (F(1, "values", Value, repeated=True),)),
    (
        Value,
        "google.protobuf.Value",
        (
            F(1, "null_value", NullValue, oneof="kind"),
            F(2, "number_value", DOUBLE, oneof="kind"),
            F(3, "string_value", STRING, oneof="kind"),
            F(4, "bool_value", BOOL, oneof="kind"),
            F(5, "struct_value", Struct, oneof="kind"),
            F(6, "list_value", ListValue, oneof="kind"),
        ),
    ),
    (
        Any,
        "google.protobuf.Any",
        (F(1, "type_url", STRING, json_name="typeUrl"), F(2, "value", BYTES)),
    ),
]
for _cls, _name, _fields in _REGISTER:
    describe_message(_cls, _name, *_fields)

#: Well-known types whose JSON form is not an object of their fields: inside an Any, their
#: JSON goes under "value". Any is one too (its own "@type" would clash), as in json_format.
_SPECIAL_JSON = frozenset(name for _, name, _ in _REGISTER if name != "google.protobuf.Empty")
