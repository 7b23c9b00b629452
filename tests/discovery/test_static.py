"""StaticResolver: fixed lists, `update` notifies subscribers, unsubscribe stops that."""

from __future__ import annotations

import pytest

from rpcpoll.discovery import Instance, Resolver, StaticResolver, as_instance


def test_mapping_resolves_per_service_and_unknown_is_empty() -> None:
    resolver = StaticResolver({"echo": ["127.0.0.1:1", Instance("127.0.0.1:2", weight=3)]})
    assert resolver.resolve("echo") == [Instance("127.0.0.1:1"), Instance("127.0.0.1:2", weight=3)]
    assert resolver.resolve("other") == []


def test_plain_list_serves_every_service() -> None:
    resolver = StaticResolver(["127.0.0.1:1", "unix:/tmp/x.sock"])
    expected = [Instance("127.0.0.1:1"), Instance("/tmp/x.sock", network="unix")]
    assert resolver.resolve("a") == expected
    assert resolver.resolve("b") == expected
    assert resolver.resolve("b")[1].target == "unix:/tmp/x.sock"


def test_resolve_returns_a_copy() -> None:
    resolver = StaticResolver({"echo": ["127.0.0.1:1"]})
    resolver.resolve("echo").clear()
    assert resolver.resolve("echo") == [Instance("127.0.0.1:1")]


def test_subscribe_gets_current_list_then_updates_of_its_service_only() -> None:
    resolver = StaticResolver({"echo": ["127.0.0.1:1"]})
    echo: list[list[Instance]] = []
    other: list[list[Instance]] = []
    resolver.subscribe("echo", echo.append)
    resolver.subscribe("other", other.append)
    assert echo == [[Instance("127.0.0.1:1")]]
    assert other == [[]]

    resolver.update("echo", ["127.0.0.1:1", "127.0.0.1:2"])
    assert echo[-1] == [Instance("127.0.0.1:1"), Instance("127.0.0.1:2")]
    assert len(other) == 1
    assert resolver.resolve("echo") == echo[-1]


def test_update_notifies_only_real_changes_tags_included() -> None:
    resolver = StaticResolver({"echo": ["127.0.0.1:1"]})
    seen: list[list[Instance]] = []
    resolver.subscribe("echo", seen.append)
    resolver.update("echo", ["127.0.0.1:1"])
    assert len(seen) == 1
    resolver.update("echo", [Instance("127.0.0.1:1", tags={"zone": "a"})])
    assert len(seen) == 2
    assert seen[-1][0].tags == {"zone": "a"}


def test_update_of_plain_list_resolver_overrides_one_service() -> None:
    resolver = StaticResolver(["127.0.0.1:1"])
    resolver.update("echo", [])
    assert resolver.resolve("echo") == []
    assert resolver.resolve("other") == [Instance("127.0.0.1:1")]


def test_unsubscribe_and_close_stop_notifications() -> None:
    resolver = StaticResolver({"echo": []})
    first: list[list[Instance]] = []
    second: list[list[Instance]] = []
    subscription = resolver.subscribe("echo", first.append)
    resolver.subscribe("echo", second.append)
    subscription.close()
    subscription.close()  # idempotent
    resolver.update("echo", ["127.0.0.1:1"])
    assert first == [[]]
    assert second == [[], [Instance("127.0.0.1:1")]]
    resolver.close()
    resolver.update("echo", ["127.0.0.1:2"])
    assert len(second) == 2


def test_a_raising_callback_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    resolver = StaticResolver({"echo": []})
    seen: list[list[Instance]] = []

    def boom(_: object) -> None:
        raise RuntimeError("boom")

    resolver.subscribe("echo", boom)
    resolver.subscribe("echo", seen.append)
    resolver.update("echo", ["127.0.0.1:1"])
    assert seen[-1] == [Instance("127.0.0.1:1")]
    assert "raised" in caplog.text


def test_callback_may_update_from_inside() -> None:
    resolver = StaticResolver({"echo": []})
    seen: list[list[Instance]] = []

    def on_change(instances: object) -> None:
        seen.append(list(instances))  # type: ignore[call-overload]
        if len(seen) == 1:
            resolver.update("echo", ["127.0.0.1:9"])

    resolver.subscribe("echo", on_change)
    assert seen == [[], [Instance("127.0.0.1:9")]]


def test_is_a_resolver_and_bad_specs_are_value_errors() -> None:
    resolver: Resolver = StaticResolver()
    assert resolver.resolve("x") == []
    assert as_instance("127.0.0.1:5") == Instance("127.0.0.1:5")
    for bad in ("", "unix:", 5):
        with pytest.raises(ValueError):
            as_instance(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        StaticResolver({"echo": [""]})
