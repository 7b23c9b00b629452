"""Properties over every message class of the case corpus (tests/codegen/cases).

- Round trip: random valid messages come back equal through bytes and through dicts.
- Bad input: random bytes, mutated valid encodings and msgpack documents keyed by real field
  numbers with values of any type either decode or raise `rpcpoll.message.DecodeError`, never
  another exception; random dicts given to `from_dict` raise TypeError or ValueError or build a
  message.

What decodes must encode again, unchanged (not merely "raise TypeError/ValueError"): the
receiver-side checks are the sender-side ones (types and ranges by msgspec, then float32
ranges, oneofs, closed enums, Duration ranges and required fields by the generated code), so
a payload a server accepts is a message it can send on, e.g. as a proxy, and its re-encoding
decodes to the same bytes. (NaN does not equal itself, so bytes are compared, not messages.)
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from codegen_testutil import CLASS_NAMES, Generated, corpus_classes, json_inputs, messages
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rpcpoll.message as rm
from rpcpoll.message import DecodeError

FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def _class(cases: dict[str, Generated], full_name: str) -> type[rm.Message]:
    return corpus_classes(cases)[full_name]


def test_the_corpus_has_every_expected_message(cases: dict[str, Generated]) -> None:
    assert list(corpus_classes(cases)) == CLASS_NAMES


@pytest.mark.parametrize("full_name", CLASS_NAMES)
def test_random_messages_round_trip_through_bytes_and_dicts(
    cases: dict[str, Generated], full_name: str
) -> None:
    cls = _class(cases, full_name)

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(messages(cls))
    def run(message: rm.Message) -> None:
        data = message.to_bytes()
        assert cls.from_bytes(data) == message
        assert cls.from_bytes(memoryview(data)) == message
        assert cls.from_bytes(cls.from_bytes(data).to_bytes()) == message
        assert cls.from_dict(message.to_dict()) == message
        assert cls.from_json(message.to_json()) == message

    run()


# -- bad input ----------------------------------------------------------------------------------


def _decodes_or_raises_decode_error(cls: type[rm.Message], data: bytes) -> None:
    try:
        decoded = cls.from_bytes(data)
    except DecodeError as exc:
        assert str(exc).startswith(cls.__qualname__), exc  # names the path from the message
        return
    again = decoded.to_bytes()  # see the module docstring: no exception is acceptable here
    assert cls.from_bytes(again).to_bytes() == again


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_decode_or_raise_decode_error(
    cases: dict[str, Generated], data: bytes
) -> None:
    for cls in corpus_classes(cases).values():
        _decodes_or_raises_decode_error(cls, data)


@st.composite
def _mutated(draw: st.DrawFn, cls: type[rm.Message]) -> bytes:
    """A valid encoding with a few bytes changed, dropped or inserted."""
    data = bytearray(draw(messages(cls)).to_bytes())
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            data.append(draw(st.integers(0, 255)))
            continue
        at = draw(st.integers(0, len(data) - 1))
        how = draw(st.sampled_from(["replace", "delete", "insert", "flip"]))
        if how == "replace":
            data[at] = draw(st.integers(0, 255))
        elif how == "delete":
            del data[at]
        elif how == "insert":
            data.insert(at, draw(st.integers(0, 255)))
        else:
            data[at] ^= 1 << draw(st.integers(0, 7))
    return bytes(data)


#: Any msgpack value, including the timestamp extension, nil and maps keyed like messages.
msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=4)
    | st.binary(max_size=4)
    | st.builds(msgpack.Timestamp, st.integers(-(2**40), 2**40), st.integers(0, 999_999_999)),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.integers(0, 30) | st.text(max_size=2) | st.sampled_from(["1", "2", "3", "5"]),
            children,
            max_size=3,
        )
    ),
    max_leaves=8,
)


def _documents(cls: type[rm.Message]) -> st.SearchStrategy[bytes]:
    """msgpack maps keyed by the message's own field numbers, holding values of any type."""
    keys = [field.wire_key for field in cls.__rpcpoll_info__.fields] or ["1"]
    return st.dictionaries(st.sampled_from(keys), msgpack_values, max_size=4).map(msgpack.packb)


@pytest.mark.parametrize("full_name", CLASS_NAMES)
def test_mutated_and_mistyped_payloads_raise_only_decode_error(
    cases: dict[str, Generated], full_name: str
) -> None:
    cls = _class(cases, full_name)

    @FUZZ
    @given(_mutated(cls) | _documents(cls))
    def run(data: bytes) -> None:
        _decodes_or_raises_decode_error(cls, data)

    run()


@pytest.mark.parametrize("full_name", CLASS_NAMES)
def test_random_dicts_build_a_message_or_raise_type_or_value_error(
    cases: dict[str, Generated], full_name: str
) -> None:
    cls = _class(cases, full_name)

    @FUZZ
    @given(json_inputs(cls))
    def run(data: dict[str, Any]) -> None:
        try:
            message = cls.from_dict(data)
        except (TypeError, ValueError):
            return
        # What from_dict builds prints again (or, like protobuf, refuses NaN in a Struct
        # and unset required fields only when encoding).
        try:
            message.to_dict()
            message.to_bytes()
        except (TypeError, ValueError):
            pass

    run()
