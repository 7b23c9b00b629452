"""to_dict()/from_dict()/to_json()/from_json() against protobuf's own JSON mapping
(google.protobuf.json_format), on every message of the case corpus.

Each generated message gets a protobuf twin built field by field (codegen_testutil.to_protobuf,
not through JSON), compiled by grpcio-tools from the same .proto. `to_dict()` must equal
`MessageToDict(twin)` and `to_json()` `MessageToJson(twin)` (as JSON values), protobuf must
accept our form and print it back unchanged, and `from_dict()`/`from_json()` must read
protobuf's form back into the same message. For input dicts, `from_dict` must accept what
`ParseDict` accepts, giving the same message, and refuse what it refuses; the few places where
rpcpoll is deliberately stricter than protobuf's Python parser are the tests at the end.
"""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from codegen_testutil import (
    CLASS_NAMES,
    Generated,
    corpus_classes,
    json_inputs,
    messages,
    pb_class_for,
    to_protobuf,
)
from google.protobuf import json_format
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import rpcpoll.message as rm
from rpcpoll.message.base import MessageKind
from rpcpoll.message.kinds import EnumKind, FloatKind

Pb2 = Callable[[str], ModuleType]


def _check(message: rm.Message) -> None:
    """Every JSON form of `message` is json_format's, and reads back."""
    cls = type(message)
    pb_class = pb_class_for(cls)
    twin = to_protobuf(message, pb_class)
    ours = message.to_dict()
    theirs = json_format.MessageToDict(twin)
    assert ours == theirs
    assert json.loads(message.to_json()) == json.loads(json_format.MessageToJson(twin))
    # protobuf accepts our form and prints it back unchanged ...
    assert json_format.MessageToDict(json_format.ParseDict(ours, pb_class())) == ours
    # ... and we read protobuf's forms back into the same message.
    assert cls.from_dict(theirs) == message
    assert cls.from_json(json_format.MessageToJson(twin)) == message


@pytest.fixture(scope="module")
def corpus(cases: dict[str, Generated], pb2: Pb2) -> dict[str, type[rm.Message]]:
    """Every corpus class by full name; the pb2 fixture has imported their protobuf twins."""
    return corpus_classes(cases)


@pytest.mark.parametrize("full_name", CLASS_NAMES)
def test_json_forms_match_json_format_for_random_messages(
    corpus: dict[str, type[rm.Message]], full_name: str
) -> None:
    @settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(messages(corpus[full_name]))
    def run(message: rm.Message) -> None:
        _check(message)

    run()


# -- from_dict against ParseDict ----------------------------------------------------------------


def _python_parser_quirk(cls: type[rm.Message], data: Any) -> bool:
    """Whether `data` holds input that protobuf's Python ParseDict accepts by accident and
    rpcpoll refuses, as the proto3 JSON spec and protobuf's other parsers do (see the tests
    of known differences below)."""
    if not isinstance(data, dict) or rm.type_name(cls).startswith("google.protobuf."):
        return False
    info = cls.__rpcpoll_info__
    named: set[str] = set()
    for key, value in data.items():
        field = info.by_json_name.get(key)
        if field is None:
            continue
        if field.name in named:
            return True  # the same field under its JSON and its proto name
        named.add(field.name)
        if value is None and field.kind is rm.VALUE and not field.repeated and field.key is None:
            return True  # a Value field set to null: see test_a_value_field_set_to_null_...
        if field.key is not None and isinstance(value, dict):
            items = list(value.values())
        elif field.repeated and isinstance(value, list):
            items = value
        else:
            items = [value]
        for item in items:
            kind = field.kind
            if isinstance(item, bool) and isinstance(kind, (FloatKind, EnumKind)):
                return True
            if isinstance(item, float) and isinstance(kind, EnumKind) and not item.is_integer():
                return True
            if isinstance(kind, EnumKind) and _int_beyond_int32(item):
                return True
            if kind is rm.BYTES and isinstance(item, str):
                try:
                    rm.BYTES.from_json(item, "")
                except ValueError:
                    return True
            if isinstance(kind, MessageKind):
                if isinstance(item, (list, str)) and not item:
                    return True
                if _python_parser_quirk(kind.cls, item):
                    return True
    return False


def _int_beyond_int32(value: Any) -> bool:
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return False
    return not -(2**31) <= number < 2**31


