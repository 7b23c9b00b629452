"""Turn descriptors or .proto files into imported generated modules, in a scratch package.

`GeneratedPackage` is a temporary folder on `sys.path` holding one uniquely named package;
`load(generation)` writes a code generator's output into it and imports every module. The
modules come from `rpcpoll.codegen.generate()` for .proto files, or from
`generation_from_descriptors()` for a FileDescriptorSet (a server's describe answer): the
generator's own model and templates, without protoc.
"""

from __future__ import annotations

import importlib
import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from types import ModuleType, TracebackType

from google.protobuf import descriptor_pb2

from ..codegen import Generation, write
from ..codegen.build import build
from ..codegen.naming import module_parts
from ..codegen.render import render_module

__all__ = ["GeneratedPackage", "generation_from_descriptors"]


def generation_from_descriptors(files: descriptor_pb2.FileDescriptorSet) -> Generation:
    """The modules `rpcpoll gen` would write for every file of the set (well-known types
    excepted: the runtime has them). Raises CodegenError."""
    targets = [f.name for f in files.file if not f.name.startswith("google/protobuf/")]
    models, warnings = build(list(files.file), targets)
    modules = {model.path: render_module(model) for model in models}
    packages = sorted(
        {
            "/".join((*model.module[:depth], "__init__.py"))
            for model in models
            for depth in range(len(model.module))
        }
    )
    return Generation(modules, tuple(packages), {}, tuple(warnings))


class GeneratedPackage:
    """A scratch package for generated modules; removed (files and imports) on `close()`."""

    def __init__(self, prefix: str = "rpcpoll_loaded") -> None:
        self.root = Path(tempfile.mkdtemp(prefix="rpcpoll-"))
        self.name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        sys.path.insert(0, str(self.root))

    def load(self, generation: Generation) -> list[ModuleType]:
        """Write the generated modules and import each one."""
        write(generation, self.root / self.name)
        (self.root / self.name / "__init__.py").touch()
        importlib.invalidate_caches()
        loaded = []
        for path in sorted(generation.modules):
            dotted = ".".join(Path(path).with_suffix("").parts)
            loaded.append(importlib.import_module(f"{self.name}.{dotted}"))
        return loaded

    def module_for(self, proto_name: str) -> ModuleType:
        """The imported module of a .proto file name ("a/b/x.proto")."""
        return importlib.import_module(".".join((self.name, *module_parts(proto_name))))

    def close(self) -> None:
        if str(self.root) in sys.path:
            sys.path.remove(str(self.root))
        for name in [n for n in sys.modules if n == self.name or n.startswith(self.name + ".")]:
            del sys.modules[name]
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> GeneratedPackage:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
