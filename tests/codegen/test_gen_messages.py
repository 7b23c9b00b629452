"""Generated messages on the wire: defaults, presence, types, ranges, oneofs, maps, enums."""

from __future__ import annotations

import datetime
import math
from types import ModuleType
from typing import Any

import msgpack
import pytest
from codegen_testutil import Generated

import rpcpoll.message as rm
from rpcpoll.message import DecodeError


def wire(message: rm.Message) -> dict[str, Any]:
    """The msgpack map a message encodes to, as the reference msgpack package reads it: keyed
    by field numbers written as strings (map fields keep their own key types)."""
    decoded: dict[str, Any] = msgpack.unpackb(message.to_bytes(), strict_map_key=False)
    assert all(key.__class__ is str and key.isdigit() for key in decoded)
    return decoded


def packb(document: dict[str, Any]) -> bytes:
    """A payload as another msgpack implementation writes it."""
    data: bytes = msgpack.packb(document)
    return data


@pytest.fixture(scope="module")
def scalars(cases: dict[str, Generated]) -> ModuleType:
    return cases["scalars"].module("scalars_rpc")


# -- defaults and presence ----------------------------------------------------------------------


def test_default_message_encodes_to_an_empty_map(scalars: ModuleType) -> None:
    assert scalars.Optionals().to_bytes() == b"\x80"
    # msgspec writes a map16 header for a struct of more than 15 fields, whatever it holds
    assert scalars.Scalars().to_bytes() == b"\xde\x00\x00"
    assert wire(scalars.Scalars()) == {}
    assert wire(scalars.Repeated()) == {}


def test_constructor_gives_proto3_defaults(scalars: ModuleType) -> None:
    message = scalars.Scalars()
    assert (message.f_int64, message.f_string, message.f_bytes, message.f_bool) == (
        0,
        "",
        b"",
        False,
    )
    assert message.f_double == 0.0 and message.child is None
    assert message.f_color is scalars.Color.COLOR_UNSPECIFIED
    assert scalars.Repeated().r_int32 == []


def test_fields_at_their_default_are_left_out_of_the_map(scalars: ModuleType) -> None:
    message = scalars.Scalars(f_int32=0, f_string="x", f_bool=False, f_bytes=b"\x00")
    assert wire(message) == {"14": "x", "15": b"\x00"}


def test_values_equal_to_the_default_are_left_out_whatever_object_holds_them(
    scalars: ModuleType,
) -> None:
    # msgspec leaves out a field only when it holds its default object; a computed 0.0, an
    # int 0 for a double, a plain 0 for an enum or an empty bytearray are replaced by it.
    zero = float("0")
    message = scalars.Scalars(
        f_double=zero, f_float=0 * 1.5, f_color=0, f_bytes=bytearray(), f_int64=int("0")
    )
    assert wire(message) == {}
    assert message.f_double is rm.ZERO and message.f_float is rm.ZERO
    assert message.f_color is scalars.Color.COLOR_UNSPECIFIED and message.f_bytes == b""
    decoded = scalars.Scalars.from_bytes(packb({"1": 0.0, "2": 0.0, "16": 0}))
    assert decoded == scalars.Scalars() and wire(decoded) == {}
    assert wire(scalars.Scalars(f_double=-0.0)) == {"1": -0.0}  # not the default: written
    nan = wire(scalars.Scalars(f_double=math.nan))["1"]
    assert math.isnan(nan)


def test_optional_fields_keep_presence_of_zero_values(scalars: ModuleType) -> None:
    message = scalars.Optionals(o_int32=0, o_string="", o_bool=False, o_color=scalars.Color(0))
    assert wire(message) == {"3": 0, "8": "", "7": False, "10": 0}
    decoded = scalars.Optionals.from_bytes(message.to_bytes())
    assert decoded.o_int32 == 0 and decoded.o_string == "" and decoded.o_bool is False
    assert decoded.o_int64 is None
    assert decoded == message


def test_unknown_field_numbers_are_ignored(scalars: ModuleType) -> None:
    data = packb({"3": 7, "999": "from a newer peer", "1000": [1, {"1": b"x"}], "x": None})
    assert scalars.Scalars.from_bytes(data) == scalars.Scalars(f_int32=7)


