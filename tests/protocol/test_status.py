"""Status codes: one error class per gRPC code, found by code, exported from `rpcpoll`."""

from __future__ import annotations

import pickle

import pytest

import rpcpoll
from rpcpoll import RpcError, StatusCode, error_class
from rpcpoll.examples.echo_rpc import EchoRequest, EchoServiceClient, EchoServiceHandler
from rpcpoll.service import CallContext, LocalChannel

ERROR_CODES = [code for code in StatusCode if code is not StatusCode.OK]


@pytest.mark.parametrize("code", ERROR_CODES, ids=lambda code: code.name)
def test_every_error_code_has_its_own_class_exported_from_rpcpoll(code: StatusCode) -> None:
    cls = error_class(code)
    assert cls is not RpcError and cls.code is code
    assert getattr(rpcpoll, cls.__name__) is cls
    assert cls.__name__ in rpcpoll.__all__
    built = RpcError(code, "why")
    assert type(built) is cls and built.code is code and built.message == "why"
    assert type(cls("why")) is cls and cls("why").code is code
    assert type(pickle.loads(pickle.dumps(built))) is cls


def test_the_new_classes_are_named_after_their_codes() -> None:
    assert error_class(StatusCode.FAILED_PRECONDITION) is rpcpoll.FailedPreconditionError
    assert error_class(StatusCode.ABORTED) is rpcpoll.AbortedError
    assert error_class(StatusCode.OUT_OF_RANGE) is rpcpoll.OutOfRangeError
    assert error_class(StatusCode.DATA_LOSS) is rpcpoll.DataLossError


def test_unknown_numbers_map_to_unknown_and_ok_to_the_root() -> None:
    assert error_class(99) is rpcpoll.UnknownError
    assert type(RpcError(99, "x")) is rpcpoll.UnknownError
    assert error_class(StatusCode.OK) is RpcError


@pytest.mark.parametrize("code", ERROR_CODES, ids=lambda code: code.name)
def test_a_client_raises_the_specific_class_for_each_code(code: StatusCode) -> None:
    class Failing(EchoServiceHandler):
        def echo(self, request: EchoRequest, context: CallContext) -> None:  # type: ignore[override]
            raise RpcError(code, "nope")

    with (
        EchoServiceClient(LocalChannel(Failing())) as client,
        pytest.raises(error_class(code)) as caught,
    ):
        client.echo(EchoRequest())
    assert caught.value.code is code


def test_server_is_exported_from_the_top_package() -> None:
    from rpcpoll.server import Server

    assert rpcpoll.Server is Server
    with pytest.raises(AttributeError):
        rpcpoll.NoSuchThing  # noqa: B018
