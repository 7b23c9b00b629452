"""to_dict()/from_dict() against protobuf's own JSON mapping (google.protobuf.json_format).

Each generated message gets a protobuf twin built field by field (codegen_testutil.to_protobuf,
not through JSON), compiled by grpcio-tools from the same .proto. `to_dict()` must equal
`MessageToDict(twin)`, protobuf must accept it back, and `from_dict()` must restore the message.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from codegen_testutil import Generated, messages, to_protobuf
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rpcpoll.message as rm

# (case, module, protobuf module, message names)
COMPARED = [
    ("scalars", "scalars_rpc", "scalars_pb2", ["Scalars", "Optionals", "Repeated"]),
    ("maps", "maps_rpc", "maps_pb2", ["Maps"]),
    ("oneof", "oneof_rpc", "oneof_pb2", ["Choice"]),
    ("wkt", "wkt_rpc", "wkt_pb2", ["WellKnown"]),
    ("nested", "nested_rpc", "nested_pb2", ["Content", "Shadow"]),
    ("deep", "deep_rpc", "deep_pb2", ["A", "Tree"]),
    ("keywords", "keywords_rpc", "keywords_pb2", ["Keywords"]),
    ("cross", "acme.shop.order_rpc", "acme.shop.order_pb2", ["Order"]),
]
PAIRS = [(case, module, pb, name) for case, module, pb, names in COMPARED for name in names]


def _pair(
    cases: dict[str, Generated],
    pb2: Callable[[str], ModuleType],
    case: str,
    module: str,
    pb_module: str,
    name: str,
) -> tuple[type[rm.Message], Any]:
    return getattr(cases[case].module(module), name), getattr(pb2(pb_module), name)


def _check(message: rm.Message, pb_class: Any) -> None:
    ours = message.to_dict()
    theirs = json_format.MessageToDict(to_protobuf(message, pb_class))
    assert ours == theirs
    # protobuf accepts our form and prints it back unchanged ...
    assert json_format.MessageToDict(json_format.ParseDict(ours, pb_class())) == ours
    # ... and we read protobuf's form back into the same message.
    assert type(message).from_dict(theirs) == message


@pytest.mark.parametrize(("case", "module", "pb_module", "name"), PAIRS)
def test_to_dict_matches_message_to_dict_for_random_messages(
    cases: dict[str, Generated],
    pb2: Callable[[str], ModuleType],
    case: str,
    module: str,
    pb_module: str,
    name: str,
) -> None:
    cls, pb_class = _pair(cases, pb2, case, module, pb_module, name)

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(messages(cls))
    def run(message: rm.Message) -> None:
        _check(message, pb_class)

    run()


def test_json_uses_protobuf_conventions(
    cases: dict[str, Generated],
    pb2: Callable[[str], ModuleType],
) -> None:
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
    # A float field holds a float32, so reading JSON back rounds like protobuf does.
    assert scalars.Scalars.from_dict(message.to_dict()).f_float == 0.10000000149011612
    special = scalars.Scalars(f_double=math.inf, f_float=-math.inf)
    assert special.to_dict() == {"fDouble": "Infinity", "fFloat": "-Infinity"}
    _check(special, pb2("scalars_pb2").Scalars)
    assert scalars.Scalars(f_double=math.nan).to_dict() == {"fDouble": "NaN"}
    assert scalars.Repeated(json_renamed="x").to_dict() == {"customName": "x"}


def test_unknown_enum_values_print_as_numbers(
    cases: dict[str, Generated],
    pb2: Callable[[str], ModuleType],
) -> None:
    scalars = cases["scalars"].module("scalars_rpc")
    message = scalars.Scalars(f_color=42)
    assert message.to_dict() == {"fColor": 42}
    _check(message, pb2("scalars_pb2").Scalars)


def test_well_known_types_use_their_json_forms(
    cases: dict[str, Generated],
    pb2: Callable[[str], ModuleType],
) -> None:
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


@pytest.mark.parametrize(
    ("data", "error", "match"),
    [
        ({"fInt32": 1.5}, ValueError, r"Scalars\.f_int32: 1\.5 is not an integer"),
        ({"fInt32": True}, TypeError, "got a boolean"),
        ({"fInt32": 2**31}, ValueError, "out of range"),
        ({"fBool": "true"}, TypeError, r"Scalars\.f_bool: expected true or false"),
        ({"fColor": "NOPE"}, ValueError, "'NOPE' is not a value of Color"),
        ({"nope": 1}, ValueError, "no field named 'nope'"),
        ({"fDouble": math.inf}, ValueError, "use the strings NaN, Infinity or -Infinity"),
        ({"fFloat": 1e39}, ValueError, "out of range for float"),
        ({"fBytes": "***"}, ValueError, "not valid base64"),
        ({"child": []}, TypeError, r"Scalars\.child: expected an object"),
        ({"fInt32": 1, "f_int32": 2}, ValueError, "given twice"),
    ],
)
def test_from_dict_rejects_bad_input_naming_the_field(
    cases: dict[str, Generated], data: dict[str, Any], error: type[Exception], match: str
) -> None:
    scalars = cases["scalars"].module("scalars_rpc")
    with pytest.raises(error, match=match):
        scalars.Scalars.from_dict(data)


def test_from_dict_can_ignore_unknown_fields_and_enum_names(cases: dict[str, Generated]) -> None:
    scalars = cases["scalars"].module("scalars_rpc")
    parsed = scalars.Scalars.from_dict(
        {"nope": 1, "fColor": "NOPE", "fInt32": 3}, ignore_unknown_fields=True
    )
    assert parsed == scalars.Scalars(f_int32=3)


def test_from_dict_rejects_two_oneof_members(cases: dict[str, Generated]) -> None:
    oneof = cases["oneof"].module("oneof_rpc")
    with pytest.raises(ValueError, match="more than one member"):
        oneof.Choice.from_dict({"number": 1, "text": "x"})
    assert oneof.Choice.from_dict({"number": 0}).which_value() == "number"


def test_proto2_defaults_are_left_out_of_json(cases: dict[str, Generated]) -> None:
    defaults = cases["defaults"].module("defaults_rpc")
    assert defaults.Defaults(id="x").to_dict() == {"id": "x"}
    changed = defaults.Defaults(id="x", retries=0, mode=defaults.Mode.MODE_FAST)
    assert changed.to_dict() == {"id": "x", "retries": 0, "mode": "MODE_FAST"}
    assert defaults.Defaults.from_dict(changed.to_dict()) == changed


@given(st.floats(allow_nan=False, allow_infinity=False, width=32))
def test_float_fields_print_the_shortest_float32_decimal(value: float) -> None:
    from google.protobuf.internal import type_checkers

    assert rm.FLOAT.to_json(value) == type_checkers.ToShortestFloat(value)