def test_field_numbers_must_be_string_keys(scalars: ModuleType) -> None:
    # docs/protocol.md: keys are decimal strings; an int key is not a field number.
    with pytest.raises(DecodeError, match=r"^Scalars key: Expected `str`, got `int`$"):
        scalars.Scalars.from_bytes(msgpack.packb({3: 7}))


def test_float_fields_decode_only_what_they_can_encode(scalars: ModuleType) -> None:
    # f_float is field 2. A double just above float32's range decoded fine once and then
    # failed to encode again; now it is a DecodeError.
    for value in (3.4028235000000003e38, -1e39):
        with pytest.raises(
            rm.DecodeError, match=r"^Scalars\.f_float: .* is out of range for float"
        ):
            scalars.Scalars.from_bytes(packb({"2": value}))
    for value in (3.4028235e38, float("inf"), float("nan"), 1.5, 3):
        decoded = scalars.Scalars.from_bytes(packb({"2": value}))
        again = scalars.Scalars.from_bytes(decoded.to_bytes())  # and it encodes again
        assert again.to_bytes() == decoded.to_bytes()


def test_from_bytes_accepts_memoryview_and_bytearray(scalars: ModuleType) -> None:
    message = scalars.Scalars(f_string="hi", f_bytes=b"\x01\x02", f_int64=-5)
    data = message.to_bytes()
    assert isinstance(data, bytes)
    buffer = bytearray(b"junk" + data)
    assert scalars.Scalars.from_bytes(memoryview(buffer)[4:]) == message
    assert scalars.Scalars.from_bytes(bytearray(data)) == message


def test_empty_buffer_decodes_to_the_default_message(scalars: ModuleType) -> None:
    assert scalars.Scalars.from_bytes(b"") == scalars.Scalars()
    assert scalars.Scalars.from_bytes(memoryview(b"")) == scalars.Scalars()


def test_nested_messages_round_trip(scalars: ModuleType) -> None:
    message = scalars.Scalars(f_int32=1, child=scalars.Scalars(f_string="inner"))
    assert wire(message) == {"3": 1, "17": {"14": "inner"}}
    assert scalars.Scalars.from_bytes(message.to_bytes()).child.f_string == "inner"


def test_equality_and_repr(scalars: ModuleType) -> None:
    one = scalars.Scalars(f_int32=1, f_string="a")
    assert one == scalars.Scalars(f_int32=1, f_string="a")
    assert one != scalars.Scalars(f_int32=2, f_string="a")
    assert one != scalars.Optionals()
    text = repr(one)
    assert text.startswith("Scalars(f_double=0.0, f_float=0.0, f_int32=1,")
    with pytest.raises(TypeError):
        hash(one)


def test_constructor_is_keyword_only(scalars: ModuleType) -> None:
    with pytest.raises(TypeError):
        scalars.Scalars(1)
    with pytest.raises(TypeError):
        scalars.Scalars(no_such_field=1)


def test_messages_have_slots_and_no_dict(scalars: ModuleType) -> None:
    message = scalars.Scalars()
    with pytest.raises(AttributeError):
        message.not_a_field = 1


# -- types and ranges ---------------------------------------------------------------------------

RANGES = [
    ("f_int32", -(2**31), 2**31 - 1),
    ("f_sint32", -(2**31), 2**31 - 1),
    ("f_sfixed32", -(2**31), 2**31 - 1),
    ("f_uint32", 0, 2**32 - 1),
    ("f_fixed32", 0, 2**32 - 1),
    ("f_int64", -(2**63), 2**63 - 1),
    ("f_sint64", -(2**63), 2**63 - 1),
    ("f_sfixed64", -(2**63), 2**63 - 1),
    ("f_uint64", 0, 2**64 - 1),
    ("f_fixed64", 0, 2**64 - 1),
]


@pytest.mark.parametrize(("field", "lo", "hi"), RANGES)
def test_integers_at_the_limits_round_trip(
    scalars: ModuleType, field: str, lo: int, hi: int
) -> None:
    for value in (lo, hi):
        message = scalars.Scalars(**{field: value})
        assert getattr(scalars.Scalars.from_bytes(message.to_bytes()), field) == value


