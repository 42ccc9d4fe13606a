"""What a ``Cache`` did: the observer the engine and gateway report to, and its counters.

The engine, the store gateway and the adapters report every outcome to one
:class:`Observer`. :class:`CacheStats` is the default one: plain integers, and
counts labelled by namespace (a decorated function's, never a request value, so
the labels are bounded by the number of decorated functions) and a fixed reason
code. Exporters read its attributes when they are scraped; nothing is computed
on the request path beyond an increment.

The reason codes below are the whole vocabulary: they name the label values an
exporter sees, and the ``detail`` of a ``Cache-Status`` header.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Protocol

__all__ = [
    "BYPASS_REASONS",
    "NOT_STORED_REASONS",
    "OUTCOMES",
    "STALE_REASONS",
    "TIERS",
    "CacheStats",
    "Observer",
]

# Outcomes of a request or call (the second element of a ``CacheStats.requests`` key).
HIT, COLLAPSED, MISS, STALE, BYPASS = "hit", "collapsed", "miss", "stale", "bypass"
OUTCOMES = (HIT, COLLAPSED, MISS, STALE, BYPASS)

# Where a hit was read: the store, or the in-process tier (``local_max_entries``).
TIER_STORE, TIER_LOCAL = "store", "local"
TIERS = (TIER_STORE, TIER_LOCAL)

# Why a stale entry was served.
WHILE_REVALIDATE = "while-revalidate"  # stale_while_revalidate: a background refresh runs
IF_ERROR = "if-error"  # stale_if_error: the computation failed
SOFT_INVALIDATION = "soft-invalidation"  # reserved: an entry marked stale by an invalidation
STALE_REASONS = (WHILE_REVALIDATE, IF_ERROR, SOFT_INVALIDATION)

# Why a request or call bypassed the cache (ran uncached, storing nothing).
DISABLED = "disabled"  # CACHEFRAME_ENABLED=false
METHOD = "method"  # a method other than GET/HEAD that is not unsafe (OPTIONS, say)
UNSAFE_METHOD = "unsafe-method"  # POST, PUT, PATCH, DELETE (RFC 9111 §4.4 invalidation follows)
AUTHORIZATION = "authorization"  # credentials on a route not keyed by them (no private=True)
UNKEYABLE_CREDENTIALS = "unkeyable-credentials"  # private=True, but a security scheme it cannot key
REQUEST_NO_STORE = "request-no-store"  # the request's Cache-Control: no-store
SEVERAL_HOSTS = "several-hosts"  # more than one Host header
UNCACHEABLE_ROUTE = "uncacheable-route"  # the route reads what no key holds (a body, say)
STACKED_ARGUMENTS = "stacked-arguments"  # a decorator above @cache passes unkeyable arguments
STORE_DOWN = "store-down"  # the store failed on the read
BREAKER_OPEN = "breaker-open"  # the circuit is open: the store was not asked
INTERNAL_ERROR = "internal-error"  # a failure in cacheframe's own code (logged with its traceback)
BYPASS_REASONS = (
    DISABLED,
    METHOD,
    UNSAFE_METHOD,
    AUTHORIZATION,
    UNKEYABLE_CREDENTIALS,
    REQUEST_NO_STORE,
    SEVERAL_HOSTS,
    UNCACHEABLE_ROUTE,
    STACKED_ARGUMENTS,
    STORE_DOWN,
    BREAKER_OPEN,
    INTERNAL_ERROR,
)

# Why a computed response or value was not stored (its free-text reason goes to the debug log).
NS_STATUS = "status"  # not a 2xx (or a 206)
NS_NO_STORE = "no-store"  # the response's Cache-Control: no-store
NS_NO_CACHE = "no-cache"  # the response's Cache-Control: no-cache
NS_PRIVATE = "private"  # the response's Cache-Control: private
NS_ZERO_LIFETIME = "zero-lifetime"  # max-age=0, s-maxage=0 or Expires in the past
NS_SET_COOKIE = "set-cookie"  # a Set-Cookie header
NS_VARY_UNKEYED = "vary-unkeyed"  # Vary: * or a Vary header the key does not hold
NS_PER_USER_READ = "per-user-read"  # the view read request state its key does not hold
NS_STREAMING = "streaming"  # a streaming or file response
NS_BACKGROUND_TASKS = "background-tasks"  # the response carries background tasks
NS_UNSERIALIZABLE = "unserializable"  # a function's value does not come back exactly
NS_TOO_LARGE = "too-large"  # the entry format cannot hold it (a 64 KiB header)
NS_INVALIDATED = "invalidated"  # an invalidation ran while it was computed
NS_RESULT_TAGS = "result-tags"  # tags taken from the result: bad, over 32, or the function's first
NOT_STORED_REASONS = (
    NS_STATUS,
    NS_NO_STORE,
    NS_NO_CACHE,
    NS_PRIVATE,
    NS_ZERO_LIFETIME,
    NS_SET_COOKIE,
    NS_VARY_UNKEYED,
    NS_PER_USER_READ,
    NS_STREAMING,
    NS_BACKGROUND_TASKS,
    NS_UNSERIALIZABLE,
    NS_TOO_LARGE,
    NS_INVALIDATED,
    NS_RESULT_TAGS,
)


class Observer(Protocol):
    """What the engine, the gateway and the adapters report, as it happens.

    ``namespace`` is a decorated function's namespace (``@cache(namespace=...)``, else its
    ``module.qualname``), ``"kv"`` for the key/value API; reasons are the codes above.
    Every method is called on the request path: keep them to an increment.
    """

    def on_hit(self, namespace: str, tier: str, fast: bool = False) -> None:
        """A fresh entry answered (``fast``: on the ASGI fast path)."""
        ...

    def on_collapsed(self, namespace: str) -> None:
        """A miss was answered by a computation another request led (here or in another process)."""
        ...

    def on_miss(self, namespace: str) -> None:
        """A miss: the view or function runs, its result may be stored."""
        ...

    def on_stale(self, namespace: str, reason: str) -> None:
        """A stale entry answered."""
        ...

    def on_bypass(self, namespace: str, reason: str) -> None:
        """The request or call ran uncached."""
        ...

    def on_not_stored(self, namespace: str, reason: str) -> None:
        """A computed result was answered but not stored."""
        ...

    def on_stored(self) -> None:
        """An entry was written to the store."""
        ...

    def on_store_error(self, action: str, timeout: bool) -> None:
        """A store call (``get``, ``set``, ``delete``, ``clear``, ``lock``, ``unlock``) failed;
        ``timeout``: it did not answer in time."""
        ...

    def on_short_circuit(self) -> None:
        """A store call was skipped: the circuit is open."""
        ...

    def on_bad_entry(self) -> None:
        """A stored entry could not be used (damaged, foreign): it counts as absent."""
        ...

    def on_invalidation(self, namespace: str) -> None:
        """Entries were invalidated (a delete, a clear, a successful unsafe request)."""
        ...

    def on_breaker(self, open: bool) -> None:
        """The circuit opened (``open``) or closed again."""
        ...

    def on_tier_health(self, healthy: bool) -> None:
        """The in-process tier stopped (``False``) or resumed (``True``) being trusted."""
        ...


@dataclass
class CacheStats:
    """The default observer: counters of one ``Cache``, process-local.

    Plain integers (each an ``int``, read with :meth:`as_dict`):

    - ``hits``: fresh entries answered, collapsed misses included; ``fast_hits``: those of
      them answered by the ASGI fast path;
    - ``misses``, ``stale`` (both reasons), ``bypasses``, ``not_stored``, ``stores``;
    - ``backend_errors`` (store calls that failed, timeouts included), ``short_circuited``
      (calls skipped while the circuit was open), ``bad_entries``;
    - ``invalidations``; ``breaker_open`` (1 while the circuit is open, else 0) and
      ``breaker_trips`` (times it opened); ``local_tier_down`` (1 while the in-process tier is
      untrusted after having been healthy, else 0).

    Labelled counts (plain dicts of ``int``, read them whole):

    - ``requests[(namespace, outcome, reason)]``: each request or call once, by how it was
      answered: ``hit`` (reason: the tier, ``store``), ``collapsed`` (reason ``""``),
      ``miss`` (``""``), ``stale`` (a stale reason) or ``bypass`` (a bypass reason). A
      stale-if-error answer is a ``miss`` whose computation failed, so it counts as both
      ``miss`` and ``stale``/``if-error``;
    - ``not_stored_by[(namespace, reason)]``: results not stored, by not-stored reason;
    - ``store_errors[action]`` and ``store_timeouts[action]``: failed store calls by
      action (``get``, ``set``, ``delete``, ``clear``, ``lock``, ``unlock``), the timeouts
      among them counted in both.
    """

    hits: int = 0
    fast_hits: int = 0
    misses: int = 0
    bypasses: int = 0
    stale: int = 0
    stores: int = 0
    not_stored: int = 0
    backend_errors: int = 0
    short_circuited: int = 0
    bad_entries: int = 0
    invalidations: int = 0
    breaker_open: int = 0
    breaker_trips: int = 0
    local_tier_down: int = 0
    requests: dict[tuple[str, str, str], int] = field(default_factory=dict)
    not_stored_by: dict[tuple[str, str], int] = field(default_factory=dict)
    store_errors: dict[str, int] = field(default_factory=dict)
    store_timeouts: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, int]:
        """The plain integer counters as a mapping (the labelled counts left out)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.type == "int"}

    # -- the observer -----------------------------------------------------------------

    def _count(self, namespace: str, outcome: str, reason: str) -> None:
        key = (namespace, outcome, reason)
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1

    def on_hit(self, namespace: str, tier: str, fast: bool = False) -> None:
        self.hits += 1
        if fast:
            self.fast_hits += 1
        key = (namespace, HIT, tier)  # the hot path: one subscript, no method call
        try:
            self.requests[key] += 1
        except KeyError:
            self.requests[key] = 1

    def on_collapsed(self, namespace: str) -> None:
        self.hits += 1
        self._count(namespace, COLLAPSED, "")

    def on_miss(self, namespace: str) -> None:
        self.misses += 1
        self._count(namespace, MISS, "")

    def on_stale(self, namespace: str, reason: str) -> None:
        self.stale += 1
        self._count(namespace, STALE, reason)

    def on_bypass(self, namespace: str, reason: str) -> None:
        self.bypasses += 1
        self._count(namespace, BYPASS, reason)

    def on_not_stored(self, namespace: str, reason: str) -> None:
        self.not_stored += 1
        key = (namespace, reason)
        self.not_stored_by[key] = self.not_stored_by.get(key, 0) + 1

    def on_stored(self) -> None:
        self.stores += 1

    def on_store_error(self, action: str, timeout: bool) -> None:
        self.backend_errors += 1
        self.store_errors[action] = self.store_errors.get(action, 0) + 1
        if timeout:
            self.store_timeouts[action] = self.store_timeouts.get(action, 0) + 1

    def on_short_circuit(self) -> None:
        self.short_circuited += 1

    def on_bad_entry(self) -> None:
        self.bad_entries += 1

    def on_invalidation(self, namespace: str) -> None:
        self.invalidations += 1

    def on_breaker(self, open: bool) -> None:
        self.breaker_open = int(open)
        self.breaker_trips += open

    def on_tier_health(self, healthy: bool) -> None:
        self.local_tier_down = int(not healthy)
