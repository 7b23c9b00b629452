"""Diagnostics: what protoc and the generator report about a .proto file."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["CodegenError", "Diagnostic"]


@dataclass(frozen=True)
class Diagnostic:
    """One message about a file; `line` and `col` are 1-based, 0 when unknown."""

    file: str
    line: int
    col: int
    message: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        where = self.file if not self.line else f"{self.file}:{self.line}:{self.col}"
        prefix = "warning: " if self.severity == "warning" else ""
        return f"{where}: {prefix}{self.message}"


class CodegenError(Exception):
    """Generation failed; `diagnostics` holds the errors (and any warnings before them)."""

    def __init__(self, diagnostics: Sequence[Diagnostic]) -> None:
        self.diagnostics = tuple(diagnostics)
        super().__init__("\n".join(str(d) for d in self.diagnostics))
