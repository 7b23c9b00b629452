"""The payload wire form against the reference `msgpack` package (docs/protocol.md, "Payload").

A peer in another language sees a MessagePack map from field numbers, written as decimal
strings, to values. Here `msgpack.packb` of a plain dict plays that peer: its bytes must decode
into the generated classes, and `msgpack.unpackb` of what they encode must give the plain dict
back, for every type: scalars at their limits, enums, nested messages, repeated fields, maps
with int, bool and str keys, wrappers, timestamps (extension -1 in its three sizes) and
durations (ISO 8601 strings).
"""

from __future__ import annotations

import datetime
import math
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import msgpack
import pytest
from codegen_testutil import CLASS_NAMES, Generated, corpus_classes, messages
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rpcpoll.message as rm
from rpcpoll.examples.echo_rpc import EchoRequest

PROTOCOL = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
UTC = datetime.timezone.utc


def unpack(data: bytes) -> Any:
    """What the reference implementation reads (map fields may have int or bool keys)."""
    return msgpack.unpackb(data, strict_map_key=False)


def both_ways(message: rm.Message, plain: dict[str, Any]) -> None:
    """`message` encodes to `plain` and `plain`, packed by msgpack, decodes to `message`."""
    assert unpack(message.to_bytes()) == plain
    assert type(message).from_bytes(msgpack.packb(plain)) == message


@pytest.fixture(scope="module")
def scalars(cases: dict[str, Generated]) -> ModuleType:
    return cases["scalars"].module("scalars_rpc")


def test_the_documented_payload_vector() -> None:
    (line,) = re.findall(r"^payload vector echo_request: ([0-9a-f]+)$", PROTOCOL.read_text(), re.M)
    data = bytes.fromhex(line)
    message = EchoRequest(message="hello", payload=b"\x01\x02\x03")
    assert message.to_bytes() == data
    assert EchoRequest.from_bytes(data) == message
    assert unpack(data) == {"1": "hello", "2": b"\x01\x02\x03"}
    assert msgpack.packb({"1": "hello", "2": b"\x01\x02\x03"}) == data


@pytest.mark.parametrize(
    ("field", "values"),
    [
        ("1", [1.5, -0.0, 1e308, -math.inf, 5e-324]),  # double
        ("2", [1.5, 3.4028234663852886e38, -1e-45, math.inf]),  # float
        ("3", [1, -(2**31), 2**31 - 1]),  # int32
        ("4", [-(2**63), 2**63 - 1]),  # int64
        ("5", [2**32 - 1]),  # uint32
        ("6", [2**64 - 1, 2**63]),  # uint64
        ("7", [-(2**31)]),  # sint32
        ("8", [-(2**63)]),  # sint64
        ("9", [2**32 - 1]),  # fixed32
        ("10", [2**64 - 1]),  # fixed64
        ("11", [-(2**31)]),  # sfixed32
        ("12", [2**63 - 1]),  # sfixed64
        ("13", [True]),  # bool
        ("14", ["héllo ☃", "x" * 300]),  # string
        ("15", [b"\x00\xff", bytes(70000)]),  # bytes: bin 8 and bin 32
        ("16", [1, 2]),  # enum
    ],
)
def test_every_scalar_type_both_ways(scalars: ModuleType, field: str, values: list[Any]) -> None:
    name = next(f.name for f in scalars.Scalars.__rpcpoll_info__.fields if f.wire_key == field)
    for value in values:
        both_ways(scalars.Scalars(**{name: value}), {field: value})


def test_ints_of_any_msgpack_width_decode(scalars: ModuleType) -> None:
    # The reference packer picks the smallest int family; others may use a wider one.
    for packed in (
        b"\xd0\x05",
        b"\xd1\x00\x05",
        b"\xce\x00\x00\x00\x05",
        b"\xcf" + bytes(7) + b"\x05",
    ):
        data = b"\x81\xa13" + packed  # {"3": 5}
        assert scalars.Scalars.from_bytes(data).f_int32 == 5
    data = b"\x81\xa11\xca\x3f\xc0\x00\x00"  # {"1": float 32 1.5}
    assert scalars.Scalars.from_bytes(data).f_double == 1.5
    data = b"\x81\xd9\x0215\xc4\x01x"  # str 8 key "15", bin 8 value
    assert scalars.Scalars.from_bytes(data).f_bytes == b"x"


