"""`rpcpoll call` and `rpcpoll list` against a live `rpcpoll serve`: JSON in and out, the three
schema sources (the server's describe service, --module, --proto), metadata, exit statuses."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from ops_testutil import Serve, run

from rpcpoll.demo import _progress

REPO = Path(__file__).resolve().parents[2]
ECHO = "echo.EchoService/Echo"
PROTOS = Path(__file__).parent / "protos"


def test_call_without_local_idl_uses_the_describe_service(server: Serve) -> None:
    code, out, err = run("call", server.address, ECHO, "-d", '{"message": "hi", "payload": "AAE="}')
    assert code == 0, err
    assert json.loads(out) == {"message": "hi", "payload": "AAE="}


@pytest.mark.parametrize(
    "source",
    [
        ["--module", "rpcpoll.examples.echo_rpc"],
        ["--module", str(REPO / "rpcpoll" / "examples" / "echo_rpc.py")],
        ["--proto", str(REPO / "idl" / "echo.proto")],
        ["--proto", str(REPO / "idl" / "echo.proto"), "-I", str(REPO / "idl")],
    ],
    ids=["module", "module-file", "proto", "proto-with-root"],
)
def test_call_with_a_local_schema(server: Serve, source: list[str]) -> None:
    code, out, err = run("call", server.address, ECHO, "-d", '{"message": "local"}', *source)
    assert code == 0, err
    assert json.loads(out) == {"message": "local"}


def test_call_reads_the_request_from_a_file_or_stdin(server: Serve, tmp_path: Path) -> None:
    request = tmp_path / "request.json"
    request.write_text('{"message": "from a file"}')
    assert json.loads(run("call", server.address, ECHO, "-d", f"@{request}")[1]) == {
        "message": "from a file"
    }
    code, out, _err = run("call", server.address, ECHO, "-d", "@-", stdin='{"message": "piped"}')
    assert (code, json.loads(out)) == (0, {"message": "piped"})


def test_call_sends_metadata_and_shows_the_reply_metadata(server: Serve) -> None:
    code, out, err = run("call", server.address, ECHO, "-H", "tenant: acme", "-H", "k:v", "-v")
    assert code == 0, err
    assert "seen-tenant: acme" in err.splitlines() and "seen-k: v" in err.splitlines()
    assert json.loads(out) == {}


@pytest.mark.parametrize(
    ("code", "name"), [(9, "FAILED_PRECONDITION"), (5, "NOT_FOUND"), (16, "UNAUTHENTICATED")]
)
def test_an_rpc_error_exits_with_64_plus_its_code(server: Serve, code: int, name: str) -> None:
    status, out, err = run("call", server.address, ECHO, "-d", f'{{"message": "fail:{code}"}}')
    assert status == 64 + code
    assert out == "" and err == f"ERROR: {name}: asked to fail\n"


def test_a_deadline_exceeded_exits_68(server: Serve) -> None:
    data = '{"message": "sleep:2"}'
    status, _out, err = run("call", server.address, ECHO, "-d", data, "--timeout", "0.3")
    assert status == 68 and err.startswith("ERROR: DEADLINE_EXCEEDED")


def test_nothing_listening_exits_78(unused_address: str) -> None:
    status, _out, err = run("call", unused_address, ECHO, "--module", "rpcpoll.examples.echo_rpc")
    assert status == 78 and err.startswith("ERROR: UNAVAILABLE") and "Traceback" not in err
    status, _out, err = run("call", unused_address, ECHO)  # asking for the schema fails too
    assert status == 78 and "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([ECHO, "-d", "{nope"], "is not valid JSON"),
        ([ECHO, "-d", '{"mesage": "x"}'], "no field named 'mesage'"),
        ([ECHO, "-d", '{"message": 5}'], "bad request for echo.EchoService/Echo"),
        ([ECHO, "-d", "@/no/such/file.json"], "cannot read /no/such/file.json"),
        (["echo.EchoService/Eco"], "has no method 'Eco' (did you mean Echo?)"),
        (["echo.EchoServce/Echo"], "did you mean echo.EchoService?"),
        (["Echo"], "expected pkg.Service/Method"),
        ([ECHO, "-H", "novalue"], "expected KEY:VALUE"),
        ([ECHO, "--module", "no_such_module_x"], "cannot import 'no_such_module_x'"),
        ([ECHO, "--module", "json"], "defines no service"),
        ([ECHO, "--proto", "/no/such.proto"], "file not found"),
        ([ECHO, "--module", "m", "--proto", "p.proto"], "not both"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(server: Serve, args: list[str], message: str) -> None:
    status, out, err = run("call", server.address, *args)
    assert status == 2, err
    assert message in err and "Traceback" not in err and out == ""


def test_a_streaming_rpc_is_refused_clearly(server: Serve) -> None:
    status, _out, err = run("call", server.address, "grpc.health.v1.Health/Watch")
    assert status == 1
    assert err.strip().endswith("streaming rpcs need rpcpoll >= 0.2")


def test_call_reaches_the_health_service_through_describe(server: Serve) -> None:
    status, out, _err = run("call", server.address, "grpc.health.v1.Health/Check")
    assert (status, json.loads(out)) == (0, {"status": "SERVING"})


def test_list_from_the_server_shows_what_it_serves(server: Serve) -> None:
    status, out, err = run("list", server.address)
    assert status == 0, err
    assert out.splitlines() == [
        "echo.EchoService",
        "  Echo(echo.EchoRequest) returns (echo.EchoResponse)",
        "grpc.health.v1.Health",
        "  Check(grpc.health.v1.HealthCheckRequest) returns (grpc.health.v1.HealthCheckResponse)",
        "  Watch(grpc.health.v1.HealthCheckRequest) returns"
        " (stream grpc.health.v1.HealthCheckResponse)",
        "rpcpoll.reflection.v1.Reflection",
        "  Describe(rpcpoll.reflection.v1.DescribeRequest) returns"
        " (rpcpoll.reflection.v1.DescribeResponse)",
    ]
    status, out, _err = run("list", server.address, "echo.EchoService")
    assert status == 0 and out.splitlines()[0] == "echo.EchoService" and len(out.splitlines()) == 2


def test_list_a_proto_with_imports_and_streams() -> None:
    status, out, err = run(
        "list", "--proto", str(PROTOS / "shop" / "orders.proto"), "-I", str(PROTOS)
    )
    assert status == 0, err
    assert out.splitlines() == [
        "shop.v1.Orders",
        "  Get(shop.v1.GetOrder) returns (shop.v1.Order)",
        "  Put(shop.v1.Order) returns (google.protobuf.Empty)",
        "  Follow(shop.v1.GetOrder) returns (stream shop.v1.Order)",
        "  Upload(stream shop.v1.Order) returns (google.protobuf.Empty)",
    ]


def test_list_needs_a_source() -> None:
    status, _out, err = run("list")
    assert status == 2 and "give an ADDRESS" in err


def test_without_describe_the_server_says_so(handler_dir: Path) -> None:
    served = Serve("ops_service:OpsEcho", "--no-describe", cwd=handler_dir)
    try:
        status, _out, err = run("call", served.address, ECHO)
        listed = run("list", served.address)[0]
        module = run("call", served.address, ECHO, "--module", "rpcpoll.examples.echo_rpc")[0]
    finally:
        served.stop()
    assert status == 76 and "--no-describe" in err
    assert listed == 76 and module == 0


def test_the_demo_progress_is_plain_lines_off_a_terminal() -> None:
    out = io.StringIO()
    for done in range(1, 101):
        _progress(out, done, 100)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines[0] == "     10/100 calls (10%)" and lines[-1] == "     100/100 calls (100%)"
    assert len(lines) == 10
