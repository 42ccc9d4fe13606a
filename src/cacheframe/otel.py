"""OpenTelemetry metrics: observable instruments that read a cache's counters at collection.

``pip install 'cacheframe[otel]'``, then, after your ``MeterProvider`` is set up::

    from cacheframe import otel
    otel.instrument()                                   # the default cache
    otel.instrument(billing, name="billing", meter_provider=provider)

Nothing runs per request: each instrument's callback reads
:class:`~cacheframe.stats.CacheStats` when the SDK collects. There are no
OpenTelemetry semantic conventions for caches yet, so the names live under
``cacheframe.*``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .default import get_cache
from .exceptions import ConfigurationError, MissingDriverError

try:
    from opentelemetry import metrics, trace
    from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation
    from opentelemetry.trace import Tracer, TracerProvider
except ImportError as exc:  # pragma: no cover - the extra is not installed
    raise MissingDriverError(
        "cacheframe.otel needs opentelemetry-api: pip install 'cacheframe[otel]'"
    ) from exc

if TYPE_CHECKING:
    from .cache import Cache

__all__ = ["instrument"]

# (instrument name, CacheStats attribute, unit, description)
_COUNTERS = (
    ("cacheframe.stores", "stores", "{entry}", "Entries written to the store."),
    (
        "cacheframe.store.short_circuited",
        "short_circuited",
        "{call}",
        "Store calls the open breaker skipped.",
    ),
    ("cacheframe.breaker.trips", "breaker_trips", "{trip}", "Times the circuit breaker opened."),
    ("cacheframe.bad_entries", "bad_entries", "{entry}", "Stored entries that could not be used."),
    (
        "cacheframe.invalidations",
        "invalidations",
        "{invalidation}",
        "Deletes, clears and unsafe-request clears.",
    ),
)
# (instrument name, CacheStats attribute of labelled counts, attribute names, unit, description)
_LABELLED = (
    ("cacheframe.requests", "requests", ("namespace", "outcome", "reason"), "{request}",
     "Requests and calls answered, by namespace, outcome and reason."),
    ("cacheframe.not_stored", "not_stored_by", ("namespace", "reason"), "{result}",
     "Computed results answered but not stored, by namespace and reason."),
    ("cacheframe.store.errors", "store_errors", ("action",), "{call}",
     "Store calls that failed (timeouts included), by action."),
    ("cacheframe.store.timeouts", "store_timeouts", ("action",), "{call}",
     "Store calls that ran out of time, by action."),
)  # fmt: skip


def instrument(
    cache: Cache | None = None,
    *,
    name: str = "default",
    meter_provider: MeterProvider | None = None,
    timing: bool = False,
    tracer_provider: TracerProvider | None = None,
) -> None:
    """Create the observable instruments for ``cache`` (default: the process default cache,
    looked up at each collection) on ``meter_provider`` (default: the global one).

    ``timing=True`` also records, from now on, the duration of every store call and of every
    computation of a miss as histograms (``cacheframe.store.duration``,
    ``cacheframe.fill.duration``, in seconds) and as spans (``cacheframe.store <action>``,
    ``cacheframe.fill``) on ``tracer_provider`` (default: the global one). It needs ``cache``."""
    provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
    meter = provider.get_meter("cacheframe")
    if timing:
        if cache is None:
            raise ConfigurationError("otel.instrument(timing=True) needs the cache to time: pass cache=")
        tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer("cacheframe")
        cache._engine.add_timing(_Timing(name, meter, tracer))  # the package's own façade

    def stats() -> Any:
        return (cache if cache is not None else get_cache()).stats

    for metric, attribute, labels, unit, text in _LABELLED:
        meter.create_observable_counter(
            metric, callbacks=[_labelled(stats, attribute, labels, name)], unit=unit, description=text
        )
    for metric, attribute, unit, text in _COUNTERS:
        meter.create_observable_counter(
            metric, callbacks=[_reader(stats, attribute, name)], unit=unit, description=text
        )
    meter.create_observable_gauge(
        "cacheframe.breaker.open",
        callbacks=[_reader(stats, "breaker_open", name)],
        unit="1",
        description="1 while the circuit breaker keeps the store out.",
    )
    meter.create_observable_gauge(
        "cacheframe.local_tier.down",
        callbacks=[_reader(stats, "local_tier_down", name)],
        unit="1",
        description="1 while the in-process tier is untrusted (hits go to the store).",
    )


def _reader(
    stats: Callable[[], Any], attribute: str, name: str
) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def read(options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(getattr(stats(), attribute), {"cacheframe.cache": name})]

    return read


def _labelled(
    stats: Callable[[], Any], attribute: str, labels: tuple[str, ...], name: str
) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def read(options: CallbackOptions) -> Iterable[Observation]:
        observations = []
        for key, count in sorted(getattr(stats(), attribute).items()):
            values = key if isinstance(key, tuple) else (key,)
            attributes = {"cacheframe.cache": name}
            attributes.update(
                {f"cacheframe.{label}": value for label, value in zip(labels, values, strict=True)}
            )
            observations.append(Observation(count, attributes))
        return observations

    return read


class _Timing:
    """Store-call and fill durations as histograms, and spans around them."""

    def __init__(self, name: str, meter: Meter, tracer: Tracer) -> None:
        self.name = name
        self.tracer = tracer
        self.store_calls = meter.create_histogram(
            "cacheframe.store.duration", unit="s", description="Duration of store calls, by action."
        )
        self.fills = meter.create_histogram(
            "cacheframe.fill.duration", unit="s", description="Duration of the computation of a miss."
        )

    @contextmanager
    def store_call(self, action: str) -> Iterator[None]:
        attributes = {"cacheframe.cache": self.name, "cacheframe.action": action}
        with self.tracer.start_as_current_span(f"cacheframe.store {action}", attributes=attributes):
            started = time.perf_counter()
            try:
                yield
            finally:
                self.store_calls.record(time.perf_counter() - started, attributes)

    @contextmanager
    def fill(self, namespace: str) -> Iterator[None]:
        attributes = {"cacheframe.cache": self.name, "cacheframe.namespace": namespace}
        with self.tracer.start_as_current_span("cacheframe.fill", attributes=attributes):
            started = time.perf_counter()
            try:
                yield
            finally:
                self.fills.record(time.perf_counter() - started, attributes)
