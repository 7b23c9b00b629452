"""Python names for proto names."""

from __future__ import annotations

import enum
import keyword

import pytest

from rpcpoll.codegen import naming


@pytest.mark.parametrize("word", [*keyword.kwlist, *keyword.softkwlist, "type"])
def test_keywords_and_soft_keywords_get_a_trailing_underscore(word: str) -> None:
    assert naming.field_name(word) == word + "_"
    assert naming.type_name(word) == word + "_"


def test_fields_do_not_shadow_message_methods_builtins_or_taken_names() -> None:
    assert naming.field_name("to_bytes") == "to_bytes_"
    assert naming.field_name("from_dict") == "from_dict_"
    assert naming.field_name("self") == "self_"
    assert naming.field_name("list") == "list_"
    assert naming.field_name("inner", taken={"inner", "inner_"}) == "inner__"
    assert naming.field_name("__init__") == "f__init__"
    assert naming.field_name("plain") == "plain"


def test_enum_members_avoid_names_enum_reserves_or_shadows() -> None:
    for name in ("name", "value", "mro", "real", "None"):
        member = naming.enum_member_name(name)
        assert member != name
        enum.IntEnum("Probe", [(member, 1)])  # must be a valid member name
    assert naming.enum_member_name("_sunder_") == "v_sunder_"
    assert naming.enum_member_name("COLOR_RED") == "COLOR_RED"


@pytest.mark.parametrize(
    ("proto", "python"),
    [
        ("Echo", "echo"),
        ("GetHTTPStatus", "get_http_status"),
        ("sayHello", "say_hello"),
        ("already_snake", "already_snake"),
        ("V2Thing", "v2_thing"),
    ],
)
def test_rpc_names_become_snake_case(proto: str, python: str) -> None:
    assert naming.snake_case(proto) == python


def test_rpc_methods_do_not_shadow_client_members() -> None:
    assert naming.method_name("Close") == "close_"
    assert naming.method_name("Import") == "import_"
    assert naming.method_name("get", taken={"get"}) == "get_"


def test_module_paths_are_importable_identifiers() -> None:
    assert naming.module_parts("echo.proto") == ("echo_rpc",)
    assert naming.module_parts("a/b-c/1x.proto") == ("a", "b_c", "_1x_rpc")
    assert naming.module_parts("import/class.proto") == ("import_", "class_rpc")
    # soft keywords and builtins are fine as package names (googleapis: google/type/...)
    assert naming.module_parts("google/type/money.proto") == ("google", "type", "money_rpc")
    assert naming.module_parts("match/list.proto") == ("match", "list_rpc")


@pytest.mark.parametrize(
    ("source", "target", "expected"),
    [
        (("x_rpc",), ("y_rpc",), (".", "y_rpc")),
        (("a", "b", "x_rpc"), ("c", "y_rpc"), ("...c", "y_rpc")),
        (("a", "x_rpc"), ("a", "b", "y_rpc"), (".b", "y_rpc")),
        (("x_rpc",), ("google", "protobuf", "type_rpc"), (".google.protobuf", "type_rpc")),
    ],
)
def test_imports_between_generated_modules_are_relative(
    source: tuple[str, ...], target: tuple[str, ...], expected: tuple[str, str]
) -> None:
    assert naming.relative_import(source, target) == expected


def test_json_names_follow_protoc() -> None:
    assert naming.json_name("foo_bar_baz") == "fooBarBaz"
    assert naming.json_name("foo") == "foo"
    assert naming.json_name("foo__bar") == "fooBar"


def test_literals_are_valid_python_with_double_quotes() -> None:
    for value in ["it's", 'say "hi"', "a\\b\n", b"\x00'", b'"', 1.5, float("inf"), float("-inf")]:
        literal = naming.py_literal(value)
        assert eval(literal) == value
    assert naming.py_literal("plain") == '"plain"'
    assert eval(naming.py_literal(float("nan"))) != 0.0


def test_docstrings_escape_quotes_and_backslashes() -> None:
    text = 'Has """ quotes, a \\ backslash\nand a trailing quote"'
    literal = naming.docstring(text, "    ")
    assert eval(literal).strip() == text.replace("\n", "\n    ")
    assert naming.docstring("one line", "") == '"""one line"""'


def test_isort_key_orders_constants_then_classes_then_the_rest() -> None:
    names = ["list_", "Keywords", "IMPORT", "ImportClient", "Flags"]
    assert sorted(names, key=naming.isort_key) == [
        "IMPORT",
        "Flags",
        "ImportClient",
        "Keywords",
        "list_",
    ]
