"""The pipeline: parse .proto files, build models, render modules; write or check them.

`generate()` works in memory and is deterministic: the same inputs give byte-identical output.
`write()` and `check()` compare that output with a directory on disk.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from . import naming
from .build import build
from .diagnostics import CodegenError, Diagnostic
from .parser import canonical_name, parse
from .render import PACKAGE_INIT, render_module

__all__ = ["Generation", "check", "generate", "write"]


@dataclass(frozen=True)
class Generation:
    """The generated modules, keyed by path relative to the output directory."""

    modules: dict[str, str]
    #: `__init__.py` files every output folder needs; created only where missing.
    packages: tuple[str, ...]
    #: modules the generated ones import but that were not generated here, with their .proto
    dependencies: dict[str, str]
    warnings: tuple[Diagnostic, ...]


def generate(protos: Sequence[Path | str], includes: Sequence[Path | str] = ()) -> Generation:
    """Generate the modules for `protos`, found through the -I roots `includes`.

    Without `includes`, each file's own folder is its root. Raises CodegenError.
    """
    paths = [Path(proto) for proto in protos]
    roots = [Path(root) for root in includes] or _own_folders(paths)
    parsed = parse(paths, roots)
    display = _display_names(paths, parsed.targets, roots)
    models, warnings = build(parsed.files, parsed.targets, display)

    modules: dict[str, str] = {}
    owners: dict[str, str] = {}
    for model in models:
        if model.path in owners:
            message = f"{model.proto_name} and {owners[model.path]} both map to {model.path}"
            raise CodegenError([Diagnostic(display[model.proto_name], 0, 0, message)])
        owners[model.path] = model.proto_name
        modules[model.path] = render_module(model)

    packages = sorted(
        {
            "/".join((*model.module[:depth], "__init__.py"))
            for model in models
            for depth in range(len(model.module))
        }
    )
    dependencies = {
        "/".join(naming.module_parts(imported.proto_name)) + ".py": imported.proto_name
        for model in models
        for imported in (*model.imports, *model.reexports)
    }
    for path in modules:
        dependencies.pop(path, None)
    return Generation(modules, tuple(packages), dependencies, (*parsed.warnings, *warnings))


def _own_folders(paths: Sequence[Path]) -> list[Path]:
    folders: list[Path] = []
    for path in paths:
        if path.parent not in folders:
            folders.append(path.parent)
    return folders


def _display_names(
    paths: Sequence[Path], targets: Sequence[str], roots: Sequence[Path]
) -> dict[str, str]:
    """Canonical proto name -> the path as the user gave it (used in diagnostics)."""
    names = {}
    for path in paths:
        name = canonical_name(path, roots)
        if name is not None:
            names[name] = str(path)
    return {target: names.get(target, target) for target in targets}


def write(generation: Generation, out: Path) -> list[Path]:
    """Write the modules under `out` (and missing `__init__.py` files); return what changed.

    Files whose content is already right are not touched, so their mtimes stay.
    """
    changed = []
    for relative in generation.packages:
        path = out / relative
        if not path.exists():
            _write_atomic(path, PACKAGE_INIT)
            changed.append(path)
    for relative, source in generation.modules.items():
        path = out / relative
        if not path.is_file() or path.read_text(encoding="utf-8") != source:
            _write_atomic(path, source)
            changed.append(path)
    return changed


def check(generation: Generation, out: Path) -> list[Path]:
    """The files under `out` that `write()` would create or change."""
    stale = [out / relative for relative in generation.packages if not (out / relative).exists()]
    for relative, source in generation.modules.items():
        path = out / relative
        if not path.is_file() or path.read_text(encoding="utf-8") != source:
            stale.append(path)
    return stale


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
