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

Shape = Literal["scalar", "enum", "message", "kind", "list", "map"]  # "kind": native WKT form
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
    qualname: str  # "Outer.Color": how code run after the module's classes refers to it
    #: the name it is defined under: the qualname, or for an enum nested in a message a private
    #: module-level name ("_Outer_Color"), since it is defined before every message class so
    #: that field defaults can name its members; the message class binds it as `Color`
    python_name: str
    full_name: str  # "pkg.Outer.Color"
    base: str  # "_msg.Enum" (open) or "_msg.ClosedEnum"
    doc: str
    values: list[EnumValueModel]
    renamed: dict[str, str]  # escaped Python member name -> proto name

    @property
    def hoisted(self) -> bool:
        return self.python_name != self.qualname


@dataclass
class FieldModel:
    number: int
    name: str  # attribute and keyword-argument name
    proto_name: str
    where: str  # "Sample.id", used in error messages
    shape: Shape
    presence: Presence
    annotation: str  # msgspec decodes by it, type checkers read it
    field_args: str  # arguments of its `_msg.field(...)`: wire key and default
    # _check(): `good` joins the one expression that passes a message of well-typed values;
    # containers then loop over their items, of which `item_bad` (`x` an item, `k` a key) and
    # `key_bad` pick those the runtime must look at. "" means no such test.
    good: str
    item_bad: str
    key_bad: str
    nested: str  # the message class whose _check() the field's message(s) get, or ""
    slow: bool  # checked by the runtime only (well-known types with a native form)
    # __post_init__: "float32" for an inline range check of a float field (`float32_bad` is
    # true for a float outside float32's range, or NaN/inf on their way to the slow check),
    # "runtime" for the runtime's (closed enums, JSON values, durations, float containers).
    post_init: str
    float32_bad: str
    table_args: str  # arguments of its rpcpoll.message.Field(...) entry
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
    enums: list[EnumModel]  # nested, hoisted to module level and bound in the class
    messages: list[MessageModel]

    @property
    def good(self) -> list[str]:
        """The fast-path tests of _check(), one per field that has one."""
        return [f.good for f in self.fields if f.good]

    @property
    def containers(self) -> list[FieldModel]:
        """Fields whose items _check() looks at one by one."""
        return [f for f in self.fields if f.shape in ("list", "map") and not f.slow]

    @property
    def uses_temp(self) -> bool:
        """Whether the fast-path test reads values into the temporary `v`."""
        return any(":=" in good for good in self.good)

    @property
    def checks_after_fast_path(self) -> bool:
        """Whether _check() has more to do once the fast-path test passed."""
        nested = any(f.nested and f.shape == "message" for f in self.fields)
        return bool(self.containers or nested or self.slow_fields or self.oneofs)

    @property
    def slow_fields(self) -> list[str]:
        """Fields that _check() leaves to the runtime."""
        return [f.name for f in self.fields if f.slow]

    @property
    def post_init_floats(self) -> list[FieldModel]:
        return [f for f in self.fields if f.post_init == "float32"]

    @property
    def post_init_runtime(self) -> list[str]:
        return [f.name for f in self.fields if f.post_init == "runtime"]

    @property
    def has_post_init(self) -> bool:
        return bool(self.oneofs or self.post_init_floats or self.post_init_runtime)


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

    @property
    def kind(self) -> str:
        """ "unary", "server_stream", "client_stream" or "bidi"."""
        if self.client_streaming:
            return "bidi" if self.server_streaming else "client_stream"
        return "server_stream" if self.server_streaming else "unary"


@dataclass
class ServiceModel:
    name: str  # proto name, "EchoService"
    full_name: str
    descriptor: str  # module-level descriptor name, "ECHO_SERVICE"
    client: str  # "EchoServiceClient"
    handler: str  # "EchoServiceHandler"
    async_client: str  # "EchoServiceAsyncClient"
    async_handler: str  # "EchoServiceAsyncHandler"
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
    #: well-known messages the runtime defines, re-exported: (name, runtime class expression)
    runtime_messages: list[tuple[str, str]] = field(default_factory=list)
    uses_datetime: bool = False
    all_enums: list[EnumModel] = field(default_factory=list)  # nested ones too, in order

    @property
    def uses_typing(self) -> bool:
        """Whether the module refers to `_t` (typing)."""
        return any(
            m.oneofs
            or m.enums
            or m.uses_temp
            or m.containers
            or any("_t." in f.annotation for f in m.fields)
            for m in self.all_messages
        )

    @property
    def hoisted_enums(self) -> list[EnumModel]:
        return [enum for enum in self.all_enums if enum.hoisted]

    all_messages: list[MessageModel] = field(default_factory=list)

    @property
    def path(self) -> str:
        """The output path relative to the output directory."""
        return "/".join(self.module) + ".py"

    @property
    def has_methods(self) -> bool:
        return any(service.methods for service in self.services)

    @property
    def has_streaming_methods(self) -> bool:
        return any(service.streaming_methods for service in self.services)
