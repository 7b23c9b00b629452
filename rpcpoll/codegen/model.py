"""The model between protoc's descriptors and the templates: plain dataclasses, nothing else.

Every name, annotation and expression the templates print is computed when the model is built
(`build.py`), so templates only loop and print. Expressions refer to the value being encoded or
decoded as `v`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "EnumModel",
    "EnumValueModel",
    "FieldModel",
    "FileModel",
    "ImportModel",
    "MessageModel",
    "MethodModel",
    "OneofModel",
    "ServiceModel",
]

Shape = Literal["scalar", "enum", "message", "kind", "list", "map"]
Presence = Literal["implicit", "optional", "required"]


@dataclass
class EnumValueModel:
    name: str  # Python member name
    proto_name: str
    number: int
    doc: str  # "" when the proto has no comment


@dataclass
class EnumModel:
    name: str  # class name
    qualname: str  # "Outer.Color": how module-level code refers to it
    full_name: str  # "pkg.Outer.Color"
    doc: str
    values: list[EnumValueModel]
    renamed: dict[str, str]  # escaped Python member name -> proto name


@dataclass
class FieldModel:
    number: int
    name: str  # attribute and keyword-argument name
    proto_name: str
    where: str  # "Sample.id", used in error messages
    shape: Shape
    presence: Presence
    annotation: str  # of the attribute
    param_annotation: str  # of the __init__ parameter
    param_default: str
    init_value: str  # what __init__ stores
    kind: str  # rpcpoll.message kind expression, message class or enum class
    check_kind: str  # kind whose encode()/decode() is the slow path of the inline checks
    key_kind: str  # for maps, else ""
    encode_guard: str  # scalars and enums: true when `v` needs the slow path on encode
    decode_guard: str  # scalars: true when `v` needs the slow path on decode
    # Lists and maps of scalars are checked item by item in place (`x` an item, `k` a key);
    # these are "" for other containers, which go through the helpers.
    item_encode_guard: str
    item_decode_guard: str
    key_guard: str
    wire_default: str  # implicit presence: the decoded value of an absent field
    keep_test: str  # implicit presence: true when `v` is not the default and goes on the wire
    table_args: str  # extra arguments of its rpcpoll.message.Field(...) entry
    oneof: str  # the oneof's name, or ""
    doc: str


@dataclass
class OneofModel:
    name: str
    which: str  # name of the which_<oneof>() method
    members: list[str]  # attribute names
    doc: str


@dataclass
class MessageModel:
    name: str
    qualname: str
    full_name: str
    doc: str  # the class docstring text, with an Attributes section
    fields: list[FieldModel]
    oneofs: list[OneofModel]
    enums: list[EnumModel]
    messages: list[MessageModel]
    slots: list[str]  # attribute names, in the order ruff wants __slots__


@dataclass
class MethodModel:
    name: str  # wire name, "Echo"
    python_name: str
    request: str  # class expression
    response: str
    client_streaming: bool
    server_streaming: bool
    idempotent: bool
    doc: str

    @property
    def unary(self) -> bool:
        return not (self.client_streaming or self.server_streaming)


@dataclass
class ServiceModel:
    name: str  # proto name, "EchoService"
    full_name: str
    descriptor: str  # module-level descriptor name, "ECHO_SERVICE"
    client: str  # "EchoServiceClient"
    handler: str  # "EchoServiceHandler"
    doc: str
    methods: list[MethodModel]

    @property
    def unary_methods(self) -> list[MethodModel]:
        return [method for method in self.methods if method.unary]

    @property
    def streaming_methods(self) -> list[MethodModel]:
        return [method for method in self.methods if not method.unary]


@dataclass
class ImportModel:
    module: str  # the `from` part, e.g. "..common"
    name: str  # e.g. "types_rpc"
    alias: str
    proto_name: str  # the .proto file whose module this is


@dataclass
class FileModel:
    proto_name: str  # canonical, "a/b/x.proto"
    module: tuple[str, ...]  # ("a", "b", "x_rpc")
    doc: str
    imports: list[ImportModel]
    reexports: list[ImportModel]  # `import public`: names re-exported from other modules
    enums: list[EnumModel]
    messages: list[MessageModel]
    services: list[ServiceModel]
    exports: list[str]  # __all__
    uses_datetime: bool = False
    all_enums: list[EnumModel] = field(default_factory=list)  # nested ones too, in order
    all_messages: list[MessageModel] = field(default_factory=list)

    @property
    def path(self) -> str:
        """The output path relative to the output directory."""
        return "/".join(self.module) + ".py"

    @property
    def has_unary_methods(self) -> bool:
        return any(service.unary_methods for service in self.services)
