"""redis-py plumbing for the Redis backends: URLs, options, client factories, driver errors.

redis-py's asyncio clients are bound to the loop they first ran in, so each
backend keeps one client per running loop (and per process, for ``os.fork``) in
a :class:`~._loops.PerLoop` built from one of the factories here.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from ..exceptions import BackendError, BackendTimeoutError, ConfigurationError, MissingDriverError
from ._loops import Closer, Factory
from .options import _redact

try:
    import redis.exceptions as rex
    from redis.asyncio import ConnectionPool, Redis
    from redis.asyncio.cluster import ClusterNode, RedisCluster
    from redis.asyncio.retry import Retry
    from redis.asyncio.sentinel import Sentinel
    from redis.backoff import NoBackoff
    from redis.crc import key_slot
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise MissingDriverError(
        f"the Redis backends need the redis package ({exc}): pip install 'cacheframe[redis]'"
    ) from exc

__all__ = [
    "build_cluster",
    "build_redis",
    "build_sentinel",
    "clone_redis",
    "ClusterOptions",
    "driver_error",
    "DRIVER_ERRORS",
    "key_slot",
    "parse_target",
    "prepare_cluster",
    "Redis",
    "RedisCluster",
    "RedisOptions",
    "rex",
    "SentinelOptions",
    "serve_client",
    "Target",
]

C = TypeVar("C")
_UNBOUNDED = 2**31

DRIVER_ERRORS = (Exception,)
"""What a redis-py call may raise besides cancellation: RedisError, OSError, TimeoutError, and
(redis-py 8.1 on a connection closed under it) AttributeError/TypeError, so any Exception."""


# -- options ---------------------------------------------------------------------------


def _int(value: Any) -> Any:
    """A whole number given as text (a URL's query) as an int; anything else as it is."""
    return int(value) if isinstance(value, str) and value.strip().isdigit() else value


class _Common(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timeout: float = Field(0.25, gt=0, description="socket read/write deadline of one call, seconds")
    connect_timeout: float | None = Field(None, gt=0, description="connect deadline (default: timeout)")
    max_connections: int | None = Field(
        None, gt=0, description="connections per pool (per node on a cluster); a call beyond fails"
    )
    health_check_interval: float = Field(0, ge=0, description="PING idle connections after N seconds")
    retries: int = Field(
        1, ge=0, le=5, description="retries after a connection error (never after a timeout)"
    )
    client_name: str | None = None
    # A query string gives "3", which a Literal[2, 3] alone would refuse.
    protocol: Annotated[Literal[2, 3], BeforeValidator(_int)] = Field(
        2, description="RESP version (2 needs no HELLO on connect)"
    )
    ssl_cert_reqs: Literal["required", "optional", "none"] = "required"
    ssl_ca_certs: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_check_hostname: bool = True

    def ssl_kwargs(self, tls: bool) -> dict[str, Any]:
        """redis-py's ``ssl*`` arguments; ``ssl_*`` options without TLS are an error."""
        given = sorted(f for f in self.model_fields_set if f.startswith("ssl_"))
        if not tls:
            if given:
                raise ConfigurationError(f"option(s) {', '.join(given)} need TLS (rediss:// or ssl=true)")
            return {}
        return {"ssl": True, **{f: getattr(self, f) for f in type(self).model_fields if f.startswith("ssl_")}}


class RedisOptions(_Common):
    """Options of ``redis://``, ``rediss://`` and ``unix://`` URLs."""

    db: int | None = Field(None, ge=0, description="database number (also the URL path /N)")


class ClusterOptions(_Common):
    """Options of ``redis+cluster://`` URLs (a cluster has only database 0)."""

    ssl: bool = False


class SentinelOptions(_Common):
    """Options of ``redis+sentinel://`` URLs."""

    db: int | None = Field(None, ge=0)
    ssl: bool = False
    sentinel_username: str | None = None
    sentinel_password: str | None = None


# -- URLs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where a URL points: TCP nodes or a unix socket path, credentials, db, service."""

    scheme: str
    nodes: tuple[tuple[str, int], ...] = ()
    path: str | None = None
    db: int | None = None
    username: str | None = None
    password: str | None = None
    service: str | None = None


def _bad(url: str, why: str) -> ConfigurationError:
    return ConfigurationError(f"invalid cache URL {_redact(url)!r}: {why}")


def _node(url: str, text: str, default_port: int) -> tuple[str, int]:
    host, port = text, ""
    if text.startswith("["):  # [IPv6]:port
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
    elif ":" in text:
        host, _, port = text.rpartition(":")
    if not host:
        raise _bad(url, f"missing host in {text!r}")
    if not port:
        return host, default_port
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise _bad(url, f"bad port {port!r}")
    return host, int(port)


def parse_target(url: str, schemes: tuple[str, ...]) -> Target:
    """Split a Redis URL into a :class:`Target` (query options are parsed separately)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in schemes:
        raise _bad(url, f"scheme {scheme!r} is not one of {', '.join(schemes)}")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    user, has_password, password = userinfo.partition(":")
    username = unquote(user) or None
    secret = unquote(password) if has_password else None
    path = unquote(parts.path)
    if scheme == "unix":
        if not path.strip("/"):
            raise _bad(url, "a unix:// URL needs a socket path: unix:///run/redis.sock")
        return Target(scheme, path=path, username=username, password=secret)
    default_port = 26379 if scheme == "redis+sentinel" else 6379
    nodes = tuple(_node(url, h, default_port) for h in hosts.split(",") if h)
    if not nodes:
        raise _bad(url, "no host given")
    if scheme == "redis+sentinel":
        service = path.strip("/")
        if not service or "/" in service:
            raise _bad(url, "name the monitored service: redis+sentinel://host:26379/mymaster")
        return Target(scheme, nodes, service=service, username=username, password=secret)
    if scheme in ("redis", "rediss") and len(nodes) > 1:
        raise _bad(url, "several hosts need redis+cluster:// or redis+sentinel://")
    db_text = path.strip("/")
    if db_text and not db_text.isdigit():
        raise _bad(url, f"the path must be a database number, not {db_text!r}")
    db = int(db_text) if db_text else None
    if scheme == "redis+cluster" and db:
        raise _bad(url, "a Redis Cluster has only database 0")
    return Target(scheme, nodes, db=db, username=username, password=secret)


def _db(url: str, target: Target, option: int | None) -> int:
    if target.db is not None and option is not None and target.db != option:
        raise _bad(url, f"database {target.db} in the path but db={option} in the query")
    return target.db if target.db is not None else (option or 0)


# -- clients ---------------------------------------------------------------------------


def _connection_kwargs(target: Target, options: _Common) -> dict[str, Any]:
    return {
        "username": target.username,
        "password": target.password,
        "socket_timeout": options.timeout,
        "socket_connect_timeout": options.connect_timeout or options.timeout,
        "health_check_interval": options.health_check_interval,
        "client_name": options.client_name,
        "max_connections": options.max_connections or _UNBOUNDED,  # redis-py 8 would cap at 100
        "protocol": options.protocol,
    }


def _retry(options: _Common) -> Retry:
    # Only a refused/reset connection is retried (at once): a timeout already used the deadline.
    return Retry(NoBackoff(), options.retries, supported_errors=(rex.ConnectionError,))


def build_redis(url: str, target: Target, options: RedisOptions) -> Factory[Redis]:
    """A factory of single-node clients for ``redis://``, ``rediss://`` or ``unix://``."""
    kwargs = _connection_kwargs(target, options)
    kwargs["db"] = _db(url, target, options.db)
    if target.path is not None:
        options.ssl_kwargs(False)
        kwargs["unix_socket_path"] = target.path
    else:
        kwargs.update(options.ssl_kwargs(target.scheme == "rediss"))
        kwargs["host"], kwargs["port"] = target.nodes[0]

    def make() -> tuple[Redis, Closer]:
        client = Redis(retry=_retry(options), **kwargs)
        return client, client.aclose

    return make


class _Cluster(RedisCluster):
    """RedisCluster that re-tries only connection errors: a timeout already spent the deadline."""

    ERRORS_ALLOW_RETRY = (rex.ConnectionError,)  # type: ignore[assignment]


def build_cluster(url: str, target: Target, options: ClusterOptions) -> Factory[RedisCluster]:
    """A factory of cluster clients for ``redis+cluster://``."""
    kwargs = _connection_kwargs(target, options)
    kwargs.update(options.ssl_kwargs(options.ssl))

    def make() -> tuple[RedisCluster, Closer]:
        nodes = [ClusterNode(host, port) for host, port in target.nodes]
        client = _Cluster(startup_nodes=nodes, retry=Retry(NoBackoff(), options.retries), **kwargs)
        return client, client.aclose

    return make


async def prepare_cluster(client: RedisCluster) -> None:
    """Discover the topology before traffic, and let redis-py's refresh housekeeping finish.

    redis-py 8.1 disconnects "free" connections in a background task after each
    topology refresh; a command that picks such a connection meanwhile fails
    (``'NoneType' object has no attribute 'writelines'``). Waiting here keeps
    the first burst of concurrent calls on a new loop clear of that race.
    """
    await client.initialize()
    pending = list(getattr(client.nodes_manager, "_background_tasks", ()))
    await asyncio.gather(*pending, return_exceptions=True)
    await asyncio.sleep(0)


def build_sentinel(url: str, target: Target, options: SentinelOptions) -> Factory[Redis]:
    """A factory of master clients found through the sentinels of ``redis+sentinel://``."""
    service = target.service or ""
    kwargs = _connection_kwargs(target, options)
    kwargs["db"] = _db(url, target, options.db)
    kwargs.update(options.ssl_kwargs(options.ssl))
    sentinel_kwargs = {
        "username": options.sentinel_username,
        "password": options.sentinel_password,
        "socket_timeout": options.timeout,
        "socket_connect_timeout": options.connect_timeout or options.timeout,
        "protocol": options.protocol,
        "max_connections": _UNBOUNDED,
        **({"ssl": True} if options.ssl else {}),
    }

    def make() -> tuple[Redis, Closer]:
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(target.nodes),
            sentinel_kwargs={**sentinel_kwargs, "retry": _retry(options)},
            retry=_retry(options),
            **kwargs,
        )
        client = sentinel.master_for(service)

        async def close() -> None:
            await client.aclose()
            for one in sentinel.sentinels:
                await one.aclose()

        return client, close

    return make


def driver_error(exc: BaseException, action: str, where: str, timeout: float | None) -> BackendError:
    """The cacheframe error for a driver exception (raise it ``from exc``)."""
    if isinstance(exc, rex.TimeoutError | TimeoutError):
        limit = f" after {timeout:g}s" if timeout else ""
        return BackendTimeoutError(f"redis {action} on {where} timed out{limit}: {exc}")
    return BackendError(f"redis {action} on {where} failed: {type(exc).__name__}: {exc}")


def clone_redis(client: Redis) -> Factory[Redis]:
    """A factory of clients with ``client``'s connection settings, for other event loops."""
    pool = client.connection_pool

    def make() -> tuple[Redis, Closer]:
        fresh = ConnectionPool(
            connection_class=pool.connection_class,
            max_connections=pool.max_connections,
            **pool.connection_kwargs,
        )
        clone = Redis(connection_pool=fresh)
        return clone, clone.aclose

    return make


def serve_client(client: C, clones: Factory[C] | None) -> Factory[C]:
    """A factory for a backend built around a client passed in.

    That client serves the first event loop that uses it, for good (it is the
    caller's: never closed here); other loops (a new TestClient loop, the sync
    portal) get a clone from ``clones``, or an error when there is none.
    """
    home: list[asyncio.AbstractEventLoop] = []  # the loop the passed-in client serves

    def make() -> tuple[C, Closer]:
        loop = asyncio.get_running_loop()
        if not home:
            home.append(loop)  # its connections now belong to this loop
        if home[0] is loop:
            return client, _leave_open
        if clones is None:
            raise BackendError(
                "a client passed as client= serves only the event loop it was first used on; "
                "pass url= instead to get one client per event loop"
            )
        return clones()

    return make


async def _leave_open() -> None:
    """The closer of a client passed in: the caller closes it."""