@pytest.mark.parametrize(("field", "lo", "hi"), RANGES)
def test_out_of_range_integers_raise_value_error_naming_the_field(
    scalars: ModuleType, field: str, lo: int, hi: int
) -> None:
    for value in (lo - 1, hi + 1):
        with pytest.raises(ValueError, match=rf"Scalars\.{field}: {value} is out of range"):
            scalars.Scalars(**{field: value}).to_bytes()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("f_int32", "1"),
        ("f_int32", 1.0),
        ("f_int32", True),
        ("f_int64", None),
        ("f_string", b"bytes"),
        ("f_string", 0),
        ("f_bytes", "text"),
        ("f_bool", 1),
        ("f_bool", None),
        ("f_double", "1.5"),
        ("f_double", None),
        ("child", "not a message"),
        ("f_color", "COLOR_RED"),
    ],
)
def test_wrong_types_raise_type_error_naming_the_field(
    scalars: ModuleType, field: str, value: object
) -> None:
    with pytest.raises(TypeError, match=rf"^Scalars\.{field}: expected"):
        scalars.Scalars(**{field: value}).to_bytes()


def test_wrong_item_types_in_containers_name_the_field(scalars: ModuleType) -> None:
    with pytest.raises(TypeError, match=r"Repeated\.r_int32\[1\]: expected int"):
        scalars.Repeated(r_int32=[1, "2"]).to_bytes()
    with pytest.raises(ValueError, match=r"Repeated\.r_uint32\[0\]: -1 is out of range"):
        scalars.Repeated(r_uint32=[-1]).to_bytes()
    with pytest.raises(TypeError, match=r"Repeated\.r_message\[0\]: expected Scalars"):
        scalars.Repeated(r_message=[scalars.Optionals()]).to_bytes()
    with pytest.raises(TypeError, match=r"Repeated\.r_string: expected a list"):
        scalars.Repeated(r_string="abc").to_bytes()


def test_compatible_values_are_accepted_and_normalised(scalars: ModuleType) -> None:
    message = scalars.Scalars(
        f_double=3, f_float=2, f_bytes=bytearray(b"ab"), f_int32=scalars.Color.COLOR_GREEN
    )
    # An int for a double is written as an int (a receiver takes it); float fields get floats.
    assert wire(message) == {"1": 3, "2": 2.0, "15": b"ab", "3": 2}
    assert type(wire(message)["1"]) is int and type(wire(message)["2"]) is float
    repeated = scalars.Repeated(r_int32=(1, 2), r_double=[1, 2.5], r_bytes=[memoryview(b"x")])
    assert wire(repeated) == {"3": [1, 2], "1": [1.0, 2.5], "11": [b"x"]}
    decoded = scalars.Scalars.from_bytes(message.to_bytes())
    assert decoded.f_double == 3.0 and type(decoded.f_double) is float


def test_float_fields_are_checked_against_the_float32_range(scalars: ModuleType) -> None:
    with pytest.raises(ValueError, match=r"Scalars\.f_float: .* out of range for float"):
        scalars.Scalars(f_float=1e39).to_bytes()
    for value in (3.4e38, -3.4e38, math.inf, -math.inf):
        assert wire(scalars.Scalars(f_float=value)) == {"2": value}
    assert math.isnan(
        scalars.Scalars.from_bytes(scalars.Scalars(f_double=math.nan).to_bytes()).f_double
    )


def test_strings_that_are_not_utf8_encodable_are_a_value_error(scalars: ModuleType) -> None:
    # The fast path lets any str through; the encoder's UnicodeEncodeError becomes a
    # ValueError naming the message.
    with pytest.raises(ValueError, match=r"^Scalars: a string is not valid UTF-8"):
        scalars.Scalars(f_string="\ud800").to_bytes()
    # the reference check (taken for any other reason) names the field
    with pytest.raises(ValueError, match=r"^Repeated\.r_string\[0\]: .*unpaired surrogate"):
        scalars.Repeated(r_string=["\udfff"], r_int32=(1,)).to_bytes()


