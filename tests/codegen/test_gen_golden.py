"""Golden files: the modules generated from idl/ are checked in and must not drift.

They are the bundled example modules in rpcpoll/examples/ (which `rpcpoll serve` runs by
default), so there is one checked-in copy of each. Set RPCPOLL_UPDATE_GOLDEN=1 to rewrite them
after an intended change, then review the diff.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from codegen_testutil import Generated

from rpcpoll.codegen import generate

REPO = Path(__file__).resolve().parents[2]
IDL = REPO / "idl"
GOLDEN = REPO / "rpcpoll" / "examples"


def _generated() -> dict[str, str]:
    protos = sorted(IDL.glob("**/*.proto"))
    return generate(protos, [IDL]).modules


def test_idl_modules_match_the_golden_files() -> None:
    modules = _generated()
    assert modules, "idl/ has no .proto files"
    if os.environ.get("RPCPOLL_UPDATE_GOLDEN"):
        for path, source in modules.items():
            (GOLDEN / path).parent.mkdir(parents=True, exist_ok=True)
            (GOLDEN / path).write_text(source, encoding="utf-8")
    golden = {
        path.relative_to(GOLDEN).as_posix(): path.read_text(encoding="utf-8")
        for path in GOLDEN.glob("**/*_rpc.py")
    }
    assert set(golden) == set(modules), "golden files and idl/ disagree; see the module docstring"
    for path, source in modules.items():
        assert source == golden[path], f"{path} differs from its golden file"


@pytest.mark.timeout(120)
def test_golden_modules_pass_mypy_strict() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--follow-imports=silent",
            *(str(p) for p in sorted(GOLDEN.glob("**/*_rpc.py"))),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_golden_modules_pass_ruff() -> None:
    files = [str(p) for p in sorted(GOLDEN.glob("**/*_rpc.py"))]
    lint = subprocess.run(
        [sys.executable, "-m", "ruff", "check", *files],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", *files],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


@pytest.mark.timeout(120)
def test_every_case_module_passes_mypy_strict(cases: dict[str, Generated]) -> None:
    files = sorted(str(p) for case in cases.values() for p in case.path.glob("**/*_rpc.py"))
    roots = sorted({str(case.root) for case in cases.values()})
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--follow-imports=silent",
            *files,
        ],
        cwd=roots[0],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "MYPYPATH": os.pathsep.join(roots)},
    )
    assert done.returncode == 0, done.stdout + done.stderr
