"""Redis URLs and options, without a server: what each URL builds, and which executor serves it."""

from __future__ import annotations

import importlib
import sys

import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection
from redis.asyncio.sentinel import SentinelConnectionPool

from cacheframe.backends._redis_exec import ClientExecutor, LaneExecutor
from cacheframe.backends.redis import RedisBackend, RedisClusterBackend, RedisSentinelBackend, _expiry
from cacheframe.exceptions import ConfigurationError, MissingDriverError
from cacheframe.registry import load_backend_factory
from cacheframe.settings import CacheSettings

from .redis_support import client_of


def test_entry_points_resolve() -> None:
    """Every Redis scheme resolves to its backend class through the registry."""
    assert load_backend_factory("redis://h") is RedisBackend
    assert load_backend_factory("rediss://h") is RedisBackend
    assert load_backend_factory("unix:///s") is RedisBackend
    assert load_backend_factory("redis+cluster://h:1") is RedisClusterBackend
    assert load_backend_factory("redis+sentinel://h/m") is RedisSentinelBackend


def test_url_tcp_db_and_credentials() -> None:
    """Host, port, db path, percent-encoded user and password reach the connection."""
    backend = RedisBackend.from_url("redis://me:p%40ss@cache.example:6390/3?timeout=0.5")
    kw = client_of(backend).connection_pool.connection_kwargs
    assert (kw["host"], kw["port"], kw["db"]) == ("cache.example", 6390, 3)
    assert (kw["username"], kw["password"]) == ("me", "p@ss")
    assert kw["socket_timeout"] == 0.5 and kw["socket_connect_timeout"] == 0.5
    assert "p@ss" not in repr(backend) and "p%40ss" not in repr(backend)


def test_url_defaults() -> None:
    """Without options: port 6379, db 0, 0.25 s deadlines, at most one retry, on connection errors."""
    kw = client_of(RedisBackend.from_url("redis://h")).connection_pool.connection_kwargs
    assert (kw["port"], kw["db"], kw["password"]) == (6379, 0, None)
    assert kw["socket_timeout"] == 0.25 and kw["socket_connect_timeout"] == 0.25
    assert kw["retry"].get_retries() == 1


@pytest.mark.parametrize("scheme", ["redis://h/0", "redis+cluster://h:1", "redis+sentinel://h/m"])
def test_url_protocol(scheme: str) -> None:
    """``protocol=3`` in a URL's query reaches the connections (RESP3); the default is 2."""
    factory = load_backend_factory(scheme)
    for query, protocol in (("", 2), ("?protocol=3", 3), ("?protocol=2", 2)):
        backend = factory.from_url(scheme + query)
        client = client_of(backend)
        pool = getattr(client, "connection_pool", None)
        kwargs = pool.connection_kwargs if pool is not None else client.connection_kwargs
        assert kwargs["protocol"] == protocol, (scheme, query)


def test_url_rediss_tls_options() -> None:
    """rediss:// uses TLS with the ssl_* options given in the query."""
    backend = RedisBackend.from_url("rediss://:pw@h:6380/1?ssl_cert_reqs=none&ssl_check_hostname=false")
    pool = client_of(backend).connection_pool
    assert issubclass(pool.connection_class, SSLConnection)
    kw = pool.connection_kwargs
    assert (kw["ssl_cert_reqs"], kw["ssl_check_hostname"], kw["password"], kw["db"]) == (
        "none",
        False,
        "pw",
        1,
    )


def test_ssl_option_without_tls_rejected() -> None:
    """An ssl_* option on plain redis:// is an error naming the option."""
    with pytest.raises(ConfigurationError, match="ssl_ca_certs"):
        RedisBackend.from_url("redis://h/0?ssl_ca_certs=/ca.pem")


def test_url_unix_socket() -> None:
    """unix:// takes the socket path, ?db= and the password."""
    pool = client_of(RedisBackend.from_url("unix://:pw@/run/redis/r.sock?db=4")).connection_pool
    assert issubclass(pool.connection_class, UnixDomainSocketConnection)
    kw = pool.connection_kwargs
    assert (kw["path"], kw["db"], kw["password"]) == ("/run/redis/r.sock", 4, "pw")


def test_url_db_conflict_rejected() -> None:
    """A db in the path and a different ?db= is an error."""
    with pytest.raises(ConfigurationError, match="database 1"):
        RedisBackend.from_url("redis://h/1?db=2")
    with pytest.raises(ConfigurationError, match="database number"):
        RedisBackend.from_url("redis://h/zero")