# -- decoding -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (packb({"3": "seven"}), "Scalars.f_int32: Expected `int`, got `str`"),
        (packb({"3": 2**31}), "Scalars.f_int32: Expected `int` <= 2147483647"),
        (packb({"3": -(2**31) - 1}), "Scalars.f_int32: Expected `int` >= -2147483648"),
        (packb({"5": -1}), "Scalars.f_uint32: Expected `int` >= 0"),
        (packb({"5": 2**32}), "Scalars.f_uint32: Expected `int` <= 4294967295"),
        (packb({"4": 2**63}), "Scalars.f_int64: Expected `int` <= 9223372036854775807"),
        (packb({"14": b"bin"}), "Scalars.f_string: Expected `str`, got `bytes`"),
        (packb({"15": "text"}), "Scalars.f_bytes: Expected `bytes`, got `str`"),
        (packb({"13": 1}), "Scalars.f_bool: Expected `bool`, got `int`"),
        (packb({"1": "1.5"}), "Scalars.f_double: Expected `float`, got `str`"),
        (packb({"17": [1]}), "Scalars.child: Expected `object | null`, got `array`"),
        (packb({"17": {"3": 2**31}}), "Scalars.child.f_int32: Expected `int` <= 2147483647"),
        (msgpack.packb([1, 2]), "Scalars: Expected `object`, got `array`"),
        (b"\xc1", "Scalars: not valid MessagePack (MessagePack data is malformed: "),
        (b"\x81\xa13", "Scalars: not valid MessagePack (Input data was truncated)"),
        (packb({"16": 2**40}), "Scalars.f_color: Invalid enum value 1099511627776"),
    ],
)
def test_malformed_input_raises_decode_error_naming_the_field(
    scalars: ModuleType, data: bytes, message: str
) -> None:
    with pytest.raises(DecodeError) as caught:
        scalars.Scalars.from_bytes(data)
    assert str(caught.value).startswith(message)


def test_decode_errors_name_the_path_through_containers(
    scalars: ModuleType, cases: dict[str, Generated]
) -> None:
    maps = cases["maps"].module("maps_rpc")
    for cls, document, message in [
        (scalars.Repeated, {"3": [1, 2**31]}, "Repeated.r_int32[1]: Expected `int` <= 2147483647"),
        (scalars.Repeated, {"13": [{}, {"3": "x"}]}, "Repeated.r_message[1].f_int32: Expected"),
        (scalars.Repeated, {"2": [1.0, 1e39]}, "Repeated.r_float[1]: 1e+39 is out of range"),
        (maps.Maps, {"1": {2**31: "x"}}, "Maps.by_int32 key: Expected `int` <= 2147483647"),
        (maps.Maps, {"6": {1: 1e39}}, "Maps.by_fixed64[1]: 1e+39 is out of range for float"),
        (maps.Maps, {"8": {"a": {"1": 5}}}, "Maps.items[...].name: Expected `str`, got `int`"),
    ]:
        with pytest.raises(DecodeError) as caught:
            cls.from_bytes(msgpack.packb(document))
        assert str(caught.value).startswith(message)


def test_decode_error_is_a_value_error() -> None:
    assert issubclass(DecodeError, ValueError)


def test_integers_decode_into_double_fields(scalars: ModuleType) -> None:
    # Some msgpack encoders write 2.0 as the int 2.
    decoded = scalars.Scalars.from_bytes(packb({"1": 2, "2": -3}))
    assert (decoded.f_double, decoded.f_float) == (2.0, -3.0)
    assert isinstance(decoded.f_double, float)


def test_deeply_nested_input_is_a_decode_error(cases: dict[str, Generated]) -> None:
    deep = cases["deep"].module("deep_rpc")
    data = b"\x81\xa13" * 5000 + b"\x80"  # {"3": {"3": ... {}}} via Tree.parent
    with pytest.raises(DecodeError, match=r"^Tree"):
        deep.Tree.from_bytes(data)
    shallow = b"\x81\xa13" * 20 + b"\x80"
    assert deep.Tree.from_bytes(shallow).parent.parent is not None


# -- enums --------------------------------------------------------------------------------------


def test_enums_are_int_enums(scalars: ModuleType) -> None:
    assert issubclass(scalars.Color, __import__("enum").IntEnum)
    assert scalars.Color.COLOR_RED == 1


