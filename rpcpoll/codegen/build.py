"""Build the model (model.py) from protoc's file descriptors.

This is the only module that reads descriptors. It resolves type names across files, decides
Python names, presence and defaults, reads comments, and reports what it skips (groups,
extensions) as warnings.

Facts about descriptors this module relies on:
- Type names are fully qualified with a leading dot (".acme.shop.Order.Line").
- A map field is a repeated message field whose type is a nested `XxxEntry` message with
  `options.map_entry`; that entry type is not rendered.
- proto3 `optional` adds a synthetic oneof (`_name`) and sets `proto3_optional`; synthetic
  oneofs are not real oneofs.
- Comments live in `source_code_info.location`, keyed by the path of field numbers leading to
  the element: message i is [4, i], its field j is [4, i, 2, j], a nested message k is
  [4, i, 3, k], a nested enum [4, i, 4, k], a oneof [4, i, 8, k]; enum i is [5, i] and its value
  j [5, i, 2, j]; service i is [6, i] and its method j [6, i, 2, j]; file extensions [7, i].
- In editions, presence comes from `features.field_presence`, inherited from the enclosing
  message and the file; edition 2023 defaults to EXPLICIT.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor_pb2 import (
    DescriptorProto,
    EnumDescriptorProto,
    FeatureSet,
    FieldDescriptorProto,
    FileDescriptorProto,
)

from . import naming
from .diagnostics import Diagnostic
from .model import (
    EnumModel,
    EnumValueModel,
    FieldModel,
    FileModel,
    ImportModel,
    MessageModel,
    MethodModel,
    OneofModel,
    Presence,
    ServiceModel,
    Shape,
)
from .typemap import FLOAT32_LIMIT, RUNTIME_MESSAGES, SCALARS, WELL_KNOWN, Scalar

__all__ = ["build"]

F = FieldDescriptorProto
_MESSAGE_TYPES = (F.TYPE_MESSAGE, F.TYPE_GROUP)
_IDEMPOTENT = (
    descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS,
    descriptor_pb2.MethodOptions.IDEMPOTENT,
)


@dataclass
class _Type:
    """A message or enum anywhere in the descriptor set, with its Python names."""

    file: str
    qualname: str
    #: the name module-level code uses while the module runs: the qualname, except for an enum
    #: nested in a message, which is defined before the messages under this private name (so
    #: that field defaults can name its members) and bound into its message class
    python_name: str
    message: DescriptorProto | None = None
    enum: EnumDescriptorProto | None = None
    members: dict[str, str] = field(default_factory=dict)  # enum: proto name -> Python name
    map_entry: bool = False
    closed: bool = False  # enum: closed (proto2, or editions' enum_type = CLOSED)


@dataclass
class _Location:
    doc: str
    line: int  # 1-based
    col: int


class _Index:
    """Every message and enum of the descriptor set by full name, with Python names decided."""

    def __init__(self, files: Sequence[FileDescriptorProto]) -> None:
        self.types: dict[str, _Type] = {}
        self.files = {file.name: file for file in files}
        self.top_names: dict[str, set[str]] = {}
        self._hoisted: set[str] = set()  # of the file being indexed
        for file in files:
            self._hoisted = set()
            prefix = f".{file.package}" if file.package else ""
            taken: set[str] = set()
            for message in file.message_type:
                taken.add(self._add_message(file, prefix, "", message, taken, [message]))
            for enum in file.enum_type:
                taken.add(self._add_enum(file, prefix, "", enum, taken, []))
            # Hoisted enums are module-level names too (import aliases must avoid them).
            self.top_names[file.name] = taken | self._hoisted

    def _add_message(
        self,
        file: FileDescriptorProto,
        prefix: str,
        outer: str,
        message: DescriptorProto,
        taken: set[str],
        scopes: list[DescriptorProto],
    ) -> str:
        full_name = f"{prefix}.{message.name}"
        reserved = taken | naming.MESSAGE_MEMBERS if outer else taken
        name = naming.type_name(message.name, reserved)
        qualname = f"{outer}.{name}" if outer else name
        self.types[full_name] = _Type(file.name, qualname, qualname, message=message)
        self.types[full_name].map_entry = message.options.map_entry
        nested: set[str] = set()
        for child in message.nested_type:
            nested.add(
                self._add_message(file, full_name, qualname, child, nested, [child, *scopes])
            )
        for enum in message.enum_type:
            nested.add(self._add_enum(file, full_name, qualname, enum, nested, scopes))
        return name

    def _add_enum(
        self,
        file: FileDescriptorProto,
        prefix: str,
        outer: str,
        enum: EnumDescriptorProto,
        taken: set[str],
        scopes: list[DescriptorProto],
    ) -> str:
        reserved = taken | naming.MESSAGE_MEMBERS if outer else taken
        name = naming.type_name(enum.name, reserved)
        members: dict[str, str] = {}
        for value in enum.value:
            members[value.name] = naming.enum_member_name(value.name, members.values())
        qualname = f"{outer}.{name}" if outer else name
        python_name = qualname
        if outer:
            python_name = naming.escape("_" + qualname.replace(".", "_"), self._hoisted)
            self._hoisted.add(python_name)
        self.types[f"{prefix}.{enum.name}"] = _Type(
            file.name,
            qualname,
            python_name,
            enum=enum,
            members=members,
            closed=_enum_closed(file, enum, scopes),
        )
        return name

    def exports(self, file_name: str) -> list[str]:
        """The public names of a file's module, including those of its `import public`s."""
        file = self.files[file_name]
        names = [self.types[_full(file, m.name)].qualname for m in file.message_type]
        names += [self.types[_full(file, e.name)].qualname for e in file.enum_type]
        names += [name for service in _service_names(file, self) for name in service]
        for index in file.public_dependency:
            names += self.exports(file.dependency[index])
        return names


