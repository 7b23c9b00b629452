"""etcd URL grammar, service names, the Kitex key/value layout and the advertised address."""

from __future__ import annotations

import json

import pytest

from rpcpoll.discovery import (
    DEFAULT_PREFIX,
    DEFAULT_WEIGHT,
    EtcdRegistry,
    EtcdResolver,
    EtcdURL,
    Instance,
    advertise_address,
    local_ipv4,
    parse_etcd_target,
    parse_etcd_url,
)
from rpcpoll.discovery.etcd_gateway import parse_endpoint, prefix_range_end
from rpcpoll.discovery.etcd_layout import decode_instance, encode_instance, instance_key

# --- URLs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("etcd://127.0.0.1:2379", EtcdURL(("127.0.0.1:2379",), None, None)),
        ("etcd://127.0.0.1:2379/", EtcdURL(("127.0.0.1:2379",), None, None)),
        ("ETCD://localhost/echo", EtcdURL(("localhost:2379",), "echo", None)),
        (
            "etcd://10.0.0.1:2379,10.0.0.2:23790/pkg.Echo",
            EtcdURL(("10.0.0.1:2379", "10.0.0.2:23790"), "pkg.Echo", None),
        ),
        ("etcd://[::1]:2379/echo", EtcdURL(("[::1]:2379",), "echo", None)),
        ("etcd://[::1]/echo", EtcdURL(("[::1]:2379",), "echo", None)),
        ("etcd://h:1/a%20b", EtcdURL(("h:1",), "a b", None)),
        (
            "etcd://h:1/echo?prefix=team/services/",
            EtcdURL(("h:1",), "echo", "team/services"),
        ),
        ("etcd://h:1?prefix=p", EtcdURL(("h:1",), None, "p")),
    ],
)
def test_parse_good_urls(url: str, expected: EtcdURL) -> None:
    assert parse_etcd_url(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:2379", "must start with etcd://"),
        ("127.0.0.1:2379", "must start with etcd://"),
        ("etcd://", "no endpoint"),
        ("etcd:///echo", "no endpoint"),
        ("etcd://h:1,,h:2", "empty endpoint"),
        ("etcd://h:/echo", "port must be 1-65535"),
        ("etcd://h:99999", "port must be 1-65535"),
        ("etcd://h:abc", "port must be 1-65535"),
        ("etcd://::1:2379", "IPv6"),
        ("etcd://[]:2379", "empty IPv6"),
        ("etcd://user@h:1", "no password for 'user'"),
        ("etcd://@h:1", "empty user name"),
        ("etcd://h:1/echo?ca=/x.pem", "needs etcds://"),
        ("etcds://h:1/echo?key=/k.pem", "'key' needs 'cert'"),
        ("etcd://h:1/a/b", "must not contain '/'"),
        ("etcd://h:1/a%2Fb", "must not contain '/'"),
        ("etcd://h:1/echo#x", "fragment"),
        ("etcd://h:1/echo?ttl=3", "unknown parameter 'ttl'"),
        ("etcd://h:1/echo?prefix=", "non-empty"),
        ("etcd://h:1/echo?prefix=a&prefix=b", "given twice"),
        ("etcd://h:1/echo?prefix", "malformed query"),
    ],
)
def test_parse_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_etcd_url(url)
    assert str(info.value).startswith(f"bad etcd URL {url!r}: ")


def test_parse_target_needs_a_service() -> None:
    assert parse_etcd_target("etcd://h:1,h:2/echo") == (("h:1", "h:2"), "echo")
    with pytest.raises(ValueError, match="name the service"):
        parse_etcd_target("etcd://h:1")