@pytest.mark.parametrize("full_name", CLASS_NAMES)
def test_from_dict_accepts_and_refuses_what_parse_dict_does(
    corpus: dict[str, type[rm.Message]], full_name: str
) -> None:
    cls = corpus[full_name]
    pb_class = pb_class_for(cls)

    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(json_inputs(cls))
    def run(data: dict[str, Any]) -> None:
        assume(not _python_parser_quirk(cls, data))
        try:
            parsed = json_format.ParseDict(data, pb_class())
        except json_format.ParseError:
            with pytest.raises((TypeError, ValueError)):
                cls.from_dict(data)
            return
        assert cls.from_dict(data).to_dict() == json_format.MessageToDict(parsed)

    run()


# -- conventions --------------------------------------------------------------------------------


def test_json_uses_protobuf_conventions(cases: dict[str, Generated], pb2: Pb2) -> None:
    scalars = cases["scalars"].module("scalars_rpc")
    message = scalars.Scalars(
        f_int64=-5,
        f_uint64=2**64 - 1,
        f_int32=7,
        f_float=0.1,
        f_double=-0.0,
        f_bytes=b"\xff\x00",
        f_color=scalars.Color.COLOR_RED,
        f_bool=True,
    )
    assert message.to_dict() == {
        "fInt64": "-5",
        "fUint64": "18446744073709551615",
        "fInt32": 7,
        "fFloat": 0.1,
        "fDouble": -0.0,
        "fBytes": "/wA=",
        "fColor": "COLOR_RED",
        "fBool": True,
    }
    pb_class = pb2("scalars_pb2").Scalars
    assert json_format.MessageToDict(to_protobuf(message, pb_class)) == message.to_dict()
    assert message.to_json() == (
        b'{"fDouble":-0.0,"fFloat":0.1,"fInt32":7,"fInt64":"-5","fUint64":"18446744073709551615",'
        b'"fBool":true,"fBytes":"/wA=","fColor":"COLOR_RED"}'
    )
    # A float field holds a float32, so reading JSON back rounds like protobuf does.
    assert scalars.Scalars.from_dict(message.to_dict()).f_float == 0.10000000149011612
    special = scalars.Scalars(f_double=math.inf, f_float=-math.inf)
    assert special.to_dict() == {"fDouble": "Infinity", "fFloat": "-Infinity"}
    _check(special)
    assert scalars.Scalars(f_double=math.nan).to_dict() == {"fDouble": "NaN"}
    assert scalars.Repeated(json_renamed="x").to_dict() == {"customName": "x"}


def test_unknown_open_enum_values_print_as_numbers(cases: dict[str, Generated], pb2: Pb2) -> None:
    scalars = cases["scalars"].module("scalars_rpc")
    message = scalars.Scalars(f_color=42)
    assert message.to_dict() == {"fColor": 42}
    _check(message)
    _check(scalars.Repeated(r_color=[scalars.Color(-7), scalars.Color.COLOR_RED]))
    assert scalars.Scalars.from_dict({"fColor": 42}).f_color == scalars.Color(42)
    assert scalars.Scalars.from_dict({"fColor": "42"}).f_color == 42  # as ParseDict


def test_well_known_types_use_their_json_forms(cases: dict[str, Generated], pb2: Pb2) -> None:
    wkt = cases["wkt"].module("wkt_rpc")
    utc = datetime.timezone.utc
    message = wkt.WellKnown(
        created=datetime.datetime(1972, 1, 1, 10, 0, 20, 21000, tzinfo=utc),
        ttl=datetime.timedelta(seconds=-3, microseconds=-100000),
        w_int64=0,
        w_float=1.5,
        nothing=rm.Empty(),
        attributes={"a": [1.0, None]},
        mask=["user.display_name", "photo"],
        packed=rm.Any.pack(wkt.Note(text="hi")),
        history=[datetime.datetime(1, 1, 1, tzinfo=utc)],
    )
    assert message.to_dict() == {
        "created": "1972-01-01T10:00:20.021Z",
        "ttl": "-3.100s",
        "wInt64": "0",
        "wFloat": 1.5,
        "nothing": {},
        "attributes": {"a": [1.0, None]},
        "mask": "user.displayName,photo",
        "packed": {"@type": "type.googleapis.com/cases.wkt.Note", "text": "hi"},
        "history": ["0001-01-01T00:00:00Z"],
    }
    assert (
        json_format.MessageToDict(
            json_format.ParseDict(message.to_dict(), pb2("wkt_pb2").WellKnown())
        )
        == message.to_dict()
    )
    assert wkt.WellKnown.from_dict(message.to_dict()) == message
    # an Any holding a well-known type needs no import: its JSON goes under "value"
    packed = wkt.WellKnown(packed=rm.Any.pack(rm.Duration(seconds=1, nanos=500_000_000)))
    assert packed.to_dict() == {
        "packed": {"@type": "type.googleapis.com/google.protobuf.Duration", "value": "1.500s"}
    }
    _check(packed)


