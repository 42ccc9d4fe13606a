"""Memcached backend (aiomcache): ``memcached://host:port[,host:port...]?timeout=0.25``.

Several servers share the keys by rendezvous (highest random weight) hashing.

Keys. Memcached takes at most 250 bytes of printable ASCII without spaces. A key that
is short, printable ASCII and does not start with ``#`` is sent as is; any other key
is sent as ``#h`` + its BLAKE2b-256 hex digest. Generation keys (below) live under
``#g``/``#G`` and stamps under ``#s``/``#S``, so the forms never meet.

TTL. ``None`` is stored as 0 (never); fractions round up (0.4 s is 1 s, never 0);
up to 30 days is sent as relative seconds, longer as an absolute Unix time (memcached
reads any exptime above 30 days that way), and past 2038 as never. ``ttl <= 0`` deletes.

clear(namespace). Memcached cannot list keys, so every namespace has a *generation*:
a random token under ``#g<namespace>``, replicated on every server. An entry records
a digest of the tokens of all its leading namespaces (``a:``, ``a:b:`` for ``a:b:c``)
on its server; ``get`` fetches the entry and those tokens in one ``gets`` command to
that one server, and a digest mismatch is a miss. ``clear`` writes a fresh token to
every server. Tokens are 96 random bits, never reused, and an entry is only written
under tokens that exist: if a token is evicted or lost in a restart, the namespace
reads as "no token", which matches no entry, and the next write creates a new token.
So an evicted generation can only turn entries into misses, never bring old ones
back. A ``clear`` that raised may have reached only some servers: retry it. Cleared
entries stay in memory until their TTL or LRU eviction reclaims them.

Stamps (``SupportsStamps``) are replicated the same way: ``write_stamps`` sets each
stamp on every server and raises unless all of them stored it (an invalidation that
raised may have reached only some servers: retry it). So the entry's own server holds
every stamp, and ``read_stamped`` is one ``gets`` to that server for the entry, its
namespaces' tokens and the stamps. A stamp a server lost reads as absent there, which
only turns that server's entries into misses.

Values larger than ``max_item_size`` (memcached's ``-I``, 1 MiB by default) are not
stored: the set logs a warning on the ``cacheframe`` logger, counts it in
``stats()["oversized"]`` and deletes the key, so no older value survives it.

Connections belong to one event loop: each running loop gets its own clients (and a
forked child new ones), kept in a :class:`~._loops.PerLoop`. ``close()`` closes the
current loop's connections and drops the other loops', which their loops close; a
loop's connections are also closed when it shuts down (``asyncio.run``).
No ``SupportsTTL``: memcached's text protocol cannot report remaining lifetimes.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from ..exceptions import BackendError, BackendTimeoutError, ConfigurationError, MissingDriverError
from ..keys import loggable
from ._loops import PerLoop
from .options import parse_options

try:
    import aiomcache

    from ._deadline import Deadline
    from ._memcached_pool import SafePool
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDriverError(
        f"the memcached backend needs aiomcache ({exc}); install it: pip install 'cacheframe[memcached]'"
    ) from exc

if TYPE_CHECKING:
    from ..settings import CacheSettings

__all__ = ["MemcachedBackend", "MemcachedOptions"]

log = logging.getLogger("cacheframe.store")
T = TypeVar("T")

_DRIVER_ERRORS = (aiomcache.ClientException, OSError, EOFError, ValueError)
_MAX_RELATIVE = 30 * 24 * 3600  # memcached: exptime above this is an absolute Unix time
_MAX_ABSOLUTE = 2**31 - 1  # memcached parses exptime as int32
_EXPIRED = _MAX_RELATIVE + 1  # absolute time in 1970: stores an already expired item
_VERSION = b"\x01"
_SEAL = 16  # digest bytes of the generation tokens in front of every value
_ITEM_OVERHEAD = 64  # memcached's per-item header, for the local size check
_PLANS_MAX = 16384  # memoised read plans (server and memcached keys) by cache key


class MemcachedOptions(BaseModel):
    """Options of ``memcached://`` URLs."""

    model_config = ConfigDict(extra="forbid")

    timeout: float = Field(0.25, gt=0)
    connect_timeout: float = Field(0.25, gt=0)
    pool_size: int = Field(10, gt=0)
    max_item_size: int = Field(1024 * 1024, gt=_ITEM_OVERHEAD)


