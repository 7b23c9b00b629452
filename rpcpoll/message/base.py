"""The `Message` base class, field tables, and the checks behind every generated message.

A module written by `rpcpoll gen` defines one `msgspec.Struct` subclass of `Message` per proto
message, then registers each with `describe_message()` and a field table. msgspec does the wire
work (MessagePack, validated on decode); this module adds what protobuf users expect on top:

- `to_bytes()` refuses a value the wire cannot carry, naming the field, before anything is
  written. Generated classes override `_check()` with straight-line code for the common case
  (exact types, in range) and call `check_fields()` here for everything else.
- `from_bytes()` raises `DecodeError`, and nothing else, naming the field path.
- `to_dict()` / `from_dict()` are protobuf's proto3 JSON mapping, driven by the field table.
"""

from __future__ import annotations

import enum
import re
import typing as t
from collections.abc import Callable, Iterable, Mapping
from typing import ClassVar, TypeVar

import msgspec

from .kinds import EnumKind, Kind, UnknownEnumName, check_float32, describe
from .wire import DecodeError, drop_unknown, encode, encode_into

__all__ = [
    "Buffer",
    "Field",
    "Message",
    "MessageKind",
    "check_fields",
    "check_float32_field",
    "check_oneof",
    "describe_enum",
    "describe_message",
    "kind_of",
    "message_type",
    "post_init",
    "type_name",
]

M = TypeVar("M", bound="Message")

#: What `Message.from_bytes` accepts; any bytes-like object works, none is copied first.
Buffer = bytes | bytearray | memoryview


# ---------------------------------------------------------------------------------------------
# Field tables


class Field:
    """One field of a generated message, as registered by `describe_message()`.

    `kind` is a kind object (`INT32`, `TIMESTAMP`, ...), a generated message class or a
    generated enum class. A map field has a `key` kind; a repeated field has `repeated=True`.
    `optional=True` marks explicit presence (None means not set); `required=True` a proto2
    required field; every other field has implicit presence and is left out of JSON (and of
    the wire) at `default`.
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
        "wire_key",
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
        self.wire_key = str(number)
        self.name = name
        self.kind = kind_of(kind)
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


class MessageInfo:
    """A registered message class: its proto name and field table, indexed."""

    __slots__ = (
        "by_json_name",
        "by_wire_key",
        "defaults",
        "fields",
        "full_name",
        "oneofs",
        "required",
    )

    def __init__(self, full_name: str, fields: tuple[Field, ...], cls: type[Message]) -> None:
        self.full_name = full_name
        self.fields = fields
        # The default objects of implicit-presence fields: msgspec leaves a field out only
        # when it holds that very object (see rpcpoll.message.wire).
        struct_defaults = {info.name: info.default for info in msgspec.structs.fields(cls)}
        self.defaults = {
            field.name: struct_defaults[field.name]
            for field in fields
            if not (field.optional or field.required or field.repeated or field.key is not None)
            and struct_defaults.get(field.name, msgspec.NODEFAULT) is not msgspec.NODEFAULT
        }
        self.by_wire_key = {field.wire_key: field for field in fields}
        self.by_json_name: dict[str, Field] = {}
        for field in fields:
            self.by_json_name[field.proto_name] = field
        for field in fields:
            self.by_json_name[field.json_name] = field
        self.oneofs: dict[str, tuple[str, ...]] = {}
        for field in fields:
            if field.oneof is not None:
                self.oneofs[field.oneof] = (*self.oneofs.get(field.oneof, ()), field.name)
        self.required = tuple(field.name for field in fields if field.required)


_MESSAGES: dict[str, type[Message]] = {}
_KINDS: dict[type, Kind] = {}  # kinds of generated message and enum classes


def describe_message(cls: type[Message], full_name: str, *fields: Field) -> None:
    """Register a generated message class with its proto full name and field table.

    Called once per class at the end of its module, when every class it refers to exists.
    """
    cls.__rpcpoll_info__ = MessageInfo(full_name, fields, cls)
    decode = msgspec.msgpack.Decoder(cls).decode
    cls.__rpcpoll_decode__ = decode
    # A plain function in a staticmethod, with its decoder bound as a default: the hot path of
    # every server and client, so it costs one Python call around msgspec and no more.
    cls.from_bytes = staticmethod(_decoder_function(cls, decode))  # type: ignore[assignment]
    _MESSAGES[full_name] = cls


def describe_enum(
    cls: type[enum.IntEnum], full_name: str, renamed: Mapping[str, str] | None = None
) -> None:
    """Register a generated enum. `renamed` maps escaped Python member names to proto names."""
    _KINDS[cls] = EnumKind(cls, full_name, renamed)


def _decoder_function(cls: type[M], decode: Callable[[Buffer], M]) -> Callable[[Buffer], M]:
    """`cls.from_bytes`: msgspec's decoder for `cls`, raising DecodeError only."""

    def from_bytes(
        data: Buffer,
        _decode: Callable[[Buffer], M] = decode,
        _ValidationError: type[Exception] = msgspec.ValidationError,
    ) -> M:
        try:
            return _decode(data)
        except _ValidationError as exc:
            raise _translate(cls, str(exc)) from None
        except msgspec.DecodeError as exc:
            if isinstance(data, (bytes, bytearray, memoryview)) and not len(data):
                # protobuf's convention: no bytes at all is the default message
                return from_bytes(b"\x80")
            raise DecodeError(f"{cls.__qualname__}: not valid MessagePack ({exc})") from None
        except RecursionError:
            raise DecodeError(f"{cls.__qualname__}: message nests too deeply") from None
        except TypeError as exc:  # not a buffer at all
            raise DecodeError(f"{cls.__qualname__}: cannot decode {describe(data)}") from exc

    from_bytes.__qualname__ = f"{cls.__qualname__}.from_bytes"
    from_bytes.__doc__ = Message.from_bytes.__doc__
    return from_bytes