def test_from_dict_accepts_protobuf_alternatives(cases: dict[str, Generated]) -> None:
    scalars = cases["scalars"].module("scalars_rpc")
    parsed = scalars.Scalars.from_dict(
        {
            "f_int64": 5,  # proto field name, number instead of string
            "fInt32": "7",
            "fUint32": 1e3,
            "fDouble": "NaN",
            "fFloat": "1.5",
            "fBytes": "_w-_",  # URL-safe base64 without padding
            "fColor": 2,
            "fString": None,  # null means unset
        }
    )
    assert (parsed.f_int64, parsed.f_int32, parsed.f_uint32) == (5, 7, 1000)
    assert math.isnan(parsed.f_double) and parsed.f_float == 1.5
    assert parsed.f_bytes == b"\xff\x0f\xbf" and parsed.f_color is scalars.Color.COLOR_GREEN
    assert parsed.f_string == ""
    # an integral float is an enum number, as for integer fields
    assert scalars.Scalars.from_dict({"fColor": 1.0}).f_color is scalars.Color.COLOR_RED


@pytest.mark.parametrize(
    ("data", "error", "match"),
    [
        ({"fInt32": 1.5}, ValueError, r"Scalars\.f_int32: 1\.5 is not an integer"),
        ({"fInt32": True}, TypeError, "got a boolean"),
        ({"fInt32": 2**31}, ValueError, "out of range"),
        ({"fUint64": "18446744073709551616"}, ValueError, r"Scalars\.f_uint64: .* out of range"),
        ({"fBool": "true"}, TypeError, r"Scalars\.f_bool: expected true or false"),
        ({"fColor": "NOPE"}, ValueError, "'NOPE' is not a value of Color"),
        ({"nope": 1}, ValueError, "no field named 'nope'"),
        ({"fDouble": math.inf}, ValueError, "use the strings NaN, Infinity or -Infinity"),
        ({"fFloat": 1e39}, ValueError, "out of range for float"),
        ({"fString": "\ud800"}, ValueError, r"Scalars\.f_string: .*unpaired surrogate"),
        ({"child": [1]}, TypeError, r"Scalars\.child: expected an object"),
        ({"child": {"fInt32": "x"}}, ValueError, r"^Scalars\.f_int32: 'x' is not an integer"),
        ({"rInt32": [1]}, ValueError, r"^Scalars: no field named 'rInt32'"),
    ],
)
def test_from_dict_rejects_bad_input_naming_the_field(
    cases: dict[str, Generated],
    pb2: Pb2,
    data: dict[str, Any],
    error: type[Exception],
    match: str,
) -> None:
    scalars = cases["scalars"].module("scalars_rpc")
    with pytest.raises(error, match=match):
        scalars.Scalars.from_dict(data)
    with pytest.raises(json_format.ParseError):  # and protobuf refuses it too
        json_format.ParseDict(data, pb2("scalars_pb2").Scalars())


def test_from_dict_can_ignore_unknown_fields_and_enum_names(
    cases: dict[str, Generated], pb2: Pb2
) -> None:
    scalars = cases["scalars"].module("scalars_rpc")
    data = {"nope": 1, "fColor": "NOPE", "fInt32": 3}
    parsed = scalars.Scalars.from_dict(data, ignore_unknown_fields=True)
    assert parsed == scalars.Scalars(f_int32=3)
    theirs = json_format.ParseDict(data, pb2("scalars_pb2").Scalars(), ignore_unknown_fields=True)
    assert parsed.to_dict() == json_format.MessageToDict(theirs)


def test_from_dict_rejects_two_oneof_members(cases: dict[str, Generated], pb2: Pb2) -> None:
    oneof = cases["oneof"].module("oneof_rpc")
    with pytest.raises(ValueError, match=r"^Choice\.value: oneof has more than one member set"):
        oneof.Choice.from_dict({"number": 1, "text": "x"})
    with pytest.raises(json_format.ParseError, match="multiple"):
        json_format.ParseDict({"number": 1, "text": "x"}, pb2("oneof_pb2").Choice())
    assert oneof.Choice.from_dict({"number": 0}).which_value() == "number"
    # null is "not set", so it does not count as a member (nor does it for ParseDict)
    assert oneof.Choice.from_dict({"number": None, "text": "x"}).which_value() == "text"


# -- presence: fields set to their default are printed ------------------------------------------