def test_defaults_are_left_out_and_zero_values_of_presence_fields_are_written(
    scalars: ModuleType,
) -> None:
    both_ways(scalars.Scalars(f_int32=0, f_string="", f_double=0.0, f_color=0), {})
    both_ways(scalars.Optionals(o_int32=0, o_string="", o_double=0.0), {"3": 0, "8": "", "1": 0.0})
    both_ways(scalars.Scalars(f_double=-0.0), {"1": -0.0})  # not the default: its sign differs
    # a peer that writes zeros explicitly is understood, and its zeros are dropped on re-encoding
    decoded = scalars.Scalars.from_bytes(msgpack.packb({"1": 0.0, "3": 0, "14": "", "16": 0}))
    assert decoded == scalars.Scalars() and unpack(decoded.to_bytes()) == {}


def test_enums_nested_messages_and_repeated_fields(scalars: ModuleType) -> None:
    both_ways(
        scalars.Scalars(f_color=scalars.Color.COLOR_GREEN, child=scalars.Scalars(f_int64=-1)),
        {"16": 2, "17": {"4": -1}},
    )
    both_ways(scalars.Scalars(f_color=scalars.Color(99)), {"16": 99})  # open: kept as sent
    both_ways(scalars.Scalars(child=scalars.Scalars()), {"17": {}})  # an empty message is set
    both_ways(
        scalars.Repeated(
            r_double=[0.0, -1.5],
            r_int64=[2**63 - 1, -(2**63)],
            r_uint64=[2**64 - 1],
            r_bool=[False, True],
            r_string=["", "a"],
            r_bytes=[b""],
            r_color=[scalars.Color.COLOR_RED, scalars.Color(7)],
            r_message=[scalars.Scalars(), scalars.Scalars(f_bool=True)],
            json_renamed="x",
        ),
        {
            "1": [0.0, -1.5],
            "4": [2**63 - 1, -(2**63)],
            "6": [2**64 - 1],
            "9": [False, True],
            "10": ["", "a"],
            "11": [b""],
            "12": [1, 7],
            "13": [{}, {"13": True}],
            "14": "x",
        },
    )


def test_maps_with_int_bool_and_str_keys(cases: dict[str, Generated]) -> None:
    maps = cases["maps"].module("maps_rpc")
    both_ways(
        maps.Maps(
            by_int32={-(2**31): "min", 0: ""},
            by_int64={2**63 - 1: -1},
            by_uint32={0: b"\x00"},
            by_uint64={2**64 - 1: 0.0},
            by_sint32={-1: False},
            by_fixed64={7: 1.5},
            by_bool={True: "yes", False: "no"},
            items={"": maps.Item(), "a": maps.Item(name="x")},
            levels={"l": maps.Level.LEVEL_HIGH, "u": maps.Level(5)},
            counts={"n": 0},
        ),
        {
            "1": {-(2**31): "min", 0: ""},
            "2": {2**63 - 1: -1},
            "3": {0: b"\x00"},
            "4": {2**64 - 1: 0.0},
            "5": {-1: False},
            "6": {7: 1.5},
            "7": {True: "yes", False: "no"},
            "8": {"": {}, "a": {"1": "x"}},
            "9": {"l": 1, "u": 5},
            "10": {"n": 0},
        },
    )


@pytest.fixture(scope="module")
def wkt(cases: dict[str, Generated]) -> ModuleType:
    return cases["wkt"].module("wkt_rpc")


