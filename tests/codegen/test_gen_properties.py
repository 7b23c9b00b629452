"""Properties over every generated message of the case corpus.

- Round trip: random valid messages come back equal through bytes and through dicts.
- Fuzz: random bytes, and random msgpack documents keyed by real field numbers, either decode
  or raise DecodeError, never another exception type.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import msgpack
import pytest
from codegen_testutil import GOOD_CASES, Generated, messages
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rpcpoll.message as rm
from rpcpoll.message import DecodeError

MODULES = {
    "scalars": ["scalars_rpc"],
    "keywords": ["keywords_rpc"],
    "nested": ["nested_rpc"],
    "oneof": ["oneof_rpc"],
    "maps": ["maps_rpc"],
    "wkt": ["wkt_rpc"],
    "defaults": ["defaults_rpc"],
    "editions": ["editions_rpc"],
    "deep": ["deep_rpc"],
    "streaming": ["streaming_rpc"],
    "cross": ["acme.common.money_rpc", "acme.shop.public_rpc", "acme.shop.order_rpc"],
}
assert set(MODULES) == set(GOOD_CASES)


def _nested(cls: type[rm.Message]) -> Iterator[type[rm.Message]]:
    for value in vars(cls).values():
        if isinstance(value, type) and issubclass(value, rm.Message):
            yield value
            yield from _nested(value)


def _all_classes(cases: dict[str, Generated]) -> list[type[rm.Message]]:
    found: dict[str, type[rm.Message]] = {}
    for case, modules in MODULES.items():
        for name in modules:
            module: ModuleType = cases[case].module(name)
            for _, cls in inspect.getmembers(module, inspect.isclass):
                if issubclass(cls, rm.Message) and cls.__module__ == module.__name__:
                    for each in (cls, *_nested(cls)):
                        found[f"{module.__name__}.{each.__qualname__}"] = each
    return [found[key] for key in sorted(found)]


CLASS_NAMES = [
    "Scalars",
    "Optionals",
    "Repeated",
    "Keywords",
    "list_",
    "Content",
    "Content.Line",
    "ContentLine",
    "Shadow",
    "Shadow.class_",
    "Choice",
    "Empty",
    "Maps",
    "Item",
    "WellKnown",
    "Note",
    "Defaults",
    "Node",
    "A",
    "A.B",
    "A.B.C",
    "A.B.C.D",
    "A.B.C.D.E",
    "Tree",
    "Req",
    "Resp",
    "Money",
    "Receipt",
    "Order",
]


def test_the_corpus_has_every_expected_message(cases: dict[str, Generated]) -> None:
    names = sorted(cls.__qualname__ for cls in _all_classes(cases))
    assert names == sorted(CLASS_NAMES)


@pytest.mark.parametrize("qualname", CLASS_NAMES)
def test_random_messages_round_trip_through_bytes_and_dicts(
    cases: dict[str, Generated], qualname: str
) -> None:
    (cls,) = [c for c in _all_classes(cases) if c.__qualname__ == qualname]

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(messages(cls))
    def run(message: rm.Message) -> None:
        data = message.to_bytes()
        assert cls.from_bytes(data) == message
        assert cls.from_bytes(memoryview(data)) == message
        assert cls.from_bytes(cls.from_bytes(data).to_bytes()) == message
        assert cls.from_dict(message.to_dict()) == message

    run()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_decode_or_raise_decode_error(
    cases: dict[str, Generated], data: bytes
) -> None:
    for cls in _fuzz_targets(cases):
        try:
            cls.from_bytes(data)
        except DecodeError:
            pass


def _fuzz_targets(cases: dict[str, Generated]) -> list[type[rm.Message]]:
    wanted = {"Scalars", "Repeated", "Maps", "WellKnown", "Choice", "Tree", "Defaults", "Node"}
    return [cls for cls in _all_classes(cases) if cls.__qualname__ in wanted]


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=4)
    | st.binary(max_size=4),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.integers(0, 30) | st.text(max_size=2), children, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.integers(0, 25), msgpack_values, max_size=6))
def test_structurally_valid_msgpack_with_wrong_values_raises_only_decode_error(
    cases: dict[str, Generated], document: dict[int, Any]
) -> None:
    data = msgpack.packb(document)
    for cls in _fuzz_targets(cases):
        try:
            decoded = cls.from_bytes(data)
        except DecodeError:
            continue
        decoded.to_bytes()  # whatever decodes must encode again
