"""Schema evolution: an old and a new version of a message read each other's bytes.

tests/codegen/cases/evolution/v1 and v2 hold two versions of the same files (a field added,
removed, renamed — same number, another name —, an enum value added, a field added to a nested
message). Each version is generated into a package of its own, as two deployed services would
have them, and each reads what the other writes.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import msgpack
import pytest
from codegen_testutil import CASES, generate_package

EVOLUTION = CASES / "evolution"


def _generate(root: Path, version: str, stem: str) -> ModuleType:
    folder = EVOLUTION / version
    package = generate_package(root, [folder / f"{stem}.proto"], [folder], prefix=version)
    return package.module(f"{stem}_rpc")


@pytest.fixture(scope="module")
def v1(generated_root: Path) -> ModuleType:
    return _generate(generated_root, "v1", "inventory")


@pytest.fixture(scope="module")
def v2(generated_root: Path) -> ModuleType:
    return _generate(generated_root, "v2", "inventory")


def test_the_old_version_reads_the_new_one(v1: ModuleType, v2: ModuleType) -> None:
    new = v2.Item(
        name="bolt",
        count=3,
        price_cents=125,
        tags=["m4"],
        detail=v2.Item.Detail(text="steel", revision=2),
        status=v2.Item.Status.STATUS_ARCHIVED,
        parts={"head": v2.Item.Detail(text="hex", revision=1)},
        archived=True,
        labels={1: "one"},
        origin=v2.Item.Detail(text="factory"),
        weight=0.0,
        sku="B-4",
        history=[v2.Item.Detail(revision=1)],
    )
    old = v1.Item.from_bytes(new.to_bytes())
    # Known fields are read, whatever their name in this version; added ones are skipped.
    assert old == v1.Item(
        name="bolt",
        count=3,
        price=125,  # renamed: the number is what travels
        tags=["m4"],
        detail=v1.Item.Detail(text="steel"),
        status=v1.Item.Status(2),  # an open enum keeps a value it does not know ...
        parts={"head": v1.Item.Detail(text="hex")},
    )
    assert old.status.name is None
    # ... and sends it on, so the new version reads it back unchanged.
    back = v2.Item.from_bytes(old.to_bytes())
    assert back.status is v2.Item.Status.STATUS_ARCHIVED
    # Fields the old version does not know are not kept (MessagePack has no unknown-field
    # set to carry them in: docs/codegen.md, "Known differences").
    assert back == v2.Item(
        name="bolt",
        count=3,
        price_cents=125,
        tags=["m4"],
        detail=v2.Item.Detail(text="steel"),
        status=v2.Item.Status.STATUS_ARCHIVED,
        parts={"head": v2.Item.Detail(text="hex")},
    )


def test_the_new_version_reads_the_old_one(v1: ModuleType, v2: ModuleType) -> None:
    old = v1.Item(
        name="nut",
        count=0,
        legacy_note="removed in v2",
        price=-7,
        detail=v1.Item.Detail(),
        status=v1.Item.Status.STATUS_ACTIVE,
    )
    new = v2.Item.from_bytes(old.to_bytes())
    # The removed field is skipped, the renamed one lands under its new name, the added ones
    # have their defaults.
    assert new == v2.Item(
        name="nut",
        price_cents=-7,
        detail=v2.Item.Detail(),
        status=v2.Item.Status.STATUS_ACTIVE,
    )
    assert new.weight is None and new.which_code() is None and new.labels == {}
    assert v1.Item.from_bytes(new.to_bytes()) == v1.Item(
        name="nut", price=-7, detail=v1.Item.Detail(), status=v1.Item.Status.STATUS_ACTIVE
    )


def test_a_removed_field_of_another_type_is_skipped(v2: ModuleType) -> None:
    # v2 reserves number 3; an old peer (or any peer) may still send it, with any value.
    for value in ("text", 5, [1, {"1": b"x"}], {"3": None}, None):
        data = msgpack.packb({"1": "x", "3": value, "99": value})
        assert v2.Item.from_bytes(data) == v2.Item(name="x")


def test_json_names_follow_the_version(v1: ModuleType, v2: ModuleType) -> None:
    # Unlike the wire, JSON carries names: a renamed field is another field there, as in
    # protobuf, unless the reader ignores unknown fields.
    old_json = v1.Item(price=5).to_dict()
    assert old_json == {"price": "5"}
    with pytest.raises(ValueError, match="no field named 'price'"):
        v2.Item.from_dict(old_json)
    assert v2.Item.from_dict(old_json, ignore_unknown_fields=True) == v2.Item()


@pytest.fixture(scope="module")
def legacy(generated_root: Path) -> tuple[ModuleType, ModuleType]:
    return _generate(generated_root, "v1", "legacy"), _generate(generated_root, "v2", "legacy")


def test_a_closed_enum_drops_values_added_in_a_newer_version(
    legacy: tuple[ModuleType, ModuleType],
) -> None:
    old, new = legacy
    sent = new.Record(
        id="r",
        kind=new.Kind.KIND_C,
        kinds=[new.Kind.KIND_A, new.Kind.KIND_C, new.Kind.KIND_B],
        size=10,
        note="n",
    )
    received = old.Record.from_bytes(sent.to_bytes())
    # proto2 enums are closed: as in protobuf, the unknown value leaves the field unset and
    # drops the item from the repeated field.
    assert received == old.Record(id="r", kinds=[old.Kind.KIND_A, old.Kind.KIND_B], size=10)
    assert received.kind is None
    assert new.Record.from_bytes(received.to_bytes()) == new.Record(
        id="r", kinds=[new.Kind.KIND_A, new.Kind.KIND_B], size=10
    )
    # the other way, everything the old version writes is understood
    written = old.Record(id="o", kind=old.Kind.KIND_B)
    assert new.Record.from_bytes(written.to_bytes()) == new.Record(id="o", kind=new.Kind.KIND_B)