def test_url_cluster_nodes() -> None:
    """redis+cluster:// lists every startup node; a missing port means 6379."""
    client = client_of(RedisClusterBackend.from_url("redis+cluster://a:7000,b,[::1]:7002?timeout=1"))
    assert sorted(client.nodes_manager.startup_nodes) == ["::1:7002", "a:7000", "b:6379"]
    assert client.get_connection_kwargs()["socket_timeout"] == 1


def test_url_cluster_has_no_db() -> None:
    """A cluster URL with a database other than 0, or a db option, is rejected."""
    with pytest.raises(ConfigurationError, match="database 0"):
        RedisClusterBackend.from_url("redis+cluster://a:7000/2")
    with pytest.raises(ConfigurationError, match="db"):
        RedisClusterBackend.from_url("redis+cluster://a:7000?db=1")


def test_url_sentinel_service() -> None:
    """redis+sentinel:// names the sentinels, the service, the master's db and passwords."""
    url = "redis+sentinel://:pw@s1:5000,s2/cache-main?db=2&sentinel_password=sp"
    client = client_of(RedisSentinelBackend.from_url(url))
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool) and pool.service_name == "cache-main"
    assert (pool.connection_kwargs["db"], pool.connection_kwargs["password"]) == (2, "pw")
    sentinels = [s.connection_pool.connection_kwargs for s in pool.sentinel_manager.sentinels]
    assert [(s["host"], s["port"], s["password"]) for s in sentinels] == [
        ("s1", 5000, "sp"),
        ("s2", 26379, "sp"),
    ]


def test_url_sentinel_needs_service() -> None:
    """A sentinel URL without a service name is rejected."""
    with pytest.raises(ConfigurationError, match="service"):
        RedisSentinelBackend.from_url("redis+sentinel://s1:26379")


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("redis://h/0?timeout=soon", "timeout"),
        ("redis://h/0?max_connections=0", "max_connections"),
        ("redis://h/0?nope=1", "nope"),
        ("redis+cluster://h:1?health_check_interval=-1", "health_check_interval"),
        ("redis+sentinel://h/m?retries=many", "retries"),
        ("redis://h/0?protocol=1", "protocol"),
    ],
)
def test_bad_option_names_itself(url: str, name: str) -> None:
    """A bad query option raises ConfigurationError naming it."""
    factory = load_backend_factory(url)
    with pytest.raises(ConfigurationError, match=name):
        factory.from_url(url)


def test_wrong_scheme_rejected() -> None:
    """Each class accepts only its own schemes."""
    with pytest.raises(ConfigurationError, match="redis\\+cluster"):
        RedisBackend.from_url("redis+cluster://a:1")


def test_settings_timeout_is_the_default() -> None:
    """settings.timeout sets the deadlines; the URL's timeout wins over it."""
    settings = CacheSettings(timeout=0.8)
    kw = client_of(RedisBackend.from_url("redis://h", settings)).connection_pool.connection_kwargs
    assert kw["socket_timeout"] == 0.8 and kw["socket_connect_timeout"] == 0.8
    kw = client_of(RedisBackend.from_url("redis://h?timeout=0.1", settings)).connection_pool.connection_kwargs
    assert kw["socket_timeout"] == 0.1


def test_missing_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without redis-py, importing the backend says which extra to install."""
    monkeypatch.setitem(sys.modules, "redis", None)
    for name in ("cacheframe.backends.redis", "cacheframe.backends._redis_client"):
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(MissingDriverError, match=r"pip install 'cacheframe\[redis\]'"):
        importlib.import_module("cacheframe.backends.redis")


def test_expiry_arguments() -> None:
    """Whole seconds use EX, fractions PX (never 0 ms), None no expiry."""
    assert _expiry(None) == (None, None)
    assert _expiry(30) == (30, None)
    assert _expiry(2.0) == (2, None)
    assert _expiry(1.5) == (None, 1500)
    assert _expiry(0.4) == (None, 400)
    assert _expiry(0.0001) == (None, 1)
    assert _expiry(0) == (None, 1)


def test_health_checks_and_sentinel_take_the_client() -> None:
    """The lean lane is for one fixed server without health checks: with health_check_interval
    (idle PINGs) or behind Sentinel (the master moves), every command takes redis-py's client."""
    assert isinstance(RedisBackend.from_url("redis://127.0.0.1:1/0")._exec, LaneExecutor)
    assert isinstance(
        RedisBackend.from_url("redis://127.0.0.1:1/0?health_check_interval=5")._exec, ClientExecutor
    )
    assert isinstance(
        RedisSentinelBackend.from_url("redis+sentinel://127.0.0.1:1/mymaster")._exec, ClientExecutor
    )
    assert isinstance(RedisBackend(client=aioredis.Redis(host="127.0.0.1", port=1))._exec, ClientExecutor)