def test_proto2_defaults_are_left_out_of_json_until_set(
    cases: dict[str, Generated], pb2: Pb2
) -> None:
    defaults = cases["defaults"].module("defaults_rpc")
    assert defaults.Defaults(id="x").to_dict() == {"id": "x"}
    changed = defaults.Defaults(id="x", retries=0, mode=defaults.Mode.MODE_FAST, limit=-math.inf)
    assert changed.to_dict() == {"id": "x", "retries": 0, "mode": "MODE_FAST", "limit": "-Infinity"}
    assert defaults.Defaults.from_dict(changed.to_dict()) == changed
    _check(changed)
    p2 = cases["p2"].module("unittest_p2_rpc")
    # [default = nan] (and inf, and the 64-bit extremes) stay out while unset ...
    unset = pb2("unittest_p2_pb2").TestAllTypes()
    assert math.isnan(unset.default_nan) and unset.default_int32 == 41  # protobuf's getters
    assert p2.TestAllTypes().to_dict() == {} == json_format.MessageToDict(unset)
    # ... and are printed once set, even to the declared default
    message = p2.TestAllTypes(
        default_nan=math.nan,
        default_float_inf=math.inf,
        default_int32=41,
        default_string="hello",
        default_nested_enum=p2.TestAllTypes.NestedEnum.BAR,
        default_uint64_max=2**64 - 1,
    )
    assert message.to_dict() == {
        "defaultNan": "NaN",
        "defaultFloatInf": "Infinity",
        "defaultInt32": 41,
        "defaultString": "hello",
        "defaultNestedEnum": "BAR",
        "defaultUint64Max": "18446744073709551615",
    }
    assert message.to_dict() == json_format.MessageToDict(
        to_protobuf(message, pb2("unittest_p2_pb2").TestAllTypes)
    )


def test_proto2_map_values_keep_fields_set_to_zero(cases: dict[str, Generated], pb2: Pb2) -> None:
    p2 = cases["p2"].module("unittest_p2_rpc")
    message = p2.TestMap(
        map_int32_foreign_message={1: p2.ForeignMessage(c=0), 2: p2.ForeignMessage()},
        map_string_foreign_message={"z": p2.ForeignMessage(d=0)},
        map_int32_enum={0: p2.MapEnum.MAP_ENUM_FOO},
        map_bool_bool={False: False},
    )
    assert message.to_dict() == {
        "mapInt32ForeignMessage": {"1": {"c": 0}, "2": {}},
        "mapStringForeignMessage": {"z": {"d": 0}},
        "mapInt32Enum": {"0": "MAP_ENUM_FOO"},
        "mapBoolBool": {"false": False},
    }
    _check(message)


def test_keyword_named_proto2_fields_keep_their_proto_names_in_json(
    cases: dict[str, Generated], pb2: Pb2
) -> None:
    p2 = cases["p2"].module("unittest_p2_rpc")
    message = p2.KeywordFields(
        class__=0,
        from_="",
        is_=False,
        None_=0,
        True_=False,
        async_=1,
        in_=p2.class_(int_=0),
        import_=[0],
        self_="me",
        print=0,
        type_=0,
    )
    assert message.to_dict() == {
        "class": 0,
        "from": "",
        "is": False,
        "None": 0,
        "True": False,
        "async": 1,
        "in": {"int": 0},
        "import": [0],
        "self": "me",
        "print": 0,
        "type": 0,
    }
    _check(message)


def test_editions_explicit_fields_are_printed_when_set_to_zero(
    cases: dict[str, Generated], pb2: Pb2
) -> None:
    ed = cases["ed2023"].module("features_rpc")
    quiet = cases["ed2023"].module("quiet_rpc")
    message = ed.Record(
        required_id=0,
        id=0,
        title="",
        flag=False,
        open=ed.Open.OPEN_UNSPECIFIED,
        closed=ed.Closed.CLOSED_ONE,
        implicit_id=0,
        implicit_title="",
        implicit_open=ed.Open.OPEN_UNSPECIFIED,
        item=ed.Item(count=0),
        choice_int=0,
        quiet=quiet.Quiet(a=0, c=0, d=quiet.Quiet.Part(e=0)),
    )
    assert message.to_dict() == {
        "requiredId": 0,
        "id": 0,
        "title": "",
        "flag": False,
        "open": "OPEN_UNSPECIFIED",
        "closed": "CLOSED_ONE",
        "item": {"count": 0},
        "choiceInt": 0,
        "quiet": {"c": 0, "d": {}},  # quiet.proto: implicit presence file-wide
    }
    _check(message)


