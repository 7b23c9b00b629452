"""`rpcpoll gen`: files written, diagnostics printed as file:line:col: message, exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from codegen_testutil import CASES

from rpcpoll.cli import main


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["gen", *args])
    return result.exit_code, result.stdout, result.stderr


def test_gen_writes_the_module_and_package_files(tmp_path: Path) -> None:
    code, out, err = run(str(CASES / "scalars" / "scalars.proto"), "-o", str(tmp_path))
    assert code == 0, err
    assert (tmp_path / "scalars_rpc.py").is_file() and (tmp_path / "__init__.py").is_file()
    assert f"wrote {tmp_path / 'scalars_rpc.py'}" in out
    assert err == ""


def test_include_roots_decide_the_output_layout(tmp_path: Path) -> None:
    root = CASES / "cross_package"
    code, _, err = run(
        "-I",
        str(root),
        str(root / "acme/shop/order.proto"),
        str(root / "acme/common/money.proto"),
        str(root / "acme/shop/public.proto"),
        "-o",
        str(tmp_path),
    )
    assert code == 0, err
    assert (tmp_path / "acme/shop/order_rpc.py").is_file()
    assert (tmp_path / "acme/common/__init__.py").is_file()


def test_syntax_errors_exit_1_with_clean_diagnostics(tmp_path: Path) -> None:
    proto = CASES / "syntax_error" / "bad.proto"
    code, out, err = run(str(proto), "-o", str(tmp_path))
    assert code == 1
    assert err == f'{proto}:7:3: Expected ";".\n'
    assert "Traceback" not in out + err
    assert not any(tmp_path.iterdir())


def test_missing_imports_exit_1_listing_each_problem(tmp_path: Path) -> None:
    proto = CASES / "missing_import" / "missing.proto"
    code, _, err = run(str(proto), "-o", str(tmp_path))
    assert code == 1
    assert err.splitlines() == [
        "does/not/exist.proto: File not found.",
        f'{proto}:5:1: Import "does/not/exist.proto" was not found or had errors.',
        f'{proto}:8:3: "does.not.Exist" is not defined.',
    ]


def test_missing_input_file_exits_1(tmp_path: Path) -> None:
    code, _, err = run(str(tmp_path / "nope.proto"), "-o", str(tmp_path))
    assert (code, err) == (1, f"{tmp_path / 'nope.proto'}: file not found\n")


def test_warnings_go_to_stderr_and_exit_0(tmp_path: Path) -> None:
    proto = CASES / "proto2_defaults" / "defaults.proto"
    code, _, err = run(str(proto), "-o", str(tmp_path))
    assert code == 0
    lines = err.splitlines()
    assert len(lines) == 2 and all(": warning: " in line and "is skipped" in line for line in lines)
    assert lines[0].startswith(f"{proto}:22:3: warning: group Legacy is skipped")


def test_a_missing_imported_module_is_a_warning(tmp_path: Path) -> None:
    root = CASES / "cross_package"
    code, _, err = run("-I", str(root), str(root / "acme/shop/order.proto"), "-o", str(tmp_path))
    assert code == 0
    assert "warning: the generated code imports acme/common/money_rpc.py" in err


def test_check_exits_1_when_files_differ_and_0_when_they_match(tmp_path: Path) -> None:
    proto = str(CASES / "scalars" / "scalars.proto")
    code, _, err = run(proto, "-o", str(tmp_path), "--check")
    assert code == 1 and "out of date" in err
    assert not (tmp_path / "scalars_rpc.py").exists()  # --check writes nothing
    assert run(proto, "-o", str(tmp_path))[0] == 0
    assert run(proto, "-o", str(tmp_path), "--check") == (0, "", "")
    (tmp_path / "scalars_rpc.py").write_text("# stale\n")
    code, _, err = run(proto, "-o", str(tmp_path), "--check")
    assert code == 1 and f"{tmp_path / 'scalars_rpc.py'}: out of date" in err


def test_regenerating_unchanged_output_writes_nothing(tmp_path: Path) -> None:
    proto = str(CASES / "scalars" / "scalars.proto")
    run(proto, "-o", str(tmp_path))
    assert run(proto, "-o", str(tmp_path)) == (0, "", "")


@pytest.mark.timeout(60)
def test_the_console_script_reports_errors_without_a_traceback(tmp_path: Path) -> None:
    proto = CASES / "syntax_error" / "bad.proto"
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from rpcpoll.cli import main; main()",
            "gen",
            str(proto),
            "-o",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr == f'{proto}:7:3: Expected ";".\n'