def test_from_url_constructors() -> None:
    registry = EtcdRegistry.from_url("etcd://127.0.0.1:1,127.0.0.1:2?prefix=p/", ttl=3)
    assert registry.gateway.endpoints == (("127.0.0.1", 1), ("127.0.0.1", 2))
    assert (registry.prefix, registry.ttl) == ("p", 3)
    registry.close()
    resolver = EtcdResolver.from_url("etcd://127.0.0.1:1/echo", relist_interval=5)
    assert resolver.prefix == DEFAULT_PREFIX
    assert resolver.relist_interval == 5
    resolver.close()
    with pytest.raises(ValueError, match="names no service"):
        EtcdRegistry.from_url("etcd://127.0.0.1:1/echo")
    with pytest.raises(ValueError, match="both"):
        EtcdResolver.from_url("etcd://127.0.0.1:1?prefix=a", prefix="b")


def test_bad_constructor_arguments() -> None:
    for kwargs in ({"ttl": 0}, {"ttl": 1.5}, {"check_interval": 0}, {"prefix": "/"}):
        with pytest.raises(ValueError):
            EtcdRegistry("127.0.0.1:1", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        EtcdResolver("127.0.0.1:1", relist_interval=0)
    with pytest.raises(ValueError, match="at least one"):
        EtcdResolver([])
    with pytest.raises(ValueError, match="http:// or https://"):
        EtcdResolver("ftp://127.0.0.1:2379")
    with pytest.raises(ValueError, match="all http:// or all https://"):
        EtcdResolver(["https://127.0.0.1:2379", "http://127.0.0.1:2380"])


def test_endpoint_forms() -> None:
    assert parse_endpoint("http://127.0.0.1:2379/") == ("127.0.0.1", 2379)
    assert parse_endpoint("[::1]:2379") == ("::1", 2379)
    for bad in ("127.0.0.1", ":2379", "h:0", "a b:1"):
        with pytest.raises(ValueError):
            parse_endpoint(bad)


# --- service names and the layout ------------------------------------------------------------


@pytest.mark.parametrize("service", ["", "a/b", "/", None])
def test_bad_service_names_raise_value_error(service: str) -> None:
    registry = EtcdRegistry("127.0.0.1:1")
    resolver = EtcdResolver("127.0.0.1:1")
    try:
        with pytest.raises(ValueError):
            registry.register(service, Instance("127.0.0.1:1"))
        with pytest.raises(ValueError):
            registry.deregister(service, Instance("127.0.0.1:1"))
        with pytest.raises(ValueError):
            resolver.resolve(service)
        with pytest.raises(ValueError):
            resolver.subscribe(service, print)
    finally:
        registry.close()
        resolver.close()


def test_prefix_range_end() -> None:
    assert prefix_range_end(b"a/b/") == b"a/b0"
    assert prefix_range_end(b"a\xff") == b"b"
    assert prefix_range_end(b"\xff\xff") == b"\0"
    assert prefix_range_end(b"") == b"\0"


def test_kitex_key_and_value() -> None:
    instance = Instance("127.0.0.1:8888", weight=5, tags={"zone": "a"})
    assert (
        instance_key(DEFAULT_PREFIX, "echo", instance) == b"kitex/registry-etcd/echo/127.0.0.1:8888"
    )
    assert json.loads(encode_instance(instance)) == {
        "network": "tcp",
        "address": "127.0.0.1:8888",
        "weight": 5,
        "tags": {"zone": "a"},
    }
    assert decode_instance(b"k", encode_instance(instance)) == instance


@pytest.mark.parametrize(
    "value",
    [
        b"not json",
        b"[1, 2]",
        b'{"network": "tcp"}',
        b'{"address": "127.0.0.1:1"}',
        b'{"network": "tcp", "address": ""}',
        b'{"network": "tcp", "address": "127.0.0.1:1", "weight": "heavy"}',
        b'{"network": "tcp", "address": "127.0.0.1:1", "weight": true}',
        b'{"network": "tcp", "address": "127.0.0.1:1", "tags": ["a"]}',
        b'{"network": "tcp", "address": "127.0.0.1:1", "tags": {"a": 1}}',
        b"\xff\xfe",
    ],
)
def test_unusable_values_decode_to_none_with_a_warning(
    value: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    key = f"k-{value!r}".encode()
    assert decode_instance(key, value) is None
    assert "skipping value" in caplog.text


@pytest.mark.parametrize("weight", [0, -3, None])
def test_weight_zero_negative_or_missing_becomes_default(weight: int | None) -> None:
    data: dict[str, object] = {"network": "tcp", "address": "127.0.0.1:1", "tags": None}
    if weight is not None:
        data["weight"] = weight
    decoded = decode_instance(b"k", json.dumps(data).encode())
    assert decoded is not None
    assert decoded.weight == DEFAULT_WEIGHT
    assert decoded.tags == {}


# --- the advertised address --------------------------------------------------------------------


def test_concrete_host_is_kept() -> None:
    assert advertise_address("127.0.0.1:8888", environ={}) == "127.0.0.1:8888"
    assert advertise_address("[::1]:8888", environ={}) == "[::1]:8888"
    assert advertise_address("myhost:1", environ={}) == "myhost:1"


@pytest.mark.parametrize("listen", ["0.0.0.0:8888", "[::]:8888", ":8888"])
def test_unspecified_host_becomes_a_local_ipv4(listen: str) -> None:
    host, _, port = advertise_address(listen, environ={}).rpartition(":")
    assert port == "8888"
    assert host == (local_ipv4() or "127.0.0.1")
    assert not host.startswith("127.") or local_ipv4() is None


def test_local_ipv4_is_not_loopback() -> None:
    found = local_ipv4()
    assert found is None or not found.startswith("127.")


def test_environment_overrides_host_and_port() -> None:
    env = {"RPCPOLL_IP_TO_REGISTRY": "192.0.2.7", "RPCPOLL_PORT_TO_REGISTRY": "9999"}
    assert advertise_address("0.0.0.0:8888", environ=env) == "192.0.2.7:9999"
    assert advertise_address("127.0.0.1:8888", environ=env) == "192.0.2.7:9999"
    env = {"RPCPOLL_IP_TO_REGISTRY": "2001:db8::1"}
    assert advertise_address("[::]:8888", environ=env) == "[2001:db8::1]:8888"
    env = {"RPCPOLL_PORT_TO_REGISTRY": "7"}
    assert advertise_address("127.0.0.1:8888", environ=env) == "127.0.0.1:7"


def test_environment_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RPCPOLL_IP_TO_REGISTRY", "198.51.100.1")
    assert advertise_address("0.0.0.0:1") == "198.51.100.1:1"


@pytest.mark.parametrize(
    ("listen", "env"),
    [
        ("8888", {}),
        ("0.0.0.0:0", {}),
        ("0.0.0.0:x", {}),
        ("::1:8888", {}),
        ("0.0.0.0:1", {"RPCPOLL_PORT_TO_REGISTRY": "70000"}),
        ("0.0.0.0:1", {"RPCPOLL_IP_TO_REGISTRY": "a b"}),
    ],
)
def test_bad_addresses_raise_value_error(listen: str, env: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        advertise_address(listen, environ=env)


def test_a_password_in_a_url_is_masked_in_errors_and_parsed_when_valid() -> None:
    with pytest.raises(ValueError, match=r"etcds://u:\*\*\*@h:1/a/b") as info:
        parse_etcd_url("etcds://u:hunter2@h:1/a/b")
    assert "hunter2" not in str(info.value)
    parsed = parse_etcd_url("ETCDS://u%40x:p%3Aw@h:1,[::1]/svc?ca=/ca.pem&cert=/c.pem&key=/k.pem")
    assert parsed.tls and parsed.endpoints == ("h:1", "[::1]:2379") and parsed.service == "svc"
    assert (parsed.username, parsed.password) == ("u@x", "p:w")
    assert (parsed.ca_file, parsed.cert_file, parsed.key_file) == ("/ca.pem", "/c.pem", "/k.pem")