def test_wrappers_are_bare_values(wkt: ModuleType) -> None:
    both_ways(
        wkt.WellKnown(
            w_double=0.0,
            w_float=-1.5,
            w_int64=-(2**63),
            w_uint64=2**64 - 1,
            w_int32=0,
            w_uint32=2**32 - 1,
            w_bool=False,
            w_string="",
            w_bytes=b"",
            numbers=[0, -1],
        ),
        {
            "3": 0.0,
            "4": -1.5,
            "5": -(2**63),
            "6": 2**64 - 1,
            "7": 0,
            "8": 2**32 - 1,
            "9": False,
            "10": "",
            "11": b"",
            "20": [0, -1],
        },
    )


#: The first bytes of the timestamp extension (type -1) in its 32-, 64- and 96-bit forms.
TIMESTAMP_FORMS = {32: b"\xd6\xff", 64: b"\xd7\xff", 96: b"\xc7\x0c\xff"}


@pytest.mark.parametrize(
    ("when", "form"),
    [
        (datetime.datetime(2024, 2, 29, 12, 30, tzinfo=UTC), 32),  # seconds only
        (datetime.datetime(2024, 2, 29, 12, 30, 1, 123456, tzinfo=UTC), 64),
        (datetime.datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), 96),  # negative
        (datetime.datetime(2600, 1, 1, tzinfo=UTC), 96),  # beyond 2**34 seconds
        (datetime.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), 96),
        (datetime.datetime(1, 1, 1, tzinfo=UTC), 96),
    ],
)
def test_timestamps_are_the_msgpack_timestamp_extension(
    wkt: ModuleType, when: datetime.datetime, form: int
) -> None:
    stamp = msgpack.Timestamp.from_datetime(when)
    both_ways(wkt.WellKnown(created=when, history=[when]), {"1": stamp, "18": [stamp]})
    prefix = TIMESTAMP_FORMS[form]
    assert wkt.WellKnown(created=when).to_bytes()[5:].startswith(prefix)  # after de0001 a131
    assert msgpack.packb(stamp).startswith(prefix)
    assert wkt.WellKnown.from_bytes(msgpack.packb({"1": stamp})).created.tzinfo == UTC


def test_an_rfc_3339_string_is_accepted_for_a_timestamp(wkt: ModuleType) -> None:
    decoded = wkt.WellKnown.from_bytes(msgpack.packb({"1": "2024-02-29T12:30:00+09:00"}))
    assert decoded.created == datetime.datetime(2024, 2, 29, 3, 30, tzinfo=UTC)


def test_sub_microsecond_precision_is_rounded_on_the_wire(wkt: ModuleType) -> None:
    # msgspec's decoder rounds nanoseconds to the nearest microsecond (half up); from JSON
    # they are truncated, as protobuf's ToDatetime does. (docs/codegen.md says "truncated"
    # for both.)
    for nanos, micros in [(499, 0), (500, 1), (999_999_499, 999_999)]:
        decoded = wkt.WellKnown.from_bytes(msgpack.packb({"1": msgpack.Timestamp(1, nanos)}))
        assert decoded.created == datetime.datetime(1970, 1, 1, 0, 0, 1, micros, tzinfo=UTC)
    decoded = wkt.WellKnown.from_bytes(msgpack.packb({"1": msgpack.Timestamp(1, 999_999_999)}))
    assert decoded.created == datetime.datetime(1970, 1, 1, 0, 0, 2, tzinfo=UTC)
    assert wkt.WellKnown.from_bytes(msgpack.packb({"2": "PT0.0000005S"})).ttl == (
        datetime.timedelta(microseconds=1)
    )
    from_json = wkt.WellKnown.from_dict({"created": "1970-01-01T00:00:01.999999999Z"})
    assert from_json.created == datetime.datetime(1970, 1, 1, 0, 0, 1, 999999, tzinfo=UTC)
    assert wkt.WellKnown.from_dict({"ttl": "0.000000999s"}).ttl == datetime.timedelta(0)


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (datetime.timedelta(seconds=1.5), "PT1.5S"),
        (datetime.timedelta(seconds=-1.5), "-PT1.5S"),
        (datetime.timedelta(0), "P0D"),
        (datetime.timedelta(days=2, seconds=7, microseconds=1), "P2DT7.000001S"),
        (datetime.timedelta(days=-3, microseconds=1), "-P2DT86399.999999S"),
        (datetime.timedelta(days=3_652_425), "P3652425D"),
    ],
)
def test_durations_are_iso_8601_strings(
    wkt: ModuleType, delta: datetime.timedelta, text: str
) -> None:
    both_ways(wkt.WellKnown(ttl=delta, timeouts={"t": delta}), {"2": text, "19": {"t": text}})