def test_googleapis_common_types(cases: dict[str, Generated], pb2: Pb2) -> None:
    place = cases["googleapis"].module("acme.geo.place_rpc")
    money = cases["googleapis"].module("google.type.money_rpc")
    latlng = cases["googleapis"].module("google.type.latlng_rpc")
    date = cases["googleapis"].module("google.type.date_rpc")
    message = place.Place(
        name="Louvre",
        location=latlng.LatLng(latitude=48.8606, longitude=2.3376),
        opened_on=date.Date(year=1793, month=8, day=10),
        entry_fee=money.Money(currency_code="EUR", units=22, nanos=500_000_000),
        prices=[money.Money(currency_code="EUR")],
        entrances={"pyramid": latlng.LatLng()},
    )
    assert message.to_dict()["entryFee"] == {
        "currencyCode": "EUR",
        "units": "22",
        "nanos": 500000000,
    }
    _check(message)


# -- known differences: rpcpoll is stricter than protobuf's Python parser ----------------------


def test_a_field_given_under_both_names_is_refused(cases: dict[str, Generated], pb2: Pb2) -> None:
    # ParseDict checks duplicates by the key as written, so the later key wins; protobuf's
    # conformance suite asks parsers to refuse this, as rpcpoll does.
    scalars = cases["scalars"].module("scalars_rpc")
    data = {"fInt32": 1, "f_int32": 2}
    assert json_format.ParseDict(data, pb2("scalars_pb2").Scalars()).f_int32 == 2
    with pytest.raises(ValueError, match=r"^Scalars: field 'f_int32' is given twice$"):
        scalars.Scalars.from_dict(data)


@pytest.mark.parametrize(
    ("data", "protobuf_reads"),
    [
        ({"fDouble": True}, {"fDouble": 1.0}),  # a bool is an int in Python
        ({"fColor": True}, {"fColor": "COLOR_RED"}),
        ({"fColor": 1.5}, {"fColor": "COLOR_RED"}),  # truncated
        ({"fColor": 2**32 + 1}, {"fColor": "COLOR_RED"}),  # wrapped to 32 bits
        ({"child": []}, {"child": {}}),  # it iterates the "object"
        ({"child": ""}, {"child": {}}),
        ({"fBytes": "a:b=c"}, {"fBytes": "abc="}),  # invalid base64 characters are dropped
        ({"fBytes": "***"}, {}),
    ],
)
def test_input_protobufs_python_parser_accepts_by_accident_is_refused(
    cases: dict[str, Generated], pb2: Pb2, data: dict[str, Any], protobuf_reads: dict[str, Any]
) -> None:
    scalars = cases["scalars"].module("scalars_rpc")
    parsed = json_format.ParseDict(data, pb2("scalars_pb2").Scalars())
    assert json_format.MessageToDict(parsed) == protobuf_reads
    with pytest.raises((TypeError, ValueError), match=r"^Scalars\."):
        scalars.Scalars.from_dict(data)


def test_a_value_field_set_to_null_is_not_set(cases: dict[str, Generated], pb2: Pb2) -> None:
    # docs/codegen.md, "Known differences": a Value field holds the JSON value itself, so
    # None cannot tell "null" from "not set".
    wkt = cases["wkt"].module("wkt_rpc")
    theirs = json_format.ParseDict({"anything": None}, pb2("wkt_pb2").WellKnown())
    assert json_format.MessageToDict(theirs) == {"anything": None}
    ours = wkt.WellKnown.from_dict({"anything": None})
    assert ours.anything is None and ours.to_dict() == {}
    # inside a Struct or a list, None is null as in protobuf
    _check(wkt.WellKnown(attributes={"a": None}, items=[None], extra={"k": None}))


def test_json_text_with_a_repeated_key_keeps_the_last(
    cases: dict[str, Generated], pb2: Pb2
) -> None:
    # msgspec's JSON decoder keeps the last of repeated keys; json_format.Parse refuses them.
    scalars = cases["scalars"].module("scalars_rpc")
    text = '{"fInt32": 1, "fInt32": 2}'
    with pytest.raises(json_format.ParseError):
        json_format.Parse(text, pb2("scalars_pb2").Scalars())
    assert scalars.Scalars.from_json(text).f_int32 == 2


@given(st.floats(allow_nan=False, allow_infinity=False, width=32))
def test_float_fields_print_the_shortest_float32_decimal(value: float) -> None:
    from google.protobuf.internal import type_checkers

    assert rm.FLOAT.to_json(value) == type_checkers.ToShortestFloat(value)
