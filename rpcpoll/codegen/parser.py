"""Parse .proto files into descriptors with the protoc bundled in grpcio-tools.

Facts about grpc_tools' protoc that this module relies on (checked with grpcio-tools 1.85):

- `python -m grpc_tools.protoc` runs protoc with the caller's arguments plus
  `-I<grpc_tools>/_proto`, the well-known types. Calling `grpc_tools.protoc.main()` in-process
  instead writes diagnostics from C++ straight to fd 2, treats argv[0] as the program name and
  installs import hooks for `*_pb2` modules, hence the subprocess (about 0.1 s).
- The first -I root that contains a file decides its canonical name (`a/b/x.proto`), so the
  user's roots go first and the bundled include directory last.
- `--include_imports` writes every dependency too, in topological order (dependencies first);
  `--include_source_info` keeps the comments and the source positions.
- Diagnostics go to stderr, one per line: `file:line:col: message` (1-based),
  `file: message` when there is no position, `file:line:col: warning: message` for warnings
  (which exit 0). Paths of input files are printed as they were passed.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from google.protobuf import descriptor_pb2

from .diagnostics import CodegenError, Diagnostic

__all__ = ["ParseResult", "bundled_include", "canonical_name", "parse"]

_POSITIONED = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): (?P<message>.*)$")
_UNPOSITIONED = re.compile(r"^(?P<file>[^:]+\.proto): (?P<message>.*)$")


@dataclass(frozen=True)
class ParseResult:
    """Every file protoc loaded (dependencies first) and the canonical names of the inputs."""

    files: tuple[descriptor_pb2.FileDescriptorProto, ...]
    targets: tuple[str, ...]
    warnings: tuple[Diagnostic, ...]


def bundled_include() -> Path:
    """The directory of the well-known .proto files shipped with grpcio-tools."""
    return Path(str(resources.files("grpc_tools") / "_proto"))


def canonical_name(path: Path, roots: Sequence[Path]) -> str | None:
    """`path` relative to the first root that contains it, with forward slashes."""
    resolved = path.resolve()
    for root in roots:
        try:
            return resolved.relative_to(root.resolve()).as_posix()
        except ValueError:
            continue
    return None


def parse(protos: Sequence[Path], includes: Sequence[Path]) -> ParseResult:
    """Run protoc over `protos` with the -I roots `includes` (in that order).

    Raises CodegenError with protoc's diagnostics when a file does not parse.
    """
    problems: list[Diagnostic] = []
    targets: list[str] = []
    for proto in protos:
        if not proto.is_file():
            problems.append(Diagnostic(str(proto), 0, 0, "file not found"))
            continue
        name = canonical_name(proto, includes)
        if name is None:
            roots = ", ".join(str(root) for root in includes) or "none"
            message = f"file is not under any -I directory (given: {roots})"
            problems.append(Diagnostic(str(proto), 0, 0, message))
        elif name not in targets:
            targets.append(name)
    if problems:
        raise CodegenError(problems)

    with tempfile.TemporaryDirectory(prefix="rpcpoll-") as tmp:
        out = Path(tmp) / "descriptors.pb"
        command = [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            *(f"-I{root}" for root in includes),
            f"-I{bundled_include()}",
            "--include_imports",
            "--include_source_info",
            f"--descriptor_set_out={out}",
            *(str(proto) for proto in protos),
        ]
        done = subprocess.run(
            command, capture_output=True, text=True, errors="replace", check=False
        )
        diagnostics = [
            _diagnostic(line, str(protos[0])) for line in done.stderr.splitlines() if line.strip()
        ]
        if done.returncode != 0 or not out.is_file():
            if not any(d.severity == "error" for d in diagnostics):
                message = f"protoc failed with exit status {done.returncode}"
                diagnostics.append(Diagnostic(str(protos[0]), 0, 0, message))
            raise CodegenError(diagnostics)
        descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    return ParseResult(tuple(descriptor_set.file), tuple(targets), tuple(diagnostics))


def _diagnostic(line: str, fallback_file: str) -> Diagnostic:
    line = line.rstrip()
    match = _POSITIONED.match(line)
    if match:
        file, message = match["file"], match["message"]
        position = int(match["line"]), int(match["col"])
    else:
        match = _UNPOSITIONED.match(line)
        file, message = (match["file"], match["message"]) if match else (fallback_file, line)
        position = 0, 0
    if message.startswith("warning: "):
        return Diagnostic(file, *position, message.removeprefix("warning: "), "warning")
    return Diagnostic(file, *position, message)
