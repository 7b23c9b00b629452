"""Fixtures for the code generator's tests: generated case modules and their protobuf twins.

Generating runs protoc in a subprocess (about 0.1 s), so the case corpus is generated once per
session into one package; tests that need their own .proto use the `gen` fixture.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # for codegen_testutil

from codegen_testutil import (
    CASES,
    GOOD_CASES,
    Generated,
    compile_pb2,
    generate_package,
)


@pytest.fixture(scope="session")
def generated_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A directory on sys.path for generated packages."""
    root = tmp_path_factory.mktemp("generated")
    sys.path.insert(0, str(root))
    yield root
    sys.path.remove(str(root))


@pytest.fixture(scope="session")
def cases(generated_root: Path) -> dict[str, Generated]:
    """Every good case of tests/codegen/cases, generated, by case name."""
    return {
        name: generate_package(
            generated_root, [CASES / p for p in protos], [CASES / include], prefix=f"case_{name}"
        )
        for name, (protos, include) in GOOD_CASES.items()
    }


@pytest.fixture(scope="session")
def pb2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], ModuleType]]:
    """protobuf's own classes for the cases, by module name (e.g. "scalars_pb2")."""
    import importlib

    root = tmp_path_factory.mktemp("pb2")
    modules = []
    for protos, include in GOOD_CASES.values():
        compile_pb2(root, [CASES / p for p in protos], CASES / include)
        for proto in protos:
            relative = (CASES / proto).relative_to(CASES / include).with_suffix("")
            modules.append(".".join(relative.parts) + "_pb2")
    sys.path.insert(0, str(root))
    # Import them all: their messages are then in protobuf's default pool, where
    # codegen_testutil.pb_class_for finds the twin of any generated class.
    for module in modules:
        importlib.import_module(module)
    yield importlib.import_module
    sys.path.remove(str(root))


@pytest.fixture
def gen(generated_root: Path, tmp_path: Path) -> Callable[..., ModuleType]:
    """Generate .proto sources given as text and import the module of the first one.

    `gen({"x.proto": "...", "y.proto": "..."})` writes the files under a fresh -I root.
    """

    def generate(sources: dict[str, str] | str) -> ModuleType:
        files = {"test.proto": sources} if isinstance(sources, str) else sources
        for name, text in files.items():
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_text(text)
        package = generate_package(generated_root, [tmp_path / name for name in files], [tmp_path])
        first = next(iter(files)).removesuffix(".proto").replace("/", ".")
        return package.module(first + "_rpc")

    return generate