def _plain(text: str) -> bool:
    return 0 < len(text) <= 200 and text.isascii() and text.isprintable() and " " not in text


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=32).hexdigest()


def entry_key(key: str) -> str:
    """The memcached key of an entry: ``key`` if plain, else ``#h`` + its hash."""
    return key if _plain(key) and not key.startswith("#") else "#h" + _digest(key)


def lock_key(key: str) -> str:
    """The memcached key of a lock: always hashed, under its own ``#l`` marker."""
    return "#l" + _digest(key)


def _replicated_key(marker: str, name: str) -> str:
    """``#`` + ``marker`` + ``name`` if plain, else ``#`` + ``MARKER`` + its hash."""
    return f"#{marker}{name}" if _plain(name) else f"#{marker.upper()}{_digest(name)}"


def generation_key(namespace: str) -> str:
    """The memcached key holding ``namespace``'s generation token."""
    return _replicated_key("g", namespace)


def stamp_key(stamp: str) -> str:
    """The memcached key of a stamp (a copy on every server)."""
    return _replicated_key("s", stamp)


def namespaces(key: str) -> list[str]:
    """Every leading namespace of ``key``: ``a:b:c`` -> ``["a:", "a:b:"]``."""
    return [key[: i + 1] for i, char in enumerate(key) if char == ":"]


def exptime(ttl: float | None) -> int:
    """Memcached's exptime for a positive ``ttl`` (or ``None``: 0, never)."""
    if ttl is None:
        return 0
    seconds = max(1, math.ceil(ttl))
    if seconds <= _MAX_RELATIVE:
        return seconds
    absolute = math.ceil(time.time() + ttl)
    return absolute if absolute <= _MAX_ABSOLUTE else 0


@functools.lru_cache(maxsize=1024)  # tokens change only on clear(): every hit repeats them
def _seal(tokens: tuple[bytes, ...]) -> bytes:
    return _VERSION + hashlib.blake2b(b"\n".join(tokens), digest_size=_SEAL).digest()


def _parse_servers(url: str) -> list[tuple[str, int]]:
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigurationError(f"memcached URL {url!r}: {exc}") from exc
    if parts.path not in ("", "/") or "@" in parts.netloc:
        raise ConfigurationError(f"memcached URL {url!r}: write memcached://host:port[,host:port...]")
    servers = []
    for item in parts.netloc.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep or host.endswith(":") or (host.startswith("[") != host.endswith("]")):
            host, port = item.strip(), "11211"  # no port, or a bare IPv6 address
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigurationError(f"memcached URL {url!r}: bad server {item!r}")
        servers.append((host, int(port)))
    return servers


class _LoopState:
    """The clients of one event loop, one per server."""

    def __init__(self, backend: MemcachedBackend) -> None:
        self.pools = [
            SafePool(host, port, maxsize=backend.pool_size, connect_timeout=backend.connect_timeout)
            for host, port in backend.servers
        ]
        self.clients = []
        for (host, port), pool in zip(backend.servers, self.pools, strict=True):
            client = aiomcache.Client(host, port, pool_size=backend.pool_size)
            client._pool = pool  # aiomcache's protocol code over our pool
            self.clients.append(client)

    async def close(self) -> None:
        """Close the idle connections now, those in use when their call ends."""
        for pool in self.pools:
            pool.retire()