@pytest.mark.parametrize(
    ("text", "delta"),
    [
        ("PT36H", datetime.timedelta(hours=36)),
        ("P1DT2H3M4.5S", datetime.timedelta(days=1, hours=2, minutes=3, seconds=4.5)),
        ("-PT0.5S", datetime.timedelta(seconds=-0.5)),
    ],
)
def test_durations_written_by_other_peers_decode(
    wkt: ModuleType, text: str, delta: datetime.timedelta
) -> None:
    assert wkt.WellKnown.from_bytes(msgpack.packb({"2": text})).ttl == delta


#: docs/protocol.md: `[-]P[nD][T[nH][nM][n[.ffffff]S]]`
DURATION_GRAMMAR = re.compile(r"-?P(\d+D)?(T(\d+H)?(\d+M)?(\d+(\.\d{1,6})?S)?)?")


@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.timedeltas(
        min_value=-datetime.timedelta(days=3_652_425), max_value=datetime.timedelta(days=3_652_425)
    )
)
def test_every_duration_is_written_in_the_documented_grammar(
    wkt: ModuleType, delta: datetime.timedelta
) -> None:
    text = unpack(wkt.WellKnown(ttl=delta).to_bytes())["2"]
    assert DURATION_GRAMMAR.fullmatch(text), text
    assert wkt.WellKnown.from_bytes(msgpack.packb({"2": text})).ttl == delta


def test_struct_value_list_value_field_mask_empty_and_any(wkt: ModuleType) -> None:
    note = wkt.Note(text="hi")
    both_ways(
        wkt.WellKnown(
            attributes={"a": 1.0, "b": [True, None, "x"], "c": {}},
            anything="text",
            items=[1.5, None],
            extra={"v": {"k": [1.0]}},
            mask=["a.b_c", "d"],
            nothing=rm.Empty(),
            packed=rm.Any.pack(note),
        ),
        {
            "13": {"a": 1.0, "b": [True, None, "x"], "c": {}},
            "14": "text",
            "15": [1.5, None],
            "21": {"v": {"k": [1.0]}},
            "17": ["a.b_c", "d"],
            "12": {},
            "16": {"1": "type.googleapis.com/cases.wkt.Note", "2": note.to_bytes()},
        },
    )
    # numbers in Struct, Value and ListValue are doubles, whatever the peer wrote
    decoded = wkt.WellKnown.from_bytes(msgpack.packb({"13": {"n": 3}, "14": 4, "15": [5]}))
    assert decoded.attributes == {"n": 3.0} and type(decoded.attributes["n"]) is float
    assert type(decoded.anything) is float and type(decoded.items[0]) is float


@pytest.mark.parametrize("full_name", CLASS_NAMES)
def test_the_reference_implementation_reads_and_rewrites_every_message(
    cases: dict[str, Generated], full_name: str
) -> None:
    """A peer that decodes a payload into plain values and packs them again (a proxy, a
    logger) sends a payload that decodes to the same message."""
    cls = corpus_classes(cases)[full_name]

    @settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(messages(cls))
    def run(message: rm.Message) -> None:
        data = message.to_bytes()
        plain = unpack(data)
        assert all(key.__class__ is str for key in plain)
        again = cls.from_bytes(msgpack.packb(plain))
        assert again.to_bytes() == data

    run()