def message_type(full_name: str) -> type[Message] | None:
    """The imported message class for a proto full name such as "echo.EchoRequest", if any."""
    return _MESSAGES.get(full_name)


def type_name(message: Message | type[Message]) -> str:
    """The proto full name of a generated message or message class, e.g. "echo.EchoRequest"."""
    cls = message if isinstance(message, type) else type(message)
    return cls.__rpcpoll_info__.full_name


def kind_of(spec: Kind | type) -> Kind:
    """The Kind for a kind object, a generated message class or a generated enum class."""
    if isinstance(spec, Kind):
        return spec
    found = _KINDS.get(spec)
    if found is None:
        if isinstance(spec, type) and issubclass(spec, Message):
            found = MessageKind(spec)
        elif isinstance(spec, type) and issubclass(spec, enum.IntEnum):
            found = EnumKind(spec, spec.__qualname__)  # describe_enum() replaces it
        else:
            raise TypeError(f"not a field kind: {spec!r}")
        _KINDS[spec] = found
    return found


# ---------------------------------------------------------------------------------------------
# The base class


class Message(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """Base of every generated message class (a `msgspec.Struct`).

    Subclasses have a keyword-only constructor with proto defaults, compare by value, are
    mutable and unhashable, and pickle and copy. Values are checked when the message is
    encoded, not when they are assigned.
    """

    __rpcpoll_info__: ClassVar[MessageInfo]
    #: msgspec's bare decoder for the class: what `from_bytes` wraps. It raises msgspec's
    #: errors and refuses an empty buffer; a caller that uses it for speed (the server) goes
    #: through `from_bytes` again when it fails, for the right result or the right error.
    __rpcpoll_decode__: ClassVar[Callable[[Buffer], t.Any]]

    def _check(self) -> None:
        """Raise TypeError or ValueError naming the first field whose value the wire cannot
        carry. Generated classes override it; it may replace a value by its plain
        equivalent (a str subclass by a str, a tuple stays)."""
        check_fields(self)

    def to_bytes(self) -> bytes:
        """Encode to MessagePack. Raises TypeError or ValueError naming the offending field."""
        self._check()
        try:
            return encode(self)
        except (TypeError, ValueError, OverflowError) as exc:  # a value changed under _check
            raise _encode_error(self, exc) from None

    def encode_into(self, buffer: bytearray, offset: int = 0) -> None:
        """Encode into `buffer` at `offset` (-1: at its end), as `msgspec` does: the buffer is
        resized to end with the message. Raises like `to_bytes`."""
        self._check()
        try:
            encode_into(self, buffer, offset)
        except (TypeError, ValueError, OverflowError) as exc:
            raise _encode_error(self, exc) from None

    @classmethod
    def from_bytes(cls: type[M], data: Buffer) -> M:
        """Decode from MessagePack (any bytes-like object, not copied first).

        Unknown field numbers are ignored; an empty buffer is the message with all defaults.
        Raises DecodeError, and nothing else, on malformed input.
        """
        # describe_message() replaces this with a function bound to the class's decoder.
        message: M = _decoder_function(cls, msgspec.msgpack.Decoder(cls).decode)(data)
        return message

    def to_dict(self) -> t.Any:
        """protobuf's canonical proto3 JSON form, as `json_format.MessageToDict` gives it.

        A dict for ordinary messages; well-known types give their special forms ("1.5s" for a
        Duration, a bare value for a wrapper, ...).
        """
        return _to_dict(self)

    @classmethod
    def from_dict(cls: type[M], data: t.Any, *, ignore_unknown_fields: bool = False) -> M:
        """Build a message from its JSON form, as `json_format.ParseDict` does; accepts JSON
        names and proto field names.

        Raises ValueError or TypeError naming the field on bad input, and ValueError on an
        unknown field unless `ignore_unknown_fields`.
        """
        return _from_dict(cls, data, ignore_unknown_fields)

    def to_json(self) -> bytes:
        """`to_dict()` as compact UTF-8 JSON."""
        return msgspec.json.encode(self.to_dict())

    @classmethod
    def from_json(cls: type[M], data: Buffer | str, *, ignore_unknown_fields: bool = False) -> M:
        """Parse JSON text (`from_dict` of what it holds). Raises ValueError on bad JSON."""
        try:
            decoded = msgspec.json.decode(data)
        except msgspec.DecodeError as exc:
            raise ValueError(f"{cls.__qualname__}: not valid JSON ({exc})") from None
        return cls.from_dict(decoded, ignore_unknown_fields=ignore_unknown_fields)


class MessageKind(Kind):
    """A field whose type is a generated message class."""

    __slots__ = ("cls",)

    def __init__(self, cls: type[Message]) -> None:
        super().__init__(cls.__qualname__)
        self.cls = cls

    def check(self, value: t.Any, where: str) -> t.Any:
        if not isinstance(value, self.cls):
            raise TypeError(f"{where}: expected {self.cls.__qualname__}, got {describe(value)}")
        value._check()
        return value

    def to_json(self, value: t.Any) -> t.Any:
        return value.to_dict()

    def from_json(self, value: t.Any, where: str, *, ignore_unknown_fields: bool = False) -> t.Any:
        if not isinstance(value, Mapping):
            raise TypeError(f"{where}: expected an object, got {describe(value)}")
        return self.cls.from_dict(value, ignore_unknown_fields=ignore_unknown_fields)


# ---------------------------------------------------------------------------------------------
# Checks


def check_fields(message: Message, names: Iterable[str] | None = None) -> None:
    """The reference check of `message` (or of the fields `names`), deep.

    Raises TypeError or ValueError naming the first bad field; stores back the plain value
    for a value of a subclass or an iterable that the wire cannot carry as is.
    """
    info = type(message).__rpcpoll_info__
    owner = type(message).__qualname__
    wanted = None if names is None else set(names)
    defaults = info.defaults
    for field in info.fields:
        if wanted is not None and field.name not in wanted:
            continue
        value = getattr(message, field.name)
        where = f"{owner}.{field.name}"
        checked = _check_value(field, value, where)
        if field.name in defaults:
            # At its default, an implicit-presence field must hold the default object itself
            # to be left off the wire (a 0.0 or an int 0 for a double, a plain 0 for an enum).
            default = defaults[field.name]
            if checked is not default and field.kind.is_default(checked, default):
                checked = default
        if checked is not value:
            setattr(message, field.name, checked)
    for oneof, members in info.oneofs.items():
        check_oneof(message, oneof, members)


def _check_value(field: Field, value: t.Any, where: str) -> t.Any:
    kind = field.kind
    if field.key is not None:
        if not isinstance(value, Mapping):
            raise TypeError(f"{where}: expected a dict, got {describe(value)}")
        key_kind, result, changed = field.key, {}, value.__class__ is not dict
        for k, v in value.items():
            checked_key = key_kind.check(k, f"{where} key")
            checked = kind.check(v, f"{where}[{k!r}]")
            changed = changed or checked_key is not k or checked is not v
            result[checked_key] = checked
        return result if changed else value
    if field.repeated:
        if value.__class__ is list or value.__class__ is tuple:
            items = value
        elif isinstance(value, (str, bytes, bytearray, memoryview, Mapping)) or not isinstance(
            value, Iterable
        ):
            raise TypeError(f"{where}: expected a list, got {describe(value)}")
        else:
            items = list(value)
        checked_items = [kind.check(item, f"{where}[{i}]") for i, item in enumerate(items)]
        if items is value and all(a is b for a, b in zip(checked_items, items, strict=True)):
            return value
        return checked_items
    if value is None:
        if field.required:
            raise ValueError(f"{where}: required field is not set")
        if field.optional:
            return None
    return kind.check(value, where)


def check_oneof(message: Message, oneof: str, members: tuple[str, ...]) -> None:
    """Raise ValueError if more than one member of the oneof is set."""
    chosen = [name for name in members if getattr(message, name) is not None]
    if len(chosen) > 1:
        where = f"{type(message).__qualname__}.{oneof}"
        raise ValueError(f"{where}: oneof has more than one member set ({', '.join(chosen)})")


def post_init(message: Message, names: tuple[str, ...]) -> None:
    """What generated `__post_init__` leaves to the runtime, for the fields `names`; it runs
    after construction and after every decode.

    A closed enum drops numbers it does not define (protobuf: the field is not set, a
    repeated field loses the item, a map the entry); Struct, Value and ListValue values
    become plain JSON data with float numbers; Durations and float (32-bit) containers are
    range-checked. Raises TypeError or ValueError naming the field.
    """
    info = type(message).__rpcpoll_info__
    owner = type(message).__qualname__
    for field in info.fields:
        if field.name not in names:
            continue
        value = getattr(message, field.name)
        if value is None:
            continue
        where = f"{owner}.{field.name}"
        kind = field.kind
        fixed = value
        if isinstance(kind, EnumKind):
            fixed = drop_unknown(value) if (field.repeated or field.key) else _known(value)
        elif hasattr(kind, "normalise") or kind.name == "google.protobuf.Duration":
            fix = getattr(kind, "normalise", kind.check)
            if field.key is not None and value.__class__ is dict:
                fixed = {k: fix(v, f"{where}[{k!r}]") for k, v in value.items()}
            elif field.repeated and value.__class__ is list:
                fixed = [fix(v, f"{where}[{i}]") for i, v in enumerate(value)]
            elif not field.repeated and field.key is None:
                fixed = fix(value, where)
        elif field.repeated and value.__class__ is list:  # float (32-bit) items
            for i, item in enumerate(value):
                check_float32_field(item, f"{where}[{i}]")
        elif field.key is not None and value.__class__ is dict:
            for k, item in value.items():
                check_float32_field(item, f"{where}[{k!r}]")
        if fixed is not value:
            setattr(message, field.name, fixed)


def _known(value: t.Any) -> t.Any:
    """A single closed-enum value, or None for a number the enum does not define."""
    return None if isinstance(value, enum.Enum) and value._name_ is None else value


def check_float32_field(value: t.Any, where: str) -> None:
    """The decode-side float32 range check of generated `__post_init__` (floats only)."""
    if value.__class__ is float:
        check_float32(value, where)


def _encode_error(message: Message, exc: Exception) -> Exception:
    if isinstance(exc, UnicodeEncodeError):
        return ValueError(f"{type(message).__qualname__}: a string is not valid UTF-8 ({exc})")
    return type(exc)(f"{type(message).__qualname__}: cannot encode ({exc})")


# ---------------------------------------------------------------------------------------------
# Decode errors: msgspec's paths are wire keys ("$.6[2].1"); users want field names.

_PATH_STEP = re.compile(r"\.([^.\[]+)|\[([^\]]*)\]")
_MISSING = re.compile(r"Object missing required field `([^`]*)`")


def _translate(cls: type[Message], text: str) -> DecodeError:
    """A DecodeError for msgspec's ValidationError `text`, with field names in the path."""
    reason, _, path = text.rpartition(" - at ")
    if not reason:
        reason, path = text, "`$`"
    is_key = path.startswith("`key` in ")
    path = path.removeprefix("`key` in ").strip("`")
    where, owner = _walk(cls, path.removeprefix("$"))
    if is_key:
        where += " key"
    missing = _MISSING.fullmatch(reason)
    if missing is not None and owner is not None:
        field = owner.__rpcpoll_info__.by_wire_key.get(missing.group(1))
        name = field.name if field is not None else f"#{missing.group(1)}"
        return DecodeError(f"{where}.{name}: required field is missing")
    if owner is not None and reason.startswith(owner.__qualname__ + "."):
        # Raised by the generated __post_init__, which names "Class.field" itself.
        return DecodeError(where + reason[len(owner.__qualname__) :])
    return DecodeError(f"{where}: {reason}")


def _walk(cls: type[Message], path: str) -> tuple[str, type[Message] | None]:
    """Field names for a msgspec path below `cls`, and the message class it ends in."""
    where = cls.__qualname__
    current: type[Message] | None = cls
    field: Field | None = None
    for key, index in _PATH_STEP.findall(path):
        if key:
            field = None
            if current is not None and hasattr(current, "__rpcpoll_info__"):
                field = current.__rpcpoll_info__.by_wire_key.get(key)
            where += f".{field.name}" if field is not None else f".#{key}"
            current = _message_class(field) if field is not None else None
            if field is not None and (field.repeated or field.key is not None):
                current = None  # an item is a message only after the index
        else:
            where += f"[{index}]"
            current = _message_class(field) if field is not None else None
    return where, current


def _message_class(field: Field) -> type[Message] | None:
    kind = field.kind
    return kind.cls if isinstance(kind, MessageKind) else None


# ---------------------------------------------------------------------------------------------
# proto3 JSON


def _to_dict(message: Message) -> dict[str, t.Any]:
    result: dict[str, t.Any] = {}
    for field in type(message).__rpcpoll_info__.fields:
        value = getattr(message, field.name)
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


def _from_dict(cls: type[M], data: t.Any, ignore_unknown: bool) -> M:
    if not isinstance(data, Mapping):
        raise TypeError(f"{cls.__qualname__}: expected a dict, got {describe(data)}")
    info = cls.__rpcpoll_info__
    values: dict[str, t.Any] = {}
    oneofs: dict[str, str] = {}
    for json_key, raw in data.items():
        field = info.by_json_name.get(json_key)
        if field is None:
            if ignore_unknown:
                continue
            raise ValueError(f"{cls.__qualname__}: no field named {json_key!r}")
        if field.name in values:
            raise ValueError(f"{cls.__qualname__}: field {json_key!r} is given twice")
        where = f"{cls.__qualname__}.{field.name}"
        if raw is None and not _takes_null(field):
            continue  # JSON null means "not set"
        if field.oneof is not None:
            if field.oneof in oneofs:
                raise ValueError(
                    f"{cls.__qualname__}.{field.oneof}: oneof has more than one member set "
                    f"({oneofs[field.oneof]}, {field.name})"
                )
            oneofs[field.oneof] = field.name
        try:
            values[field.name] = _field_from_json(field, raw, where, ignore_unknown)
        except UnknownEnumName:
            if not ignore_unknown:
                raise
    for name in info.required:
        values.setdefault(name, None)  # as ParseDict: parsed, but not set
    return cls(**values)


def _takes_null(field: Field) -> bool:
    """Whether JSON null is a value of the field (google.protobuf.Value and NullValue)."""
    kind = field.kind
    if isinstance(kind, EnumKind):
        return kind.null
    return kind.name == "google.protobuf.Value" and not field.repeated and field.key is None


def _field_from_json(field: Field, raw: t.Any, where: str, ignore_unknown: bool) -> t.Any:
    kind = field.kind

    def one(value: t.Any, at: str) -> t.Any:
        if isinstance(kind, MessageKind):
            return kind.from_json(value, at, ignore_unknown_fields=ignore_unknown)
        return kind.from_json(value, at)

    if field.key is not None:
        if not isinstance(raw, Mapping):
            raise TypeError(f"{where}: expected an object, got {describe(raw)}")
        result: dict[t.Any, t.Any] = {}
        for k, v in raw.items():
            at = f"{where}[{k!r}]"
            try:
                result[field.key.from_json_key(k, at)] = one(v, at)
            except UnknownEnumName:
                if not ignore_unknown:
                    raise
        return result
    if field.repeated:
        if not isinstance(raw, (list, tuple)):
            raise TypeError(f"{where}: expected a list, got {describe(raw)}")
        items = []
        for i, item in enumerate(raw):
            at = f"{where}[{i}]"
            if item is None and kind.name != "google.protobuf.Value":
                raise ValueError(f"{at}: null is not allowed in a repeated field")
            try:
                items.append(one(item, at))
            except UnknownEnumName:
                if not ignore_unknown:
                    raise
        return items
    return one(raw, where)