def _enum_closed(
    file: FileDescriptorProto, enum: EnumDescriptorProto, scopes: Sequence[DescriptorProto]
) -> bool:
    """Whether an enum is closed: proto2's are, proto3's are not, editions' say so in their
    features (the enum's, then its enclosing messages', then the file's; OPEN by default)."""
    syntax = file.syntax or "proto2"
    if syntax != "editions":
        return syntax == "proto2"
    features = [enum.options.features]
    features += [scope.options.features for scope in scopes]
    features.append(file.options.features)
    for feature_set in features:
        if feature_set.HasField("enum_type"):
            return bool(feature_set.enum_type == FeatureSet.CLOSED)
    return False


def _full(file: FileDescriptorProto, name: str) -> str:
    return f".{file.package}.{name}" if file.package else f".{name}"


class ServiceNames(NamedTuple):
    """The module-level names one service takes."""

    descriptor: str
    client: str
    handler: str
    async_client: str
    async_handler: str


def _service_names(file: FileDescriptorProto, index: _Index) -> list[ServiceNames]:
    """The names each service of `file` takes, clear of the file's other top-level names."""
    taken = set(index.top_names[file.name])
    result = []
    for service in file.service:
        names = []
        for candidate in (
            naming.upper_snake(service.name),
            service.name + "Client",
            service.name + "Handler",
            service.name + "AsyncClient",
            service.name + "AsyncHandler",
        ):
            name = naming.type_name(candidate, taken)
            taken.add(name)
            names.append(name)
        result.append(ServiceNames(*names))
    return result


def build(
    files: Sequence[FileDescriptorProto],
    targets: Sequence[str],
    display_names: Mapping[str, str] | None = None,
) -> tuple[list[FileModel], list[Diagnostic]]:
    """Models for the `targets` among `files` (which must include all their imports)."""
    index = _Index(files)
    warnings: list[Diagnostic] = []
    models = []
    for name in targets:
        display = (display_names or {}).get(name, name)
        builder = _FileBuilder(index, index.files[name], display, warnings)
        models.append(builder.build())
    return models, warnings