def test_unknown_open_enum_values_are_kept_as_nameless_enum_values(scalars: ModuleType) -> None:
    decoded = scalars.Scalars.from_bytes(packb({"16": 42}))
    assert decoded.f_color == 42 and type(decoded.f_color) is scalars.Color
    assert decoded.f_color.name is None and decoded.f_color.known is False
    assert repr(decoded.f_color) == "Color(42)"
    assert decoded.f_color == scalars.Color(42)
    assert wire(decoded) == {"16": 42}  # sent on as it came
    known = scalars.Scalars.from_bytes(packb({"16": 2}))
    assert known.f_color is scalars.Color.COLOR_GREEN and known.f_color.known
    repeated = scalars.Repeated.from_bytes(packb({"12": [1, 77]}))
    assert repeated.r_color == [scalars.Color.COLOR_RED, 77]
    assert repeated.r_color[1].name is None
    # unknown values are not cached in the enum: hostile input cannot grow it
    assert len(scalars.Color.__members__) == 3 and 42 not in scalars.Color._value2member_map_


# -- oneofs -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def oneof(cases: dict[str, Generated]) -> ModuleType:
    return cases["oneof"].module("oneof_rpc")


@pytest.mark.parametrize(
    ("member", "zero", "number"),
    [("number", 0, 2), ("text", "", 3), ("flag", False, 4), ("blob", b"", 7), ("kind", 0, 6)],
)
def test_oneof_member_set_to_zero_stays_set(
    oneof: ModuleType, member: str, zero: object, number: int
) -> None:
    message = oneof.Choice(**{member: zero})
    assert wire(message) == {str(number): zero}
    decoded = oneof.Choice.from_bytes(message.to_bytes())
    assert decoded.which_value() == member
    assert getattr(decoded, member) == zero


def test_oneof_message_member_set_to_empty_stays_set(oneof: ModuleType) -> None:
    decoded = oneof.Choice.from_bytes(oneof.Choice(nothing=oneof.Empty()).to_bytes())
    assert decoded.which_value() == "nothing"
    assert decoded.nothing == oneof.Empty()


def test_which_oneof_is_none_when_no_member_is_set(oneof: ModuleType) -> None:
    assert oneof.Choice().which_value() is None
    assert oneof.Choice(ratio=0.0).which_second() == "ratio"


def test_setting_two_oneof_members_is_rejected(oneof: ModuleType) -> None:
    with pytest.raises(ValueError, match=r"Choice\.value: oneof has more than one member set"):
        oneof.Choice(number=1, text="x")
    message = oneof.Choice(number=1)
    message.text = "also"
    with pytest.raises(ValueError, match="more than one member"):
        message.to_bytes()
    with pytest.raises(
        DecodeError, match=r"^Choice\.value: oneof has more than one member set \(number, text\)$"
    ):
        oneof.Choice.from_bytes(packb({"2": 1, "3": "x"}))


# -- maps ---------------------------------------------------------------------------------------


def test_maps_with_integer_and_bool_keys_round_trip(cases: dict[str, Generated]) -> None:
    maps = cases["maps"].module("maps_rpc")
    message = maps.Maps(
        by_int32={-1: "minus", 7: "seven"},
        by_int64={2**62: -(2**62)},
        by_uint32={2**32 - 1: b"max"},
        by_uint64={2**64 - 1: 0.5},
        by_sint32={-5: True},
        by_fixed64={1: 1.5},
        by_bool={True: "yes", False: "no"},
        items={"a": maps.Item(name="x")},
        levels={"l": maps.Level.LEVEL_HIGH, "unknown": 9},
        counts={"n": 3},
    )
    assert maps.Maps.from_bytes(message.to_bytes()) == message
    assert wire(message)["7"] == {True: "yes", False: "no"}
    assert wire(message)["1"] == {-1: "minus", 7: "seven"}  # map keys keep their own types
    assert wire(message)["4"] == {2**64 - 1: 0.5}


def test_map_key_and_value_types_are_checked(cases: dict[str, Generated]) -> None:
    maps = cases["maps"].module("maps_rpc")
    with pytest.raises(TypeError, match=r"Maps\.by_int32 key: expected int"):
        maps.Maps(by_int32={"1": "x"}).to_bytes()
    with pytest.raises(ValueError, match=r"Maps\.counts\['n'\]: 2147483648 is out of range"):
        maps.Maps(counts={"n": 2**31}).to_bytes()
    with pytest.raises(DecodeError, match=r"^Maps\.by_bool key: Expected `bool`, got `int`$"):
        maps.Maps.from_bytes(msgpack.packb({"7": {1: "x"}}))


# -- names --------------------------------------------------------------------------------------


