"""Encode + decode round trips of generated messages: rpcpoll against protobuf's _pb2 classes.

Both sides are generated in this run from the same .proto: rpcpoll's module with
`rpcpoll.codegen`, protobuf's with grpcio-tools' protoc (`--python_out`). For each message the
script prints nanoseconds per round trip (`from_bytes(to_bytes())` against
`FromString(SerializeToString())`) and the ratio rpcpoll / protobuf.

The second table adds reading every field of the decoded message: protobuf's upb runtime
decodes into C structures and creates Python objects only when a field is read, while msgspec
builds them while decoding. The third adds building the message from its values first, which
is what a client does per request and a handler per response: protobuf checks values as they
are assigned (so its checks are in "build"), rpcpoll when it encodes (in "round trip").

Targets (issue 10): round trip <= 1.0x protobuf for the 10-field message, round trip + read
<= 0.5x, and the 1 KiB echo round trip <= 1.0x.

    python bench/bench_codegen.py [--number N] [--repeat R]
"""

from __future__ import annotations

import argparse
import importlib
import platform
import subprocess
import sys
import tempfile
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

from google.protobuf.internal import api_implementation

from rpcpoll.codegen import generate, write

REPO = Path(__file__).resolve().parents[1]

# The representative message: ten fields of the kinds services use most.
SAMPLE_PROTO = """
syntax = "proto3";
package bench_codegen;

message Inner {
  int32 code = 1;
  string label = 2;
}

message Sample {
  int32 id = 1;
  string name = 2;
  double score = 3;
  bool active = 4;
  bytes token = 5;
  Inner inner = 6;
  repeated int32 values = 7;
  map<string, int32> counts = 8;
  int64 created_ms = 9;
  uint32 flags = 10;
}
"""

SAMPLE = {
    "id": 12345,
    "name": "hello world",
    "score": 3.14,
    "active": True,
    "token": b"\x01" * 16,
    "values": [1, 2, 3, 4, 5],
    "counts": {"a": 1, "b": 2},
    "created_ms": 1_700_000_000_000,
    "flags": 7,
}
ECHO = {"message": "hello", "payload": b"x" * 1024}


def build(workdir: Path) -> tuple[Any, Any, Any, Any]:
    """Generate both sides into `workdir` and import them: (rpcpoll sample, pb sample, ...)."""
    protos = workdir / "protos"
    protos.mkdir()
    (protos / "bench_codegen.proto").write_text(SAMPLE_PROTO)
    (protos / "echo.proto").write_text((REPO / "idl" / "echo.proto").read_text())
    files = [protos / "bench_codegen.proto", protos / "echo.proto"]
    write(generate(files, [protos]), workdir / "rpcpoll_gen")
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{protos}", f"--python_out={workdir}"]
        + [str(f) for f in files],
        check=True,
    )
    sys.path.insert(0, str(workdir))
    ours_sample = importlib.import_module("rpcpoll_gen.bench_codegen_rpc")
    ours_echo = importlib.import_module("rpcpoll_gen.echo_rpc")
    return (
        ours_sample,
        importlib.import_module("bench_codegen_pb2"),
        ours_echo,
        (importlib.import_module("echo_pb2")),
    )


def per_call_ns(function: Callable[[], object], number: int, repeat: int) -> float:
    """The best of `repeat` runs of `number` calls, in nanoseconds per call."""
    return min(timeit.repeat(function, number=number, repeat=repeat)) / number * 1e9


def read_sample(message: Any) -> tuple[object, ...]:
    return (
        message.id,
        message.name,
        message.score,
        message.active,
        message.token,
        message.inner.code,
        message.inner.label,
        list(message.values),
        dict(message.counts),
        message.created_ms,
        message.flags,
    )


def read_echo(message: Any) -> tuple[object, ...]:
    return message.message, message.payload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--number", type=int, default=20_000, help="calls per timing run")
    parser.add_argument("--repeat", type=int, default=7, help="timing runs (the best is kept)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="rpcpoll-bench-") as tmp:
        ours_sample, pb_sample, ours_echo, pb_echo = build(Path(tmp))

        sample = ours_sample.Sample(inner=ours_sample.Inner(code=5, label="in"), **SAMPLE)
        pb_s = pb_sample.Sample(inner=pb_sample.Inner(code=5, label="in"), **SAMPLE)
        echo = ours_echo.EchoRequest(**ECHO)
        pb_e = pb_echo.EchoRequest(**ECHO)
        cases = [
            ("10-field message", sample, pb_s, read_sample),
            ("echo, 1 KiB payload", echo, pb_e, read_echo),
        ]
        for _, ours, theirs, read in cases:  # both sides must agree before they are timed
            assert read(type(ours).from_bytes(ours.to_bytes())) == read(
                type(theirs).FromString(theirs.SerializeToString())
            )

        print(
            f"Python {platform.python_version()} ({platform.machine()}), "
            f"protobuf {api_implementation.Type()} runtime; best of {args.repeat} x "
            f"{args.number} calls"
        )
        builders = {
            "10-field message": (
                lambda: ours_sample.Sample(inner=ours_sample.Inner(code=5, label="in"), **SAMPLE),
                lambda: pb_sample.Sample(inner=pb_sample.Inner(code=5, label="in"), **SAMPLE),
            ),
            "echo, 1 KiB payload": (
                lambda: ours_echo.EchoRequest(**ECHO),
                lambda: pb_echo.EchoRequest(**ECHO),
            ),
        }
        tables = (
            ("round trip", False, False),
            ("round trip + read every field", True, False),
            ("build + round trip + read every field", True, True),
        )
        for title, with_read, with_build in tables:
            print(f"\n{title}:")
            print(
                f"  {'message':<22}{'rpcpoll ns':>12}{'protobuf ns':>13}{'ratio':>8}"
                f"{'rpcpoll B':>11}{'protobuf B':>12}"
            )
            for name, ours, theirs, read in cases:
                build_ours, build_theirs = builders[name]
                if with_build:

                    def ours_call(b: Any = build_ours, r: Any = read) -> object:
                        m = b()
                        return r(type(m).from_bytes(m.to_bytes()))

                    def theirs_call(b: Any = build_theirs, r: Any = read) -> object:
                        m = b()
                        return r(type(m).FromString(m.SerializeToString()))
                elif with_read:

                    def ours_call(m: Any = ours, r: Any = read) -> object:
                        return r(type(m).from_bytes(m.to_bytes()))

                    def theirs_call(m: Any = theirs, r: Any = read) -> object:
                        return r(type(m).FromString(m.SerializeToString()))
                else:

                    def ours_call(m: Any = ours) -> object:
                        return type(m).from_bytes(m.to_bytes())

                    def theirs_call(m: Any = theirs) -> object:
                        return type(m).FromString(m.SerializeToString())

                a = per_call_ns(ours_call, args.number, args.repeat)
                b = per_call_ns(theirs_call, args.number, args.repeat)
                print(
                    f"  {name:<22}{a:>12.0f}{b:>13.0f}{a / b:>7.2f}x"
                    f"{len(ours.to_bytes()):>11}{len(theirs.SerializeToString()):>12}"
                )
        print(
            "\ntargets: 10-field round trip <= 1.00x, 10-field round trip + read <= 0.50x, "
            "echo round trip <= 1.00x"
        )


if __name__ == "__main__":
    main()
