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

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .default import get_cache
from .exceptions import MissingDriverError

try:
    from opentelemetry import metrics
    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
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
    ("cacheframe.store.errors", "store_errors", "{call}", "Store calls that failed (timeouts included)."),
    ("cacheframe.store.timeouts", "store_timeouts", "{call}", "Store calls that ran out of time."),
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


def instrument(
    cache: Cache | None = None, *, name: str = "default", meter_provider: MeterProvider | None = None
) -> None:
    """Create the observable instruments for ``cache`` (default: the process default cache,
    looked up at each collection) on ``meter_provider`` (default: the global one)."""
    provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
    meter = provider.get_meter("cacheframe")

    def stats() -> Any:
        return (cache if cache is not None else get_cache()).stats

    def requests(options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(
                count,
                {
                    "cacheframe.cache": name,
                    "cacheframe.namespace": namespace,
                    "cacheframe.outcome": outcome,
                    "cacheframe.reason": reason,
                },
            )
            for (namespace, outcome, reason), count in sorted(stats().requests.items())
        ]

    meter.create_observable_counter(
        "cacheframe.requests",
        callbacks=[requests],
        unit="{request}",
        description="Requests and calls answered by a cache, by namespace, outcome and reason.",
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


def _reader(
    stats: Callable[[], Any], attribute: str, name: str
) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def read(options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(getattr(stats(), attribute), {"cacheframe.cache": name})]

    return read