class _FileBuilder:
    def __init__(
        self,
        index: _Index,
        file: FileDescriptorProto,
        display: str,
        warnings: list[Diagnostic],
    ) -> None:
        self.index = index
        self.file = file
        self.display = display
        self.warnings = warnings
        self.module = naming.module_parts(file.name)
        self.imports: dict[str, ImportModel] = {}
        self.uses_datetime = False
        self.locations = _locations(file)
        self.all_enums: list[EnumModel] = []
        self.all_messages: list[MessageModel] = []

    # -- the file --------------------------------------------------------------------------

    def build(self) -> FileModel:
        file = self.file
        prefix = f".{file.package}" if file.package else ""
        runtime: list[tuple[str, str]] = []
        enums, messages = [], []
        for i, e in enumerate(file.enum_type):
            full_name = f"{prefix}.{e.name}"
            if full_name in RUNTIME_MESSAGES:
                runtime.append((self.index.types[full_name].qualname, RUNTIME_MESSAGES[full_name]))
            else:
                enums.append(self._enum(full_name, (5, i)))
        for i, m in enumerate(file.message_type):
            full_name = f"{prefix}.{m.name}"
            if full_name in RUNTIME_MESSAGES:
                runtime.append((self.index.types[full_name].qualname, RUNTIME_MESSAGES[full_name]))
            else:
                messages.append(self._message(full_name, (4, i)))
        services = [self._service(i) for i in range(len(file.service))]
        for i, extension in enumerate(file.extension):
            self._warn(
                (7, i), f"extension {extension.name} is skipped: extensions are not supported"
            )
        exports = [e.name for e in enums] + [m.name for m in messages]
        exports += [name for name, _ in runtime]
        for service in services:
            exports += [service.descriptor, service.client, service.handler]
            exports += [service.async_client, service.async_handler]
        reexports = self._reexports(set(exports))
        exports += [imported.alias for imported in reexports]
        doc = self._doc((12,)) or self._doc((14,)) or self._doc((2,))
        header = f"Messages and services of {file.name}"
        header += f" (package {file.package})." if file.package else "."
        return FileModel(
            proto_name=file.name,
            module=self.module,
            doc=f"{header}\n\n{doc}" if doc else header,
            imports=sorted(self.imports.values(), key=_import_order),
            reexports=reexports,
            enums=enums,
            messages=messages,
            services=services,
            exports=sorted(set(exports), key=naming.isort_key),
            runtime_messages=runtime,
            uses_datetime=self.uses_datetime,
            all_enums=self.all_enums,
            all_messages=self.all_messages,
        )

    def _reexports(self, local: set[str]) -> list[ImportModel]:
        result = []
        for index in self.file.public_dependency:
            dependency = self.file.dependency[index]
            module = naming.relative_module(self.module, naming.module_parts(dependency))
            for name in self.index.exports(dependency):
                if name not in local:
                    local.add(name)
                    result.append(ImportModel(module, name, name, dependency))
        return sorted(result, key=_import_order)

    def _import(self, file_name: str) -> str:
        """The alias under which this module imports the module of `file_name`."""
        if file_name not in self.imports:
            target = naming.module_parts(file_name)
            source, name = naming.relative_import(self.module, target)
            taken = self.index.top_names[self.file.name] | {i.alias for i in self.imports.values()}
            alias = naming.import_alias(target, taken | naming.MODULE_ALIASES)
            self.imports[file_name] = ImportModel(source, name, alias, file_name)
        return self.imports[file_name].alias

    def _ref(self, type_name: str) -> str:
        """How this module's code refers to the message or enum `type_name`."""
        entry = self.index.types[type_name]
        if entry.file == self.file.name:
            return entry.qualname
        return f"{self._import(entry.file)}.{entry.qualname}"

    def _early_ref(self, type_name: str) -> str:
        """`_ref` for code that runs while the module's classes are still being defined."""
        entry = self.index.types[type_name]
        if entry.file == self.file.name:
            return entry.python_name
        return self._ref(type_name)

    # -- enums and messages ----------------------------------------------------------------

    def _enum(self, full_name: str, path: tuple[int, ...]) -> EnumModel:
        entry = self.index.types[full_name]
        assert entry.enum is not None
        values = [
            EnumValueModel(
                name=entry.members[value.name],
                proto_name=value.name,
                number=value.number,
                doc=self._doc((*path, 2, i), deprecated=value.options.deprecated),
            )
            for i, value in enumerate(entry.enum.value)
        ]
        doc = self._doc(path, deprecated=entry.enum.options.deprecated)
        lines = [doc or f"Enum {full_name[1:]}."]
        documented = [value for value in values if value.doc]
        if documented:
            lines += ["", "Attributes:"]
            lines += [_attribute(value.name, value.doc) for value in documented]
        model = EnumModel(
            name=entry.qualname.rpartition(".")[2],
            qualname=entry.qualname,
            python_name=entry.python_name,
            full_name=full_name[1:],
            base="_msg.ClosedEnum" if entry.closed else "_msg.Enum",
            doc="\n".join(lines),
            values=values,
            renamed={v.name: v.proto_name for v in values if v.name != v.proto_name},
        )
        self.all_enums.append(model)
        return model

    def _message(self, full_name: str, path: tuple[int, ...]) -> MessageModel:
        entry = self.index.types[full_name]
        message = entry.message
        assert message is not None
        nested_enums = [
            self._enum(f"{full_name}.{e.name}", (*path, 4, i))
            for i, e in enumerate(message.enum_type)
        ]
        nested_messages = []
        # proto2 groups are skipped; editions has no groups (delimited fields are messages).
        groups = {
            f.type_name
            for f in message.field
            if f.type == F.TYPE_GROUP and self._syntax() == "proto2"
        }
        for i, nested in enumerate(message.nested_type):
            nested_name = f"{full_name}.{nested.name}"
            if nested.options.map_entry or nested_name in groups:
                continue
            nested_messages.append(self._message(nested_name, (*path, 3, i)))
        for i, extension in enumerate(message.extension):
            self._warn(
                (*path, 6, i),
                f"extension {extension.name} is skipped: extensions are not supported",
            )

        # A field must not shadow a nested class, nor a module-level class that annotations
        # in the class body refer to.
        taken = {n.name for n in nested_enums} | {n.name for n in nested_messages}
        taken |= self.index.top_names[self.file.name]
        oneof_of = {
            i: f.oneof_index
            for i, f in enumerate(message.field)
            if f.HasField("oneof_index") and not f.proto3_optional and f.type_name not in groups
        }
        which = {}
        for i in sorted(set(oneof_of.values())):
            name = message.oneof_decl[i].name
            which[i] = naming.escape(f"which_{name}", taken | naming.MESSAGE_MEMBERS)
            taken.add(which[i])

        fields: list[FieldModel] = []
        members: dict[int, list[str]] = {i: [] for i in which}
        for i, proto_field in enumerate(message.field):
            if proto_field.type_name in groups:
                self._warn(
                    (*path, 2, i),
                    f"group {proto_field.type_name.rpartition('.')[2]} is skipped: "
                    "groups are not supported",
                )
                continue
            attr = naming.field_name(proto_field.name, taken)
            taken.add(attr)
            oneof = ""
            if i in oneof_of:
                oneof = message.oneof_decl[oneof_of[i]].name
                members[oneof_of[i]].append(attr)
            fields.append(
                self._field(entry.qualname, message, proto_field, attr, oneof, (*path, 2, i))
            )
        oneofs = [
            OneofModel(
                name=message.oneof_decl[i].name,
                which=which[i],
                members=members[i],
                doc=self._doc((*path, 8, i)),
            )
            for i in which
        ]
        model = MessageModel(
            name=entry.qualname.rpartition(".")[2],
            qualname=entry.qualname,
            full_name=full_name[1:],
            doc=self._message_doc(full_name[1:], path, message, fields, oneofs),
            fields=fields,
            oneofs=oneofs,
            enums=nested_enums,
            messages=nested_messages,
        )
        self.all_messages.append(model)
        return model

    def _message_doc(
        self,
        full_name: str,
        path: tuple[int, ...],
        message: DescriptorProto,
        fields: list[FieldModel],
        oneofs: list[OneofModel],
    ) -> str:
        lines = [self._doc(path, deprecated=message.options.deprecated) or f"Message {full_name}."]
        notes = [
            textwrap.fill(
                f"At most one of {', '.join(o.members)} is set (oneof {o.name}); "
                f"`{o.which}()` tells which.",
                width=88,
            )
            for o in oneofs
        ]
        if notes:
            lines += ["", *notes]
        documented = [f for f in fields if f.doc]
        if documented:
            lines += ["", "Attributes:"]
            lines += [_attribute(f.name, f.doc) for f in documented]
        return "\n".join(lines)

    # -- fields ----------------------------------------------------------------------------

    def _field(
        self,
        owner: str,
        message: DescriptorProto,
        proto_field: FieldDescriptorProto,
        attr: str,
        oneof: str,
        path: tuple[int, ...],
    ) -> FieldModel:
        doc = self._doc(path, deprecated=proto_field.options.deprecated)
        extra = []
        if attr != proto_field.name:
            extra.append(f"proto_name={naming.py_literal(proto_field.name)}")
        if proto_field.json_name and proto_field.json_name != naming.json_name(proto_field.name):
            extra.append(f"json_name={naming.py_literal(proto_field.json_name)}")
        common = _Common(attr, proto_field, f"{owner}.{attr}", doc, extra)

        entry = self.index.types.get(proto_field.type_name)
        if entry is not None and entry.map_entry:
            assert entry.message is not None
            key_field, value_field = entry.message.field[0], entry.message.field[1]
            return self._container(common, self._element(value_field), SCALARS[key_field.type])
        element = self._element(proto_field)
        if proto_field.label == F.LABEL_REPEATED:
            return self._container(common, element, None)

        presence = self._presence(message, proto_field, element, oneof)
        me = f"self.{attr}"
        table = [f"{proto_field.number}", naming.py_literal(attr), element.kind]
        annotation = element.annotation
        if presence == "implicit":
            default = self._default(proto_field, element)
            default_expr = (
                f"{element.early_kind}.{default}"
                if isinstance(default, str) and element.shape == "enum"
                else naming.py_literal(default)
            )
            good = element.good(me)
            if element.scalar is not None and element.scalar.python_type == "float":
                # msgspec leaves out only the default object itself (floats are not
                # interned): any other 0.0 takes the slow path, which stores _msg.ZERO.
                default_expr = "_msg.ZERO"
                good = element.scalar.good(me, zero="_msg.ZERO")
            field_args = f"default={default_expr}"
        else:
            if annotation != "_t.Any":
                # A required field is `T | None` for type checkers too, but msgspec decodes
                # it as `T`: nil on the wire is refused like a missing key.
                required = presence == "required"
                annotation = f"_msg.Required[{annotation}]" if required else f"{annotation} | None"
            field_args = "default=None"
            good = _none_or(me, element.good(me))
            if presence == "required":
                extra.insert(0, "required=True")
                field_args = ""  # a required keyword argument
                good = element.good(me) if element.good(me) else ""
            elif oneof:
                extra.insert(0, f"oneof={naming.py_literal(oneof)}")
            else:
                extra.insert(0, "optional=True")
            if proto_field.HasField("default_value") and presence == "optional":
                shown = proto_field.default_value or '""'
                common.doc = (f"{doc}\n" if doc else "") + f"Not set (None) means {shown}."
        key = naming.py_literal(str(proto_field.number))
        return FieldModel(
            number=proto_field.number,
            name=attr,
            proto_name=proto_field.name,
            where=common.where,
            shape=element.shape,
            presence=presence,
            annotation=annotation,
            field_args=f"name={key}, {field_args}" if field_args else f"name={key}",
            good=good,
            item_bad="",
            key_bad="",
            nested=element.message if element.shape == "message" else "",
            slow=element.shape == "kind",
            post_init=element.post_init(repeated=False),
            float32_bad=_float32_bad(me) if element.post_init(repeated=False) == "float32" else "",
            table_args=", ".join(table + extra),
            oneof=oneof,
            doc=common.doc,
        )

    def _container(self, common: _Common, element: _Element, key: Scalar | None) -> FieldModel:
        """A repeated field (`key` None) or a map field."""
        attr, proto_field = common.attr, common.proto_field
        me = f"self.{attr}"
        if key is None:
            annotation = f"list[{element.annotation}]"
            table_key, factory, good = "repeated=True", "list", f"{me}.__class__ is list"
        else:
            annotation = f"dict[{key.annotation}, {element.annotation}]"
            table_key, factory, good = f"key={key.kind}", "dict", f"{me}.__class__ is dict"
        table = [f"{proto_field.number}", naming.py_literal(attr), element.kind, table_key]
        slow = element.shape == "kind"
        wire_key = naming.py_literal(str(proto_field.number))
        return FieldModel(
            number=proto_field.number,
            name=attr,
            proto_name=proto_field.name,
            where=common.where,
            shape="list" if key is None else "map",
            presence="implicit",
            annotation=annotation,
            field_args=f"name={wire_key}, default_factory={factory}",
            good="" if slow else good,
            item_bad="" if slow else element.bad("x"),
            key_bad=key.bad("k") if key is not None and not slow else "",
            nested=element.message if element.shape == "message" else "",
            slow=slow,
            post_init=element.post_init(repeated=True),
            float32_bad="",
            table_args=", ".join(table + common.extra),
            oneof="",
            doc=common.doc,
        )

    def _element(self, proto_field: FieldDescriptorProto) -> _Element:
        """What one value of the field is, ignoring repeated and presence."""
        if proto_field.type in SCALARS:
            return _Element.of_scalar(SCALARS[proto_field.type])
        well_known = WELL_KNOWN.get(proto_field.type_name)
        if well_known is not None:
            if well_known.scalar is not None:
                return _Element.of_scalar(well_known.scalar, wrapper=True)
            if well_known.annotation.startswith("_dt."):
                self.uses_datetime = True
            return _Element(
                shape=well_known.shape,  # type: ignore[arg-type]
                kind=well_known.kind,
                annotation=well_known.annotation,
                early_kind=well_known.kind,
                message=well_known.kind if well_known.shape == "message" else "",
                enum_members={"NULL_VALUE": "NULL_VALUE"} if well_known.shape == "enum" else None,
                runtime_post_init=well_known.post_init,
            )
        entry = self.index.types[proto_field.type_name]
        ref = self._ref(proto_field.type_name)
        if entry.enum is not None:
            return _Element(
                shape="enum",
                kind=ref,
                annotation=ref,
                early_kind=self._early_ref(proto_field.type_name),
                enum_members=entry.members,
                enum=entry.enum,
                runtime_post_init=entry.closed,
            )
        return _Element(shape="message", kind=ref, annotation=ref, early_kind=ref, message=ref)

    def _presence(
        self,
        message: DescriptorProto,
        proto_field: FieldDescriptorProto,
        element: _Element,
        oneof: str,
    ) -> Presence:
        """How a singular field tells "not set" from its default.

        Messages, oneof members and wrappers always have explicit presence; so do proto3
        `optional` fields, every proto2 field, and editions fields that resolve to EXPLICIT
        (the edition 2023 default). proto2 `required` and editions LEGACY_REQUIRED fields
        are required.
        """
        syntax = self._syntax()
        if syntax == "editions":
            resolved = self._feature_presence(message, proto_field)
            if resolved == FeatureSet.LEGACY_REQUIRED:
                return "required"
            explicit = resolved == FeatureSet.EXPLICIT
        elif proto_field.label == F.LABEL_REQUIRED:
            return "required"
        else:
            explicit = syntax == "proto2" or proto_field.proto3_optional
        if explicit or oneof or element.shape in ("message", "kind") or element.wrapper:
            return "optional"
        return "implicit"

    def _feature_presence(self, message: DescriptorProto, proto_field: FieldDescriptorProto) -> int:
        # The closest of field, enclosing messages (innermost first) and file that sets it.
        scopes: list[FieldDescriptorProto | DescriptorProto | FileDescriptorProto]
        scopes = [proto_field, *self._enclosing(message), self.file]
        for scope in scopes:
            if scope.options.features.HasField("field_presence"):
                presence: int = scope.options.features.field_presence
                return presence
        default: int = FeatureSet.EXPLICIT
        return default

    def _enclosing(self, message: DescriptorProto) -> list[DescriptorProto]:
        def walk(
            candidates: Sequence[DescriptorProto], trail: list[DescriptorProto]
        ) -> list[DescriptorProto] | None:
            for candidate in candidates:
                if candidate is message:
                    return [candidate, *reversed(trail)]
                found = walk(candidate.nested_type, [*trail, candidate])
                if found is not None:
                    return found
            return None

        return walk(self.file.message_type, []) or [message]

    def _syntax(self) -> str:
        return self.file.syntax or "proto2"

    def _default(self, proto_field: FieldDescriptorProto, element: _Element) -> object:
        """The default of an implicit-presence field: a scalar value, or for an enum the
        Python name of its member (the first value: implicit presence needs an open enum,
        whose first value is 0)."""
        if element.enum_members is not None:
            if element.enum is None:  # google.protobuf.NullValue
                return "NULL_VALUE"
            return element.enum_members[element.enum.value[0].name]
        assert element.scalar is not None
        return element.scalar.zero

    # -- services --------------------------------------------------------------------------

    def _service(self, i: int) -> ServiceModel:
        service = self.file.service[i]
        names = _service_names(self.file, self.index)[i]
        full_name = f"{self.file.package}.{service.name}" if self.file.package else service.name
        methods = []
        taken: set[str] = set()
        for j, method in enumerate(service.method):
            python_name = naming.method_name(method.name, taken)
            taken.add(python_name)
            model = MethodModel(
                name=method.name,
                python_name=python_name,
                request=self._method_type(method.input_type),
                response=self._method_type(method.output_type),
                client_streaming=method.client_streaming,
                server_streaming=method.server_streaming,
                idempotent=method.options.idempotency_level in _IDEMPOTENT,
                doc=self._doc((6, i, 2, j), deprecated=method.options.deprecated),
            )
            methods.append(model)
        return ServiceModel(
            name=service.name,
            full_name=full_name,
            descriptor=names.descriptor,
            client=names.client,
            handler=names.handler,
            async_client=names.async_client,
            async_handler=names.async_handler,
            doc=self._doc((6, i), deprecated=service.options.deprecated) or f"Service {full_name}.",
            methods=methods,
        )

    def _method_type(self, type_name: str) -> str:
        if type_name in RUNTIME_MESSAGES:  # well-known messages are runtime classes
            return RUNTIME_MESSAGES[type_name]
        return self._ref(type_name)

    # -- comments and warnings -------------------------------------------------------------

    def _doc(self, path: tuple[int, ...], *, deprecated: bool = False) -> str:
        location = self.locations.get(path)
        text = location.doc if location else ""
        if deprecated:
            text = f"Deprecated. {text}" if text else "Deprecated."
        return text

    def _warn(self, path: tuple[int, ...], message: str) -> None:
        location = self.locations.get(path)
        line, col = (location.line, location.col) if location else (0, 0)
        self.warnings.append(Diagnostic(self.display, line, col, message, "warning"))


