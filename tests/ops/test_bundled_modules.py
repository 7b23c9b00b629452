"""The generated modules rpcpoll ships for its own services must match their .proto files.

rpcpoll/protos/ holds the .proto files (the standard grpc.health.v1 and rpcpoll's reflection
service); their modules are checked in next to the code that uses them. Set
RPCPOLL_UPDATE_GOLDEN=1 to rewrite them after an intended change (to the .proto or to the
generator), then review the diff.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rpcpoll.codegen import generate

REPO = Path(__file__).resolve().parents[2]
PROTOS = REPO / "rpcpoll" / "protos"
#: generated path (relative to the output root) -> the checked-in copy
GOLDEN = {
    "grpc/health/v1/health_rpc.py": REPO / "rpcpoll/health/health_rpc.py",
    "rpcpoll/reflection/v1/reflection_rpc.py": REPO / "rpcpoll/reflection/reflection_rpc.py",
}


def test_bundled_modules_match_their_protos() -> None:
    protos = sorted(PROTOS.glob("**/*.proto"))
    modules = generate(protos, [PROTOS]).modules
    if os.environ.get("RPCPOLL_UPDATE_GOLDEN"):
        for path, source in modules.items():
            GOLDEN[path].write_text(source, encoding="utf-8")
    assert set(modules) == set(GOLDEN), "rpcpoll/protos and the golden table disagree"
    for path, source in modules.items():
        assert GOLDEN[path].read_text(encoding="utf-8") == source, f"{GOLDEN[path]} is stale"


@pytest.mark.timeout(120)
def test_bundled_modules_pass_mypy_strict() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--follow-imports=silent"]
        + [str(path) for path in GOLDEN.values()],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