def test_keyword_fields_are_escaped_and_keep_their_proto_names(
    cases: dict[str, Generated],
) -> None:
    keywords = cases["keywords"].module("keywords_rpc")
    message = keywords.Keywords(
        class_=1, from_="a", self_=2, type_=3, list__=keywords.list_(str_=4)
    )
    message.import_ = "x"
    assert keywords.Keywords.from_bytes(message.to_bytes()) == message
    assert message.to_dict() == {
        "class": 1,
        "from": "a",
        "self": "2",
        "type": 3,
        "list": {"str": 4},
        "import": "x",
    }
    assert message.which_lambda() == "import_"
    assert keywords.Flags.None_ == 0 and keywords.Flags.name_ == 2
    assert keywords.Keywords(None_=keywords.Flags.name_).to_dict() == {"None": "name"}


def test_nested_names_do_not_collide_with_similar_top_level_names(
    cases: dict[str, Generated],
) -> None:
    nested = cases["nested"].module("nested_rpc")
    assert nested.Content.Status is not nested.ContentStatus
    assert nested.Content.Status.STATUS_NESTED == 1 and nested.ContentStatus.CONTENT_STATUS_TOP == 7
    assert nested.Content.Line is not nested.ContentLine
    assert nested.Content.Status.__qualname__ == "Content.Status"
    shadow = nested.Shadow(class__=nested.Shadow.class_(x=1), ContentLine_=nested.ContentLine())
    assert nested.Shadow.from_bytes(shadow.to_bytes()) == shadow


def test_deeply_nested_classes_round_trip(cases: dict[str, Generated]) -> None:
    deep = cases["deep"].module("deep_rpc")
    e = deep.A.B.C.D.E(depth=deep.A.B.C.D.E.Depth.DEPTH_FIVE, leaf="x")
    message = deep.A(b=deep.A.B(c=deep.A.B.C(d=deep.A.B.C.D(e=e))), shortcut=e)
    assert deep.A.from_bytes(message.to_bytes()) == message
    tree = deep.Tree(name="root", children=[deep.Tree(name="kid")], named={"k": deep.Tree()})
    assert deep.Tree.from_bytes(tree.to_bytes()) == tree


# -- proto2 and editions ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def defaults(cases: dict[str, Generated]) -> ModuleType:
    return cases["defaults"].module("defaults_rpc")


def test_proto2_fields_have_explicit_presence_and_documented_defaults(
    defaults: ModuleType,
) -> None:
    message = defaults.Defaults(id="x")
    # None is "not set" (protobuf's HasField is false); a declared default is documented on
    # the field, not an attribute default (see "Known differences" in docs/codegen.md).
    unset = ("retries", "name", "magic", "ratio", "limit", "enabled", "mode", "first_mode")
    assert [getattr(message, name) for name in unset] == [None] * len(unset)
    doc = defaults.Defaults.__doc__
    assert "retries: Not set (None) means 3." in doc
    assert 'magic: Not set (None) means \\000\\377rp\\"c.' in doc
    assert "limit: Not set (None) means -inf." in doc
    assert "mode: Not set (None) means MODE_SAFE." in doc
    assert "first_mode" not in doc  # no declared default
    assert wire(message) == {"10": "x"}
    decoded = defaults.Defaults.from_bytes(message.to_bytes())
    assert decoded == message and decoded.mode is None
    # Set, even to zero or to the declared default, a field is written and read back as set.
    changed = defaults.Defaults(
        id="x",
        retries=0,
        enabled=False,
        mode=defaults.Mode.MODE_FAST,
        limit=-math.inf,
        name="anonymous",
        plain=0,
    )
    assert wire(changed) == {
        "10": "x",
        "1": 0,
        "2": "anonymous",
        "5": -math.inf,
        "6": False,
        "7": 1,
        "9": 0,
    }
    decoded = defaults.Defaults.from_bytes(changed.to_bytes())
    assert decoded == changed and decoded.mode is defaults.Mode.MODE_FAST
    assert decoded.retries == 0 and decoded.first_mode is None


