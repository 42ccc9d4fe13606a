"""Prometheus metrics: a collector that reads a cache's counters when Prometheus scrapes.

``pip install 'cacheframe[prometheus]'``, then::

    from cacheframe import prometheus
    prometheus.register()                    # the default cache, into prometheus_client's REGISTRY
    prometheus.register(billing, name="billing", registry=my_registry)

Nothing is counted twice and nothing runs per request: the collector turns
:class:`~cacheframe.stats.CacheStats` into metric families at scrape time.

Several worker processes: each process counts its own requests. prometheus_client's
multiprocess mode does not run custom collectors, so scrape each worker (one registry
and one port per worker, with a ``worker`` label in the scrape config), or sum the
workers' series in your queries.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar

from .default import get_cache
from .exceptions import ConfigurationError, MissingDriverError

try:
    from prometheus_client import Histogram
    from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.registry import Collector, CollectorRegistry
except ImportError as exc:  # pragma: no cover - the extra is not installed
    raise MissingDriverError(
        "cacheframe.prometheus needs prometheus_client: pip install 'cacheframe[prometheus]'"
    ) from exc

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from .cache import Cache

__all__ = ["CacheCollector", "register"]


class CacheCollector(Collector):
    """Yields a cache's counters as metric families (``cache`` labels which cache it is)."""

    def __init__(self, cache: Cache | None = None, name: str = "default") -> None:
        self._cache = cache  # None: the process default, looked up at each scrape
        self.name = name

    def _current(self) -> Cache:
        return self._cache if self._cache is not None else get_cache()

    def describe(self) -> Iterator[Metric]:
        """The families this collector yields (without samples): no scrape at registration."""
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        """The cache's counters, read now."""
        yield from self._families(self._current())

    def _families(self, cache: Cache | None = None) -> Iterator[Metric]:
        stats: Any = None if cache is None else cache.stats
        name = self.name
        labelled = (
            ("cacheframe_requests", "requests", ["namespace", "outcome", "reason"],
             "Requests and calls answered, by namespace, outcome and reason."),
            ("cacheframe_not_stored", "not_stored_by", ["namespace", "reason"],
             "Computed results answered but not stored, by namespace and reason."),
            ("cacheframe_store_errors", "store_errors", ["action"],
             "Store calls that failed (timeouts included), by action."),
            ("cacheframe_store_timeouts", "store_timeouts", ["action"],
             "Store calls that ran out of time, by action."),
        )  # fmt: skip
        for metric, attribute, labels, text in labelled:
            family = CounterMetricFamily(metric, text, labels=["cache", *labels])
            if stats is not None:
                for key, count in sorted(getattr(stats, attribute).items()):
                    family.add_metric([name, *(key if isinstance(key, tuple) else (key,))], count)
            yield family
        for metric, attribute, text in _COUNTERS:
            family = CounterMetricFamily(metric, text, labels=["cache"])
            if stats is not None:
                family.add_metric([name], getattr(stats, attribute))
            yield family
        breaker = GaugeMetricFamily(
            "cacheframe_breaker_open", "1 while the circuit breaker keeps the store out.", labels=["cache"]
        )
        if stats is not None:
            breaker.add_metric([name], stats.breaker_open)
        yield breaker
        tier = GaugeMetricFamily(
            "cacheframe_local_tier_down",
            "1 while the in-process tier is untrusted after having been healthy (hits go to the store).",
            labels=["cache"],
        )
        if stats is not None:
            tier.add_metric([name], stats.local_tier_down)
        yield tier


# (metric name without _total, CacheStats attribute, help text)
_COUNTERS = (
    ("cacheframe_stores", "stores", "Entries written to the store."),
    ("cacheframe_short_circuited", "short_circuited", "Store calls the open circuit breaker skipped."),
    ("cacheframe_breaker_trips", "breaker_trips", "Times the circuit breaker opened."),
    ("cacheframe_bad_entries", "bad_entries", "Stored entries that could not be used (damaged, foreign)."),
    ("cacheframe_invalidations", "invalidations", "Invalidations (deletes, clears, unsafe-request clears)."),
)


def register(
    cache: Cache | None = None,
    *,
    name: str = "default",
    registry: CollectorRegistry | None = None,
    timing: bool = False,
) -> CacheCollector:
    """Register a collector for ``cache`` (default: the process default cache, looked up at
    each scrape, so ``configure()`` later is followed) in ``registry`` (default: REGISTRY).

    ``timing=True`` also records, from now on, the duration of every store call
    (``cacheframe_store_call_seconds{cache,action}``) and of every computation of a miss
    (``cacheframe_fill_seconds{cache,namespace}``), as histograms: a few microseconds per
    store call. It needs ``cache`` (a default replaced later would not be timed)."""
    target = registry if registry is not None else REGISTRY
    collector = CacheCollector(cache, name)
    target.register(collector)
    if timing:
        if cache is None:
            raise ConfigurationError("prometheus.register(timing=True) needs the cache to time: pass cache=")
        cache._engine.add_timing(_HistogramTiming(name, target))  # the package's own façade
    return collector


class _HistogramTiming:
    """Store-call and fill durations into prometheus_client histograms (shared per registry)."""

    _made: ClassVar[weakref.WeakKeyDictionary[CollectorRegistry, tuple[Histogram, Histogram]]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, name: str, registry: CollectorRegistry) -> None:
        self.name = name
        histograms = self._made.get(registry)
        if histograms is None:
            histograms = self._made[registry] = (
                Histogram(
                    "cacheframe_store_call_seconds",
                    "Duration of store calls, by action.",
                    ["cache", "action"],
                    registry=registry,
                    buckets=_BUCKETS,
                ),
                Histogram(
                    "cacheframe_fill_seconds",
                    "Duration of the computation of a miss (view or function, rendering included).",
                    ["cache", "namespace"],
                    registry=registry,
                    buckets=_BUCKETS,
                ),
            )
        self.store_calls, self.fills = histograms
        # The labelled children, by action and namespace (labels() takes a lock and a lookup).
        self._store_children: dict[str, Any] = {}
        self._fill_children: dict[str, Any] = {}

    def store_call(self, action: str) -> _Timer:
        child = self._store_children.get(action)
        if child is None:
            child = self._store_children[action] = self.store_calls.labels(self.name, action)
        return _Timer(child.observe)

    def fill(self, namespace: str) -> _Timer:
        child = self._fill_children.get(namespace)
        if child is None:
            child = self._fill_children[namespace] = self.fills.labels(self.name, namespace)
        return _Timer(child.observe)


class _Timer:
    """Times one call into a histogram child (a fresh one per call: calls overlap)."""

    __slots__ = ("observe", "started")

    def __init__(self, observe: Callable[[float], None]) -> None:
        self.observe = observe
        self.started = 0.0

    def __enter__(self) -> None:
        self.started = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.observe(time.perf_counter() - self.started)


# Seconds: store calls take 0.1-5 ms, fills from a millisecond to seconds.
_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
