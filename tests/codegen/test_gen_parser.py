"""Parsing .proto files with protoc: diagnostics, -I roots, warnings."""

from __future__ import annotations

from pathlib import Path

import pytest
from codegen_testutil import CASES

from rpcpoll.codegen import CodegenError, Diagnostic
from rpcpoll.codegen.parser import canonical_name, parse


def test_syntax_error_is_reported_with_file_line_and_column() -> None:
    proto = CASES / "syntax_error" / "bad.proto"
    with pytest.raises(CodegenError) as caught:
        parse([proto], [proto.parent])
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic == Diagnostic(str(proto), 7, 3, 'Expected ";".')
    assert str(diagnostic) == f'{proto}:7:3: Expected ";".'


def test_missing_import_reports_the_import_and_the_undefined_type() -> None:
    proto = CASES / "missing_import" / "missing.proto"
    with pytest.raises(CodegenError) as caught:
        parse([proto], [proto.parent])
    messages = [(d.file, d.line, d.message) for d in caught.value.diagnostics]
    assert ("does/not/exist.proto", 0, "File not found.") in messages
    assert (str(proto), 5, 'Import "does/not/exist.proto" was not found or had errors.') in messages
    assert (str(proto), 8, '"does.not.Exist" is not defined.') in messages


def test_missing_input_file_is_an_error_before_protoc_runs(tmp_path: Path) -> None:
    with pytest.raises(CodegenError) as caught:
        parse([tmp_path / "nope.proto"], [tmp_path])
    assert [str(d) for d in caught.value.diagnostics] == [
        f"{tmp_path / 'nope.proto'}: file not found"
    ]


def test_input_outside_every_include_root_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    proto = tmp_path / "b" / "x.proto"
    proto.write_text('syntax = "proto3";\n')
    with pytest.raises(CodegenError, match="not under any -I directory"):
        parse([proto], [tmp_path / "a"])


def test_first_include_root_decides_the_canonical_name(tmp_path: Path) -> None:
    proto = tmp_path / "acme" / "x.proto"
    proto.parent.mkdir()
    proto.write_text('syntax = "proto3";\npackage acme;\nmessage X {}\n')
    assert parse([proto], [tmp_path, proto.parent]).targets == ("acme/x.proto",)
    assert parse([proto], [proto.parent, tmp_path]).targets == ("x.proto",)
    assert canonical_name(proto, [tmp_path / "other", tmp_path]) == "acme/x.proto"


def test_warnings_do_not_fail_the_parse(tmp_path: Path) -> None:
    proto = tmp_path / "w.proto"
    proto.write_text(
        'syntax = "proto3";\nimport "google/protobuf/empty.proto";\nmessage W { int32 a = 1; }\n'
    )
    result = parse([proto], [tmp_path])
    assert result.targets == ("w.proto",)
    (warning,) = result.warnings
    assert warning.severity == "warning"
    assert (warning.line, warning.col) == (2, 1)
    assert "unused" in warning.message
    assert str(warning).startswith(f"{proto}:2:1: warning: ")


def test_dependencies_come_first_and_well_known_imports_resolve_offline() -> None:
    proto = CASES / "well_known" / "wkt.proto"
    result = parse([proto], [proto.parent])
    names = [file.name for file in result.files]
    assert names[-1] == "wkt.proto"
    assert "google/protobuf/timestamp.proto" in names[:-1]