def test_proto2_required_fields_are_checked(defaults: ModuleType) -> None:
    # A required constructor argument; None means "not set yet" and cannot be sent.
    with pytest.raises(TypeError, match="Missing required argument 'id'"):
        defaults.Defaults()
    with pytest.raises(ValueError, match=r"^Defaults\.id: required field is not set$"):
        defaults.Defaults(id=None).to_bytes()
    with pytest.raises(ValueError, match=r"^Defaults\.id: required field is not set$"):
        defaults.Defaults(id="a", child=defaults.Defaults(id=None)).to_bytes()
    with pytest.raises(DecodeError, match=r"^Defaults\.id: required field is missing$"):
        defaults.Defaults.from_bytes(packb({"1": 5}))
    with pytest.raises(DecodeError, match=r"^Defaults\.child\.id: required field is missing$"):
        defaults.Defaults.from_bytes(packb({"10": "a", "14": {}}))
    # nil is not a value: a required field holding it is as missing as an absent one
    with pytest.raises(DecodeError, match=r"^Defaults\.id: Expected `str`, got `None`$"):
        defaults.Defaults.from_bytes(packb({"10": None}))
    assert defaults.Defaults(id="").to_bytes() == packb({"10": ""})
    # an optional field given as nil is simply not set
    assert defaults.Defaults.from_bytes(packb({"10": "a", "1": None})).retries is None


def test_proto2_groups_and_extensions_are_skipped(defaults: ModuleType) -> None:
    assert not hasattr(defaults.Defaults, "Legacy")
    assert "legacy" not in defaults.Defaults.__slots__
    assert not hasattr(defaults, "extra")


def test_editions_presence_comes_from_features(cases: dict[str, Generated]) -> None:
    editions = cases["editions"].module("editions_rpc")
    node = editions.Node(required_value=1)
    assert node.label is None and node.explicit_value is None and node.implicit_value == 0
    assert "label: Not set (None) means none." in editions.Node.__doc__
    assert wire(node) == {"3": 1}
    zeros = editions.Node(required_value=0, explicit_value=0, implicit_value=0, label="")
    assert wire(zeros) == {"1": 0, "3": 0, "4": ""}  # explicit presence keeps zeros
    assert editions.Node.from_bytes(zeros.to_bytes()) == zeros
    with pytest.raises(TypeError, match="Missing required argument 'required_value'"):
        editions.Node()
    with pytest.raises(ValueError, match=r"^Node\.required_value: required field is not set$"):
        editions.Node(required_value=None).to_bytes()
    nested = editions.Node(required_value=1, child=editions.Node(required_value=2), values=[1])
    assert editions.Node.from_bytes(nested.to_bytes()) == nested


# -- well-known types ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wkt(cases: dict[str, Generated]) -> ModuleType:
    return cases["wkt"].module("wkt_rpc")


def test_timestamps_are_aware_datetimes(wkt: ModuleType) -> None:
    tokyo = datetime.timezone(datetime.timedelta(hours=9))
    when = datetime.datetime(2024, 2, 29, 12, 30, 1, 123456, tzinfo=tokyo)
    decoded = wkt.WellKnown.from_bytes(wkt.WellKnown(created=when).to_bytes())
    assert decoded.created == when
    assert decoded.created.tzinfo == datetime.timezone.utc
    with pytest.raises(ValueError, match=r"WellKnown\.created: naive datetime"):
        wkt.WellKnown(created=datetime.datetime(2024, 1, 1)).to_bytes()
    with pytest.raises(TypeError, match=r"WellKnown\.created: expected datetime"):
        wkt.WellKnown(created=datetime.date(2024, 1, 1)).to_bytes()


def test_durations_are_timedeltas(wkt: ModuleType) -> None:
    for delta in (
        datetime.timedelta(seconds=-1, microseconds=500),
        datetime.timedelta(days=-3, microseconds=1),
        datetime.timedelta(days=3_650_000),
        datetime.timedelta(0),
    ):
        message = wkt.WellKnown(ttl=delta, timeouts={"t": delta})
        assert wkt.WellKnown.from_bytes(message.to_bytes()) == message
    # docs/protocol.md: an ISO 8601 duration string, as msgspec writes it
    assert wire(wkt.WellKnown(ttl=datetime.timedelta(seconds=-1.5)))["2"] == "-PT1.5S"
    assert wire(wkt.WellKnown(ttl=datetime.timedelta(days=-3, microseconds=1)))["2"] == (
        "-P2DT86399.999999S"
    )
    with pytest.raises(ValueError, match="out of range for Duration"):
        wkt.WellKnown(ttl=datetime.timedelta(days=4_000_000)).to_bytes()


