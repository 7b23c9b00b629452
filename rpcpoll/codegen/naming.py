"""Python names for proto names: escaping, snake_case, module paths, literals and docstrings.

Escaping appends underscores (`class` -> `class_`) until a name is neither a Python keyword
nor a name the generated code needs for itself; the proto name is kept in the field tables,
so JSON and error messages still use it.
"""

from __future__ import annotations

import keyword
import math
import re
import textwrap
from collections.abc import Iterable, Sequence

__all__ = [
    "MODULE_ALIASES",
    "docstring",
    "enum_member_name",
    "escape",
    "field_name",
    "import_alias",
    "isort_key",
    "json_name",
    "method_name",
    "module_parts",
    "py_literal",
    "relative_import",
    "relative_module",
    "snake_case",
    "type_name",
    "upper_snake",
]

#: Keywords and soft keywords (`type` became one in Python 3.12).
KEYWORDS = frozenset(keyword.kwlist) | frozenset(keyword.softkwlist) | {"type"}

#: Builtins that generated code refers to at module or class level.
GENERATED_BUILTINS = frozenset({"bool", "bytes", "dict", "float", "int", "list", "object", "str"})

#: Module aliases of every generated module (the import lines in templates/module.py.j2).
MODULE_ALIASES = frozenset({"_abc", "_dt", "_enum", "_msg", "_rpcpoll", "_svc", "_t"})

#: Attributes of rpcpoll.message.Message that a field must not shadow.
MESSAGE_MEMBERS = frozenset(
    {"to_bytes", "from_bytes", "to_dict", "from_dict", "_to_wire", "_from_wire"}
)

#: Attributes of the generated clients and handlers that an rpc method must not shadow.
SERVICE_MEMBERS = frozenset({"SERVICE", "channel", "close", "_call_unary", "_channel"})

#: Names an IntEnum member cannot take, or would shadow (`name`, `value`, int methods).
# Names an IntEnum member must not take: Enum's and int's public attributes. Spelled out rather
# than read from dir(enum.IntEnum), which differs between Python versions: the generated code
# must be the same whichever Python runs `rpcpoll gen` (dunders and sunders are handled apart).
_ENUM_RESERVED = frozenset(
    {
        "name", "value", "mro",
        "as_integer_ratio", "bit_count", "bit_length", "conjugate", "denominator", "from_bytes",
        "imag", "is_integer", "numerator", "real", "to_bytes",
    }
)  # fmt: skip


def escape(name: str, reserved: Iterable[str] = ()) -> str:
    """Append underscores to `name` until it is no keyword and not in `reserved`."""
    taken = set(reserved)
    while name in KEYWORDS or name in taken:
        name += "_"
    return name


def type_name(proto_name: str, taken: Iterable[str] = ()) -> str:
    """The class name of a message, enum or service-derived class."""
    return escape(proto_name, {*GENERATED_BUILTINS, *MODULE_ALIASES, *taken})


def field_name(proto_name: str, taken: Iterable[str] = ()) -> str:
    """The attribute and keyword-argument name of a field."""
    reserved = {*GENERATED_BUILTINS, *MESSAGE_MEMBERS, *taken, "self"}
    if proto_name.startswith("__"):  # dunders belong to Python, other __names get mangled
        proto_name = "f" + proto_name
    return escape(proto_name, reserved)


def enum_member_name(proto_name: str, taken: Iterable[str] = ()) -> str:
    """The member name of an enum value."""
    reserved = {*_ENUM_RESERVED, *taken}
    name = proto_name
    sunder = len(name) > 2 and name.startswith("_") and name.endswith("_")
    if sunder or name.startswith("__"):  # reserved by Enum, or name-mangled in class bodies
        name = "v" + name
    return escape(name, reserved)


def method_name(proto_name: str, taken: Iterable[str] = ()) -> str:
    """The snake_case method name of an rpc on the generated client and handler."""
    return escape(snake_case(proto_name), {*SERVICE_MEMBERS, *taken})


def snake_case(name: str) -> str:
    """`GetHTTPStatus` -> `get_http_status`; already snake_case names are kept."""
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    name = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    return name.lower()


def upper_snake(name: str) -> str:
    """`EchoService` -> `ECHO_SERVICE`."""
    return snake_case(name).upper()


#: What an `import a.b.c` path cannot hold. Soft keywords (`type`, `match`) and builtins can
#: be package names: googleapis' `google/type/money.proto` must land in `google/type/`.
HARD_KEYWORDS = frozenset(keyword.kwlist)