@dataclass
class _Common:
    """What every field model needs, whatever its shape."""

    attr: str
    proto_field: FieldDescriptorProto
    where: str
    doc: str
    extra: list[str]  # extra arguments of its Field(...) table entry


@dataclass
class _Element:
    shape: Shape
    kind: str
    annotation: str
    early_kind: str  # `kind` as code that runs while the module's classes are defined names it
    message: str = ""  # the message class, for message elements
    scalar: Scalar | None = None
    wrapper: bool = False
    enum_members: dict[str, str] | None = None
    enum: EnumDescriptorProto | None = None
    runtime_post_init: bool = False  # closed enums, and well-known types that need it

    @classmethod
    def of_scalar(cls, scalar: Scalar, *, wrapper: bool = False) -> _Element:
        return cls(
            shape="scalar",
            kind=scalar.kind,
            annotation=scalar.annotation,
            early_kind=scalar.kind,
            scalar=scalar,
            wrapper=wrapper,
        )

    def good(self, var: str) -> str:
        """The fast-path test of a value `var` of this element ("" for runtime-only ones)."""
        if self.scalar is not None:
            return self.scalar.good(var)
        if self.shape in ("enum", "message"):
            return f"{var}.__class__ is {self.kind}"
        return ""

    def bad(self, var: str) -> str:
        """The negation of `good`."""
        if self.scalar is not None:
            return self.scalar.bad(var)
        if self.shape in ("enum", "message"):
            return f"{var}.__class__ is not {self.kind}"
        return ""

    def post_init(self, *, repeated: bool) -> str:
        """What the class's __post_init__ does for a field of this element (see FieldModel)."""
        if self.runtime_post_init:
            return "runtime"
        if self.scalar is not None and self.scalar.single:
            return "runtime" if repeated else "float32"
        return ""


def _none_or(var: str, good: str) -> str:
    """`good`, also true when `var` is None; "" stays ""."""
    if not good:
        return ""
    return f"({var} is None or ({good}))" if " and " in good else f"({var} is None or {good})"


def _float32_bad(var: str) -> str:
    return f"{var}.__class__ is float and not -{FLOAT32_LIMIT} <= {var} <= {FLOAT32_LIMIT}"


def _attribute(name: str, doc: str) -> str:
    first, *rest = doc.split("\n")
    return "\n".join([f"    {name}: {first}", *(f"        {line}" for line in rest)])


def _import_order(model: ImportModel) -> tuple[int, str, str]:
    dots = len(model.module) - len(model.module.lstrip("."))
    return (-dots, model.module, model.name)


def _locations(file: FileDescriptorProto) -> dict[tuple[int, ...], _Location]:
    result = {}
    for location in file.source_code_info.location:
        text = location.leading_comments or location.trailing_comments
        doc = textwrap.dedent(text).strip() if text else ""
        line, col = (location.span[0] + 1, location.span[1] + 1) if location.span else (0, 0)
        result[tuple(location.path)] = _Location(doc, line, col)
    return result
