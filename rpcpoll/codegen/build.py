"""Build the model (model.py) from protoc's file descriptors.

This is the only module that reads descriptors. It resolves type names across files, decides
Python names, presence and defaults, reads comments, and reports what it skips (groups,
extensions, streaming client methods) as warnings.

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

from google.protobuf import descriptor_pb2, text_encoding
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
from .typemap import SCALARS, WELL_KNOWN, Scalar

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
    message: DescriptorProto | None = None
    enum: EnumDescriptorProto | None = None
    members: dict[str, str] = field(default_factory=dict)  # enum: proto name -> Python name
    map_entry: bool = False


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
        for file in files:
            prefix = f".{file.package}" if file.package else ""
            taken: set[str] = set()
            for message in file.message_type:
                taken.add(self._add_message(file.name, prefix, "", message, taken))
            for enum in file.enum_type:
                taken.add(self._add_enum(file.name, prefix, "", enum, taken))
            self.top_names[file.name] = taken

    def _add_message(
        self, file: str, prefix: str, outer: str, message: DescriptorProto, taken: set[str]
    ) -> str:
        full_name = f"{prefix}.{message.name}"
        reserved = taken | naming.MESSAGE_MEMBERS if outer else taken
        name = naming.type_name(message.name, reserved)
        qualname = f"{outer}.{name}" if outer else name
        self.types[full_name] = _Type(file, qualname, message=message)
        self.types[full_name].map_entry = message.options.map_entry
        nested: set[str] = set()
        for child in message.nested_type:
            nested.add(self._add_message(file, full_name, qualname, child, nested))
        for enum in message.enum_type:
            nested.add(self._add_enum(file, full_name, qualname, enum, nested))
        return name

    def _add_enum(
        self, file: str, prefix: str, outer: str, enum: EnumDescriptorProto, taken: set[str]
    ) -> str:
        reserved = taken | naming.MESSAGE_MEMBERS if outer else taken
        name = naming.type_name(enum.name, reserved)
        members: dict[str, str] = {}
        for value in enum.value:
            members[value.name] = naming.enum_member_name(value.name, members.values())
        qualname = f"{outer}.{name}" if outer else name
        self.types[f"{prefix}.{enum.name}"] = _Type(file, qualname, enum=enum, members=members)
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


def _full(file: FileDescriptorProto, name: str) -> str:
    return f".{file.package}.{name}" if file.package else f".{name}"


def _service_names(file: FileDescriptorProto, index: _Index) -> list[tuple[str, str, str]]:
    """(descriptor, client, handler) names of each service of `file`."""
    taken = set(index.top_names[file.name])
    result = []
    for service in file.service:
        names = []
        for candidate in (
            naming.upper_snake(service.name),
            service.name + "Client",
            service.name + "Handler",
        ):
            name = naming.type_name(candidate, taken)
            taken.add(name)
            names.append(name)
        result.append((names[0], names[1], names[2]))
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
        enums = [self._enum(f"{prefix}.{e.name}", (5, i)) for i, e in enumerate(file.enum_type)]
        messages = [
            self._message(f"{prefix}.{m.name}", (4, i)) for i, m in enumerate(file.message_type)
        ]
        services = [self._service(i) for i in range(len(file.service))]
        for i, extension in enumerate(file.extension):
            self._warn(
                (7, i), f"extension {extension.name} is skipped: extensions are not supported"
            )
        exports = [e.name for e in enums] + [m.name for m in messages]
        for service in services:
            exports += [service.descriptor, service.client, service.handler]
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
            full_name=full_name[1:],
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
            slots=sorted((f.name for f in fields), key=naming.isort_key),
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
        where = f"{owner}.{attr}"
        doc = self._doc(path, deprecated=proto_field.options.deprecated)
        extra = []
        if attr != proto_field.name:
            extra.append(f"proto_name={naming.py_literal(proto_field.name)}")
        if proto_field.json_name and proto_field.json_name != naming.json_name(proto_field.name):
            extra.append(f"json_name={naming.py_literal(proto_field.json_name)}")

        entry = self.index.types.get(proto_field.type_name)
        if entry is not None and entry.map_entry:
            assert entry.message is not None
            key_field, value_field = entry.message.field[0], entry.message.field[1]
            key = SCALARS[key_field.type]
            value = self._element(value_field)
            common = _Common(attr, proto_field, where, doc, extra)
            return self._container(common, value, key)
        element = self._element(proto_field)
        if proto_field.label == F.LABEL_REPEATED:
            return self._container(_Common(attr, proto_field, where, doc, extra), element, None)

        presence = self._presence(message, proto_field, element, oneof)
        shape = element.shape
        annotation = element.annotation
        param_annotation = annotation
        param_default = "None"
        init_value = attr
        wire_default = keep_test = ""
        table = [f"{proto_field.number}", naming.py_literal(attr), element.kind]
        if presence == "implicit":
            default_value, default_expr = self._default(proto_field, element)
            wire_default = naming.py_literal(
                default_value if element.enum_members is None else _enum_number(default_value)
            )
            is_zero = _is_zero(default_value)
            keep_test = "v" if is_zero else f"v != {default_expr}"
            if default_value is True:
                keep_test = "not v"  # v is a bool by now
            if not is_zero:
                extra.insert(0, f"default={default_expr}")
            if shape == "enum":
                param_annotation = f"{annotation} | None"
                init_value = f"{default_expr} if {attr} is None else {attr}"
            else:
                param_default = default_expr
        else:
            if annotation != "_t.Any":
                annotation = param_annotation = f"{annotation} | None"
            if presence == "required":
                extra.insert(0, "required=True")
            elif oneof:
                extra.insert(0, f"oneof={naming.py_literal(oneof)}")
            else:
                extra.insert(0, "optional=True")
        return FieldModel(
            number=proto_field.number,
            name=attr,
            proto_name=proto_field.name,
            where=where,
            shape=shape,
            presence=presence,
            annotation=annotation,
            param_annotation=param_annotation,
            param_default=param_default,
            init_value=init_value,
            kind=element.kind,
            check_kind=element.check_kind,
            key_kind="",
            encode_guard=element.encode_guard,
            decode_guard=element.decode_guard,
            item_encode_guard="",
            item_decode_guard="",
            key_guard="",
            wire_default=wire_default,
            keep_test=keep_test,
            table_args=", ".join(table + extra),
            oneof=oneof,
            doc=doc,
        )

    def _container(self, common: _Common, element: _Element, key: Scalar | None) -> FieldModel:
        """A repeated field (`key` None) or a map field."""
        attr, proto_field = common.attr, common.proto_field
        if key is None:
            annotation = f"list[{element.annotation}]"
            table_key, empty = "repeated=True", "[]"
        else:
            annotation = f"dict[{key.annotation}, {element.annotation}]"
            table_key, empty = f"key={key.kind}", "{}"
        table = [f"{proto_field.number}", naming.py_literal(attr), element.kind, table_key]
        scalar = element.scalar
        return FieldModel(
            number=proto_field.number,
            name=attr,
            proto_name=proto_field.name,
            where=common.where,
            shape="list" if key is None else "map",
            presence="implicit",
            annotation=annotation,
            param_annotation=f"{annotation} | None",
            param_default="None",
            init_value=f"{empty} if {attr} is None else {attr}",
            kind=element.kind,
            check_kind=element.check_kind,
            key_kind=key.kind if key is not None else "",
            encode_guard="",
            decode_guard="",
            item_encode_guard=scalar.encode_guard("x") if scalar else "",
            item_decode_guard=scalar.decode_guard("x") if scalar else "",
            key_guard=key.encode_guard("k") if key is not None else "",
            wire_default="",
            keep_test="",
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
            self.uses_datetime |= well_known.uses_datetime
            if well_known.scalar is not None:
                return _Element.of_scalar(well_known.scalar, wrapper=True)
            return _Element(
                shape=well_known.shape,  # type: ignore[arg-type]
                kind=well_known.kind,
                annotation=well_known.annotation,
                check_kind="_msg.ENUM" if well_known.shape == "enum" else well_known.kind,
                encode_guard=f"v.__class__ is not {well_known.kind}",
                enum_members={"NULL_VALUE": "NULL_VALUE"} if well_known.shape == "enum" else None,
            )
        entry = self.index.types[proto_field.type_name]
        ref = self._ref(proto_field.type_name)
        if entry.enum is not None:
            return _Element(
                shape="enum",
                kind=ref,
                annotation=ref,
                check_kind="_msg.ENUM",
                encode_guard=f"v.__class__ is not {ref}",
                enum_members=entry.members,
                enum=entry.enum,
            )
        return _Element(shape="message", kind=ref, annotation=ref, check_kind=ref)

    def _presence(
        self,
        message: DescriptorProto,
        proto_field: FieldDescriptorProto,
        element: _Element,
        oneof: str,
    ) -> Presence:
        syntax = self._syntax()
        if syntax == "editions":
            resolved = self._feature_presence(message, proto_field)
            if resolved == FeatureSet.LEGACY_REQUIRED:
                return "required"
        elif proto_field.label == F.LABEL_REQUIRED:
            return "required"
        if oneof or proto_field.proto3_optional or element.shape in ("message", "kind"):
            return "optional"
        if element.wrapper:
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

    def _default(self, proto_field: FieldDescriptorProto, element: _Element) -> tuple[object, str]:
        """The default of an implicit-presence field, as a value and as a Python expression."""
        text = proto_field.default_value if proto_field.HasField("default_value") else None
        if element.enum_members is not None:
            if element.enum is None:  # google.protobuf.NullValue
                return _EnumDefault("NULL_VALUE", 0), f"{element.kind}.NULL_VALUE"
            proto_name = text if text is not None else element.enum.value[0].name
            member = element.enum_members[proto_name]
            number = next(v.number for v in element.enum.value if v.name == proto_name)
            return _EnumDefault(proto_name, number), f"{element.kind}.{member}"
        assert element.scalar is not None
        value = element.scalar.zero if text is None else _parse_default(proto_field.type, text)
        return value, naming.py_literal(value)

    # -- services --------------------------------------------------------------------------

    def _service(self, i: int) -> ServiceModel:
        service = self.file.service[i]
        descriptor, client, handler = _service_names(self.file, self.index)[i]
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
            if not model.unary:
                self._warn(
                    (6, i, 2, j),
                    f"rpc {service.name}.{method.name} is streaming: it is listed in "
                    f"{descriptor} but gets no client or handler method until rpcpoll "
                    "supports streaming",
                )
        return ServiceModel(
            name=service.name,
            full_name=full_name,
            descriptor=descriptor,
            client=client,
            handler=handler,
            doc=self._doc((6, i), deprecated=service.options.deprecated) or f"Service {full_name}.",
            methods=methods,
        )

    def _method_type(self, type_name: str) -> str:
        well_known = WELL_KNOWN.get(type_name)
        if well_known is not None and well_known.shape == "message":
            return well_known.kind  # Empty and Any are runtime classes
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
    check_kind: str
    encode_guard: str = ""
    decode_guard: str = ""
    scalar: Scalar | None = None
    wrapper: bool = False
    enum_members: dict[str, str] | None = None
    enum: EnumDescriptorProto | None = None

    @classmethod
    def of_scalar(cls, scalar: Scalar, *, wrapper: bool = False) -> _Element:
        return cls(
            shape="scalar",
            kind=scalar.kind,
            annotation=scalar.annotation,
            check_kind=scalar.kind,
            encode_guard=scalar.encode_guard(),
            decode_guard=scalar.decode_guard(),
            scalar=scalar,
            wrapper=wrapper,
        )


@dataclass(frozen=True)
class _EnumDefault:
    name: str
    number: int


def _enum_number(value: object) -> int:
    return value.number if isinstance(value, _EnumDefault) else 0


def _is_zero(value: object) -> bool:
    if isinstance(value, _EnumDefault):
        return value.number == 0
    if isinstance(value, float):
        return value == 0.0 and str(value)[0] != "-"
    return not value


def _parse_default(proto_type: int, text: str) -> object:
    if proto_type in (F.TYPE_FLOAT, F.TYPE_DOUBLE):
        return float(text)  # "inf", "-inf" and "nan" parse too
    if proto_type == F.TYPE_BOOL:
        return text == "true"
    if proto_type == F.TYPE_STRING:
        return text
    if proto_type == F.TYPE_BYTES:
        return text_encoding.CUnescape(text)
    return int(text, 0)


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