def module_parts(proto_name: str) -> tuple[str, ...]:
    """The dotted module path for a .proto file: `a/b-c/x.proto` -> (`a`, `b_c`, `x_rpc`)."""
    *folders, file = proto_name.split("/")
    stem = file.removesuffix(".proto")
    parts = [_identifier(folder) for folder in folders]
    return (
        *(part + "_" if part in HARD_KEYWORDS else part for part in parts),
        _identifier(stem) + "_rpc",
    )


def _identifier(part: str) -> str:
    part = re.sub(r"\W", "_", part)
    return "_" + part if not part or part[0].isdigit() else part


def relative_import(source: Sequence[str], target: Sequence[str]) -> tuple[str, str]:
    """`from X import Y` for module `target`, seen from module `source`, as (X, Y)."""
    source_package, target_package = source[:-1], target[:-1]
    common = 0
    while (
        common < min(len(source_package), len(target_package))
        and source_package[common] == target_package[common]
    ):
        common += 1
    dots = "." * (len(source_package) - common + 1)
    return dots + ".".join(target_package[common:]), target[-1]


def relative_module(source: Sequence[str], target: Sequence[str]) -> str:
    """The relative module name of `target` seen from `source`, e.g. `..common.types_rpc`."""
    package, name = relative_import(source, target)
    return f"{package}{name}" if package.endswith(".") else f"{package}.{name}"


def json_name(proto_name: str) -> str:
    """protoc's default JSON name: drop underscores, upper-case the letter after each."""
    parts = proto_name.split("_")
    return parts[0] + "".join(part[:1].upper() + part[1:] for part in parts[1:])


def import_alias(target: Sequence[str], taken: Iterable[str] = ()) -> str:
    """A module-private alias for an imported generated module: `_acme_common_types_rpc`."""
    return escape("_" + "_".join(target), taken)


def isort_key(name: str) -> tuple[int, str]:
    """The order ruff (RUF022/RUF023) wants in `__all__` and `__slots__`.

    SCREAMING_CASE first, then CamelCase, then the rest, each alphabetically.
    """
    if name.isupper() or not any(c.isalpha() for c in name):
        return (0, name)
    return (1, name) if name[:1].isupper() else (2, name)


def py_literal(value: object) -> str:
    """A Python expression for a value, with double quotes as ruff format writes them."""
    if isinstance(value, float) and not math.isfinite(value):
        return f'float("{value}")'
    if isinstance(value, (str, bytes)):
        text = repr(value)
        prefix, body = ("b", text[2:-1]) if isinstance(value, bytes) else ("", text[1:-1])
        if text.endswith("'") and '"' not in body:
            body = body.replace("\\'", "'")
            return f'{prefix}"{body}"'
        return text
    return repr(value)


#: The line length generated modules are laid out for (ruff's, in this project).
LINE_LENGTH = 100


def docstring(text: str, indent: str) -> str:
    """A triple-quoted docstring literal for `text`, body lines indented by `indent`; lines
    that would pass the line length are wrapped at spaces (a line's continuation keeps its
    indentation, four more for an indented entry such as an attribute's)."""
    text = "\n".join(line.rstrip() for line in text.strip().split("\n"))
    text = text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    if text.endswith('"'):
        text = text[:-1] + '\\"'
    lines = _wrapped(text.split("\n"), len(indent))
    if len(lines) == 1:
        return f'"""{lines[0]}"""'
    body = "\n".join(f"{indent}{line}" if line.strip() else "" for line in lines[1:])
    return f'"""{lines[0]}\n{body}\n{indent}"""'


def _wrapped(lines: list[str], indent: int) -> list[str]:
    width = LINE_LENGTH - indent
    out: list[str] = []
    for number, line in enumerate(lines):
        room = width - (3 if number == 0 else 0)  # the opening quotes
        if number == len(lines) - 1:
            room -= 3  # perhaps the closing quotes, on a one-line docstring
        if len(line) <= room or " " not in line.strip():
            out.append(line)
            continue
        lead = line[: len(line) - len(line.lstrip())]
        parts = textwrap.wrap(
            line.strip(),
            width=room,
            initial_indent=lead,
            subsequent_indent=lead + ("    " if lead else ""),
            break_long_words=False,
            break_on_hyphens=False,
        )
        out.extend(parts or [line])
    return out
