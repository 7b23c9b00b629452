"""The wheel ships the templates, and `rpcpoll gen` works from an installed wheel."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = sorted(path.name for path in (REPO / "templates").glob("*.j2"))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(out)],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("rpcpoll-*.whl")
    return built


@pytest.mark.timeout(120)
def test_wheel_contains_every_template(wheel: Path) -> None:
    assert TEMPLATES, "no templates in the checkout"
    names = zipfile.ZipFile(wheel).namelist()
    assert sorted(n.rpartition("/")[2] for n in names if n.startswith("rpcpoll/_templates/")) == (
        TEMPLATES
    )
    assert "rpcpoll/py.typed" in names
    assert "rpcpoll/message/__init__.py" in names and "rpcpoll/service.py" in names
    # `rpcpoll demo` generates from the bundled example IDL, so it ships too
    assert "rpcpoll/_idl/echo.proto" in names


@pytest.mark.timeout(120)
def test_installed_wheel_generates_code_from_another_directory(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    (work / "hello.proto").write_text(
        'syntax = "proto3";\npackage hello;\nmessage Hi { string name = 1; }\n'
        "service Greeter { rpc Greet(Hi) returns (Hi); }\n"
    )
    script = (
        "import rpcpoll, sys\n"
        "from rpcpoll.codegen.templates import template_dir\n"
        "print(rpcpoll.__file__)\nprint(template_dir())\n"
        "from rpcpoll.cli import main\n"
        "main(['gen', 'hello.proto', '-o', 'out'])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    package_file, templates = done.stdout.splitlines()[:2]
    assert package_file.startswith(str(target)) and templates.startswith(str(target))
    assert (work / "out" / "hello_rpc.py").is_file()
    check = subprocess.run(
        [
            sys.executable,
            "-c",
            "from out.hello_rpc import Hi; print(Hi.from_bytes(Hi(name='x').to_bytes()).name)",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert check.stdout.strip() == "x"