class MemcachedBackend:
    """Memcached through aiomcache, with deadlines, safe keys and namespace generations."""

    def __init__(
        self,
        servers: Sequence[tuple[str, int]],
        *,
        timeout: float = 0.25,
        connect_timeout: float = 0.25,
        pool_size: int = 10,
        max_item_size: int = 1024 * 1024,
    ) -> None:
        if not servers:
            raise ConfigurationError("memcached backend needs at least one server")
        self.servers = [(host, int(port)) for host, port in servers]
        self.names = [f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.servers]
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.pool_size = pool_size
        self.max_item_size = max_item_size
        self._loops: PerLoop[_LoopState] = PerLoop(self._new_state)
        self._hits = self._misses = self._oversized = 0
        self._plans: dict[str, tuple[int, tuple[bytes, ...]]] = {}

    @classmethod
    def from_url(cls, url: str, settings: CacheSettings | None = None) -> MemcachedBackend:
        """Build from ``memcached://host:port[,host:port...]?option=value``."""
        defaults: dict[str, Any] = {}
        if settings is not None:
            defaults = {"timeout": settings.timeout, "connect_timeout": settings.timeout}
        options = parse_options(url, MemcachedOptions, defaults)
        return cls(_parse_servers(url), **options.model_dump())

    def __repr__(self) -> str:
        return f"MemcachedBackend({','.join(self.names)})"

    # -- connections, routing and deadlines -----------------------------------------------

    def _new_state(self) -> tuple[_LoopState, Callable[[], Awaitable[None]]]:
        state = _LoopState(self)
        return state, state.close

    async def _clients(self) -> list[aiomcache.Client]:
        """The running loop's clients, one per server."""
        return (self._loops.current() or await self._loops.get()).clients

    def _server(self, mkey: str) -> int:
        if len(self.servers) == 1:
            return 0
        data = mkey.encode()
        return max(
            range(len(self.servers)),
            key=lambda i: hashlib.blake2b(self.names[i].encode() + b"\n" + data, digest_size=8).digest(),
        )

    async def _client(self, mkey: str) -> aiomcache.Client:
        return (await self._clients())[self._server(mkey)]

    async def _guard(self, action: str, call: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``call(*args)`` under the deadline, turning driver errors into ours."""
        deadline = Deadline(self.timeout)  # connecting included: it is part of the call
        try:
            return await call(*args)
        except asyncio.CancelledError:
            if deadline.expired():
                cause = TimeoutError(f"no reply within {self.timeout:g}s")
                raise BackendTimeoutError(f"memcached {action} on {self!r}: no answer in time") from cause
            raise
        except TimeoutError as exc:  # connecting took longer than connect_timeout
            raise BackendTimeoutError(f"memcached {action} on {self!r}: no answer in time") from exc
        except _DRIVER_ERRORS as exc:
            raise BackendError(f"memcached {action} on {self!r} failed: {exc!r}") from exc
        finally:
            deadline.cancel()

    @staticmethod
    async def _each(calls: Iterable[Awaitable[T]]) -> list[T]:
        """Await concurrently; raise the first error only after all have finished."""
        results = await asyncio.gather(*calls, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return results  # type: ignore[return-value]

    # -- generations ----------------------------------------------------------------------

    async def _tokens(self, client: aiomcache.Client, spaces: list[str]) -> list[bytes] | None:
        """The generation tokens of ``spaces`` on one server, creating missing ones."""
        if not spaces:
            return []
        gkeys = [generation_key(ns).encode() for ns in spaces]
        values = list(await client.multi_get(*gkeys))
        missing = [i for i, value in enumerate(values) if value is None]
        if missing:
            fresh = {i: secrets.token_hex(12).encode() for i in missing}
            added = await self._each(client.add(gkeys[i], fresh[i], 0) for i in missing)
            lost = [i for i, ok in zip(missing, added, strict=True) if not ok]
            for i in missing:
                values[i] = fresh[i]
            if lost:  # another writer created it first: use theirs
                for i, value in zip(lost, await client.multi_get(*(gkeys[i] for i in lost)), strict=True):
                    values[i] = value
        if any(value is None for value in values):
            return None
        return [value for value in values if value is not None]

    @staticmethod
    def _live(raw: bytes | None, tokens: Sequence[bytes | None] | None) -> bool:
        if raw is None or tokens is None or None in tokens:
            return False
        return raw[: 1 + _SEAL] == _seal(tuple(cast("Sequence[bytes]", tokens)))

    # -- the Backend protocol -----------------------------------------------------------

    def _read_plan(self, key: str) -> tuple[int, tuple[bytes, ...]]:
        """The server of ``key`` and the memcached keys one read of it fetches, memoised."""
        plan = self._plans.get(key)
        if plan is None:
            mkey = entry_key(key)
            gkeys = [generation_key(ns).encode() for ns in namespaces(key)]
            plan = (self._server(mkey), (mkey.encode(), *gkeys))
            if len(self._plans) >= _PLANS_MAX:
                self._plans.clear()
            self._plans[key] = plan
        return plan

    async def get(self, key: str) -> bytes | None:
        """One ``gets`` of the entry and its namespaces' tokens, on the entry's server."""
        server, mkeys = self._read_plan(key)
        state = self._loops.current() or await self._loops.get()
        client = state.clients[server]
        raw, *tokens = await self._guard("get", client.multi_get, *mkeys)
        return self._unsealed(raw, tokens)

    def _unsealed(self, raw: bytes | None, tokens: Sequence[bytes | None]) -> bytes | None:
        """The value of an entry read with its namespaces' tokens; None unless they match."""
        if not self._live(raw, tokens):
            self._misses += 1
            return None
        self._hits += 1
        assert raw is not None
        return raw[1 + _SEAL :]

    async def read_stamped(self, key: str, stamps: Sequence[str]) -> list[bytes | None]:
        """One ``gets`` on the entry's server: the entry, its namespaces' tokens and the
        stamps, whose copies every server holds (``SupportsStamps``)."""
        server, mkeys = self._read_plan(key)
        skeys = [stamp_key(name).encode() for name in stamps]
        unique = dict.fromkeys(skeys)  # memcached keys once each: aiomcache refuses repeats
        state = self._loops.current() or await self._loops.get()
        values = await self._guard("read_stamped", state.clients[server].multi_get, *mkeys, *unique)
        entry = self._unsealed(values[0], values[1 : len(mkeys)])
        found = dict(zip(unique, values[len(mkeys) :], strict=True))
        return [entry, *(found[k] for k in skeys)]

    async def write_stamps(self, stamps: Mapping[str, bytes], ttl: float | None) -> None:
        """Set every stamp on every server; raise ``BackendError`` unless all stored it."""
        expiry = _EXPIRED if ttl is not None and ttl <= 0 else exptime(ttl)
        items = [(stamp_key(name).encode(), bytes(value)) for name, value in stamps.items()]

        async def call() -> None:
            clients = await self._clients()
            stored = await self._each(c.set(k, v, expiry) for c in clients for k, v in items)
            if not all(stored):
                raise BackendError(f"memcached write_stamps on {self!r}: a server did not store a stamp")

        await self._guard("write_stamps", call)

    async def set(self, key: str, value: bytes, ttl: float | None) -> None:
        """Store under the current generations; oversized values are dropped, not raised."""
        await self._guard("set", lambda: self._store(key, value, ttl, add=False))

    async def add(self, key: str, value: bytes, ttl: float | None) -> bool:
        """Memcached ``add``; an entry of a cleared namespace counts as absent (``cas`` over it)."""
        return await self._guard("add", lambda: self._store(key, value, ttl, add=True))

    async def _store(self, key: str, value: bytes, ttl: float | None, *, add: bool) -> bool:
        mkey = entry_key(key)
        client, bkey = await self._client(mkey), mkey.encode()
        if ttl is not None and ttl <= 0:  # already expired: nothing to store
            if not add:
                await client.delete(bkey)
            return False
        if len(value) + 1 + _SEAL + len(bkey) + _ITEM_OVERHEAD > self.max_item_size:
            return await self._drop_oversized(client, key, bkey, len(value), delete=not add)
        tokens = await self._tokens(client, namespaces(key))
        if tokens is None:  # a generation vanished while being created: store nothing
            return False
        item, expiry = _seal(tuple(tokens)) + bytes(value), exptime(ttl)
        try:
            if not add:
                return await client.set(bkey, item, expiry)
            if await client.add(bkey, item, expiry):
                return True
            current, cas = await client.gets(bkey)
            if current is None or cas is None:
                return await client.add(bkey, item, expiry)
            return not self._live(current, tokens) and await client.cas(bkey, item, cas, expiry)
        except aiomcache.ClientException as exc:
            if "too large" not in str(exc):
                raise
            return await self._drop_oversized(client, key, bkey, len(value), delete=not add)

    async def _drop_oversized(
        self, client: aiomcache.Client, key: str, bkey: bytes, size: int, *, delete: bool
    ) -> bool:
        """Count and log a value memcached cannot hold; a set also removes the older value."""
        self._oversized += 1
        log.warning("cacheframe: memcached cannot hold %s (%d bytes); not cached", loggable(key), size)
        if delete:
            await client.delete(bkey)
        return False

    async def delete(self, key: str) -> bool:
        """Memcached ``delete`` (an entry already cleared by generation still counts)."""
        mkey = entry_key(key)

        async def call() -> bool:
            return bool(await (await self._client(mkey)).delete(mkey.encode()))

        return await self._guard("delete", call)

    async def clear(self, namespace: str) -> None:
        """Give ``namespace`` a fresh generation token on every server."""
        if not namespace.endswith(":"):
            raise ValueError(f"a namespace ends with ':' (got {namespace!r})")
        gkey, token = generation_key(namespace).encode(), secrets.token_hex(12).encode()

        async def call() -> None:
            await self._each(client.set(gkey, token, 0) for client in await self._clients())

        await self._guard("clear", call)

    async def close(self) -> None:
        """Close this event loop's connections now, other loops' on their loops; the next call
        reconnects."""
        await self._loops.close()

    # -- capabilities ---------------------------------------------------------------------

    async def acquire_lock(self, key: str, token: str, lease: float) -> bool:
        """Take the lock with a plain ``add`` (lease rounded up to whole seconds).

        Locks live outside the generation scheme: they are short-lived, and routing
        them through it would create a generation item per locked entry.
        """
        mkey = lock_key(key)

        async def call() -> bool:
            client = await self._client(mkey)
            return bool(await client.add(mkey.encode(), token.encode(), exptime(lease)))

        return await self._guard("acquire_lock", call)

    async def release_lock(self, key: str, token: str) -> bool:
        """Compare-and-delete: ``gets``, compare the token, then ``cas`` to an expired item."""
        mkey = lock_key(key)

        async def call() -> bool:
            client, bkey = await self._client(mkey), mkey.encode()
            current, cas = await client.gets(bkey)
            if current != token.encode() or cas is None:
                return False
            # The cas fails if anyone changed the lock since our gets; exptime in 1970 expires it.
            return bool(await client.cas(bkey, b"", cas, _EXPIRED))

        return await self._guard("release_lock", call)

    async def stats(self) -> Mapping[str, Any]:
        """Totals and per-server ``curr_items``, ``bytes``, ``get_hits``, ``get_misses``."""

        async def call() -> list[dict[bytes, bytes | None]]:
            return await self._each(client.stats() for client in await self._clients())

        per_server = await self._guard("stats", call)
        figures: dict[str, Any] = {
            "backend": "memcached",
            "servers": len(self.servers),
            "hits": self._hits,
            "misses": self._misses,
            "oversized": self._oversized,
            "entries": 0,
            "bytes": 0,
        }
        for name, raw in zip(self.names, per_server, strict=True):
            for field in ("curr_items", "bytes", "get_hits", "get_misses"):
                figures[f"{name}/{field}"] = int(raw.get(field.encode()) or 0)
            figures["entries"] += figures[f"{name}/curr_items"]
            figures["bytes"] += figures[f"{name}/bytes"]
        return figures
