"""Code generation: .proto -> protoc descriptor set -> model -> Jinja2 templates -> Python.

`generate()` runs the pipeline in memory; `write()` and `check()` apply it to a directory.
The `rpcpoll gen` command (`rpcpoll.codegen.cli`) wraps the three.
"""

from .diagnostics import CodegenError, Diagnostic
from .generator import Generation, check, generate, write

__all__ = ["CodegenError", "Diagnostic", "Generation", "check", "generate", "write"]