def test_wrappers_are_optional_scalars_that_keep_zero(wkt: ModuleType) -> None:
    message = wkt.WellKnown(w_int64=0, w_bool=False, w_string="", w_bytes=b"", numbers=[0, 1])
    assert wire(message) == {"5": 0, "9": False, "10": "", "11": b"", "20": [0, 1]}
    decoded = wkt.WellKnown.from_bytes(message.to_bytes())
    assert decoded.w_int64 == 0 and decoded.w_double is None
    with pytest.raises(ValueError, match=r"WellKnown\.w_uint32: -1 is out of range"):
        wkt.WellKnown(w_uint32=-1).to_bytes()


def test_struct_value_and_list_value_are_plain_python_data(wkt: ModuleType) -> None:
    message = wkt.WellKnown(
        attributes={"a": 1, "b": [True, None, "x"], "c": {"d": 2.5}},
        anything=[1, {"k": None}],
        items=["one", 2],
        extra={"v": "x"},
    )
    # numbers are doubles, as in protobuf, from construction on
    assert message.attributes["a"] == 1.0 and type(message.attributes["a"]) is float
    assert type(message.anything[0]) is float and type(message.items[1]) is float
    decoded = wkt.WellKnown.from_bytes(message.to_bytes())
    assert decoded.attributes == {"a": 1.0, "b": [True, None, "x"], "c": {"d": 2.5}}
    assert isinstance(decoded.attributes["a"], float)  # numbers are doubles, as in protobuf
    assert decoded.anything == [1.0, {"k": None}] and decoded.items == ["one", 2.0]
    with pytest.raises(TypeError, match=r"WellKnown\.attributes\['a'\]: bytes is not a JSON value"):
        wkt.WellKnown(attributes={"a": b"x"}).to_bytes()
    with pytest.raises(TypeError, match=r"keys must be str"):
        wkt.WellKnown(attributes={1: "x"}).to_bytes()


def test_any_packs_and_unpacks_generated_messages(wkt: ModuleType) -> None:
    note = wkt.Note(text="hi")
    packed = rm.Any.pack(note)
    assert packed.type_url == "type.googleapis.com/cases.wkt.Note"
    assert packed.is_type(wkt.Note) and not packed.is_type(wkt.WellKnown)
    decoded = wkt.WellKnown.from_bytes(wkt.WellKnown(packed=packed).to_bytes())
    assert decoded.packed.unpack(wkt.Note) == note
    assert decoded.packed.unpack() == note
    with pytest.raises(TypeError, match=r"not 'cases\.wkt\.WellKnown'"):
        decoded.packed.unpack(wkt.WellKnown)


def test_field_mask_empty_and_null_value(wkt: ModuleType) -> None:
    message = wkt.WellKnown(mask=["a.b", "c_d"], nothing=rm.Empty(), null=rm.NullValue.NULL_VALUE)
    decoded = wkt.WellKnown.from_bytes(message.to_bytes())
    assert decoded.mask == ["a.b", "c_d"] and decoded.nothing == rm.Empty()
    assert wire(message) == {"17": ["a.b", "c_d"], "12": {}}


def test_a_failed_encode_does_not_corrupt_the_next_one(scalars: ModuleType) -> None:
    good = scalars.Scalars(f_string="ok", f_int32=1)
    expected = good.to_bytes()
    with pytest.raises(ValueError):
        scalars.Scalars(f_string="x" * 100 + "\ud800").to_bytes()
    assert good.to_bytes() == expected
    assert msgpack.unpackb(expected) == {"3": 1, "14": "ok"}


def test_concurrent_encoding_from_threads_gives_correct_bytes(scalars: ModuleType) -> None:
    import threading

    errors: list[str] = []

    def work(n: int) -> None:
        for i in range(2000):
            message = scalars.Repeated(r_string=[f"{n}-{i}"] * 3, r_int64=list(range(n)))
            if scalars.Repeated.from_bytes(message.to_bytes()) != message:
                errors.append(f"thread {n}, item {i}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_messages_pickle_and_copy(scalars: ModuleType) -> None:
    import copy
    import pickle

    message = scalars.Scalars(f_string="x", child=scalars.Scalars(f_int32=3))
    assert pickle.loads(pickle.dumps(message)) == message
    clone = copy.deepcopy(message)
    assert clone == message and clone.child is not message.child
