"""The exporters, tested with their real libraries: prometheus_client and the OpenTelemetry SDK."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import cacheframe
from cacheframe import Cache

prometheus_client = pytest.importorskip("prometheus_client")
sdk_metrics = pytest.importorskip("opentelemetry.sdk.metrics")
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from cacheframe import otel, prometheus  # noqa: E402


def _app(cache: Cache) -> FastAPI:
    app = FastAPI()

    @app.get("/items/{item_id}")
    @cache.cache(ttl=60)
    async def read_item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    @app.get("/private")
    @cache.cache(ttl=60)
    async def private() -> dict[str, int]:
        return {"n": 1}

    return app


def _drive(cache: Cache) -> None:
    """Two misses, three hits, one bypass (Authorization on a public view)."""
    with TestClient(_app(cache)) as client:
        for path in ("/items/1", "/items/1", "/items/1", "/items/2", "/items/2"):
            client.get(path)
        client.get("/items/3", headers={"Authorization": "Bearer x"})


def _samples(registry: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _cache() -> Cache:
    return Cache(url="memory://", prefix=f"m{uuid.uuid4().hex[:8]}")


def test_prometheus_scrape_reports_real_requests() -> None:
    """Real requests through an app, then a scrape: hits, misses and bypasses per namespace."""
    cache = _cache()
    registry = CollectorRegistry()
    prometheus.register(cache, name="main", registry=registry)
    _drive(cache)
    samples = _samples(registry)
    requests = {
        (dict(labels)["namespace"], dict(labels)["outcome"], dict(labels)["reason"]): value
        for (name, labels), value in samples.items()
        if name == "cacheframe_requests_total"
    }
    assert all(
        dict(labels)["cache"] == "main" for (name, labels) in samples if name.startswith("cacheframe_")
    )
    by_outcome: dict[str, float] = {}
    for (_, outcome, _), value in requests.items():
        by_outcome[outcome] = by_outcome.get(outcome, 0) + value
    assert by_outcome.get("hit") == 3 and by_outcome.get("miss") == 2 and by_outcome.get("bypass") == 1
    assert samples[("cacheframe_stores_total", (("cache", "main"),))] == 2
    assert samples[("cacheframe_breaker_open", (("cache", "main"),))] == 0
    assert samples[("cacheframe_local_tier_down", (("cache", "main"),))] == 0
    assert not [name for name, _ in samples if name == "cacheframe_store_errors_total"]  # none failed


def test_prometheus_default_cache_followed_after_configure() -> None:
    """Without a cache, the collector reads the process default at each scrape."""
    registry = CollectorRegistry()
    prometheus.register(registry=registry)
    first = cacheframe.configure(url="memory://", prefix=f"d{uuid.uuid4().hex[:8]}")
    first.stats.requests[("ns", "hit", "")] = 5
    assert (
        _samples(registry)[
            (
                "cacheframe_requests_total",
                (("cache", "default"), ("namespace", "ns"), ("outcome", "hit"), ("reason", "")),
            )
        ]
        == 5
    )
    second = cacheframe.configure(url="memory://", prefix=f"d{uuid.uuid4().hex[:8]}")
    assert second is cacheframe.get_cache()
    assert not [k for k in _samples(registry) if k[0] == "cacheframe_requests_total"]


def test_prometheus_registration_does_not_scrape() -> None:
    """Registering describes the families without reading the cache (no scrape at import)."""
    registry = CollectorRegistry()
    collector = prometheus.register(_cache(), registry=registry)
    names = {family.name for family in collector.describe()}
    assert {"cacheframe_requests", "cacheframe_store_errors", "cacheframe_breaker_open"} <= names


def test_otel_collection_reports_real_requests() -> None:
    """Real requests, then the SDK's in-memory reader collects the observable instruments."""
    from opentelemetry.sdk.metrics import MeterProvider

    cache = _cache()
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    otel.instrument(cache, name="main", meter_provider=provider)
    _drive(cache)
    data = reader.get_metrics_data()
    points: dict[str, list[Any]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points[metric.name] = list(metric.data.data_points)
    by_outcome: dict[str, float] = {}
    for point in points["cacheframe.requests"]:
        assert point.attributes["cacheframe.cache"] == "main"
        outcome = point.attributes["cacheframe.outcome"]
        by_outcome[outcome] = by_outcome.get(outcome, 0) + point.value
    assert by_outcome.get("hit") == 3 and by_outcome.get("miss") == 2 and by_outcome.get("bypass") == 1
    assert [p.value for p in points["cacheframe.stores"]] == [2]
    assert [p.value for p in points["cacheframe.breaker.open"]] == [0]
    assert [p.value for p in points["cacheframe.local_tier.down"]] == [0]
    provider.shutdown()


def test_the_local_tier_going_down_is_exported() -> None:
    """``local_tier_down`` as both exporters read it: a gauge that follows the counter."""
    from opentelemetry.sdk.metrics import MeterProvider

    cache = _cache()
    registry = CollectorRegistry()
    prometheus.register(cache, name="main", registry=registry)
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    otel.instrument(cache, name="main", meter_provider=provider)
    for down in (1, 0):
        cache.stats.on_tier_health(not down)
        assert _samples(registry)[("cacheframe_local_tier_down", (("cache", "main"),))] == down
        points = [
            point.value
            for resource in reader.get_metrics_data().resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == "cacheframe.local_tier.down"
            for point in metric.data.data_points
        ]
        assert points == [down]
    provider.shutdown()


def test_store_errors_and_the_open_breaker_are_scraped() -> None:
    """A failing store: errors by action, the breaker's state and trips, bypass reasons."""
    from cacheframe.backends.memory import MemoryBackend
    from cacheframe.exceptions import BackendError

    class Down(MemoryBackend):
        async def get(self, key: str) -> bytes | None:
            raise BackendError("store down")

    cache = Cache(backend=Down(), prefix=f"e{uuid.uuid4().hex[:8]}", breaker_threshold=2, breaker_cooldown=60)
    registry = CollectorRegistry()
    prometheus.register(cache, name="main", registry=registry)
    with TestClient(_app(cache)) as client:
        for _ in range(3):
            assert client.get("/items/1").status_code == 200  # a cache failure never fails the view
    samples = _samples(registry)
    assert samples[("cacheframe_store_errors_total", (("action", "get"), ("cache", "main")))] == 2
    assert samples[("cacheframe_breaker_open", (("cache", "main"),))] == 1
    assert samples[("cacheframe_breaker_trips_total", (("cache", "main"),))] == 1
    reasons = {
        dict(labels)["reason"]: value
        for (name, labels), value in samples.items()
        if name == "cacheframe_requests_total" and dict(labels)["outcome"] == "bypass"
    }
    assert reasons == {"store-down": 2, "breaker-open": 1}


def test_timing_is_off_until_an_exporter_asks() -> None:
    """By default the gateway holds the backend itself and the engine times nothing."""
    cache = _cache()
    prometheus.register(cache, registry=CollectorRegistry())
    assert cache._engine.timing is None and cache._gateway.backend is cache.backend


def test_prometheus_timing_records_store_calls_and_fills() -> None:
    """timing=True: histograms of store-call and fill durations, by action and namespace."""
    cache = _cache()
    registry = CollectorRegistry()
    prometheus.register(cache, name="main", registry=registry, timing=True)
    _drive(cache)
    samples = _samples(registry)
    counts = {
        (name, dict(labels).get("action") or dict(labels).get("namespace")): value
        for (name, labels), value in samples.items()
        if name.endswith("_count")
    }
    assert counts[("cacheframe_store_call_seconds_count", "get")] == 5  # the bypass never reads
    assert counts[("cacheframe_store_call_seconds_count", "set")] >= 2  # entries (and new stamps)
    fills = {key: value for key, value in counts.items() if key[0] == "cacheframe_fill_seconds_count"}
    assert list(fills.values()) == [2]  # the two misses (a bypass is not a fill)


def test_otel_timing_records_histograms_and_spans() -> None:
    """timing=True: duration histograms and one span per store call and per fill."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    cache = _cache()
    reader, spans = InMemoryMetricReader(), InMemorySpanExporter()
    meters = MeterProvider(metric_readers=[reader])
    tracers = TracerProvider()
    tracers.add_span_processor(SimpleSpanProcessor(spans))
    otel.instrument(cache, name="main", meter_provider=meters, timing=True, tracer_provider=tracers)
    _drive(cache)
    names = [span.name for span in spans.get_finished_spans()]
    assert names.count("cacheframe.store get") == 5 and names.count("cacheframe.store set") >= 2
    assert names.count("cacheframe.fill") == 2
    histograms: dict[str, int] = {}
    for resource in reader.get_metrics_data().resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name.endswith(".duration"):
                    histograms[metric.name] = sum(p.count for p in metric.data.data_points)
    assert histograms["cacheframe.store.duration"] >= 7 and histograms["cacheframe.fill.duration"] == 2
    meters.shutdown()
    tracers.shutdown()


def test_timing_keeps_every_backend_capability(cache_url: str) -> None:
    """On every backend, timed store calls still take the store lock where there is one and
    answer the same replies (the timed backend forwards what the gateway uses)."""
    cache = Cache(url=cache_url, prefix=f"t{uuid.uuid4().hex[:8]}", stampede_lock_min_cost=0)
    registry = CollectorRegistry()
    prometheus.register(cache, name="main", registry=registry, timing=True)
    app = _app(cache)
    with TestClient(app) as client:
        replies = [client.get("/items/7").headers["x-cache"] for _ in range(3)]
    assert replies == ["MISS", "HIT", "HIT"]
    actions = {
        dict(labels)["action"]
        for (name, labels), _ in _samples(registry).items()
        if name == "cacheframe_store_call_seconds_count"
    }
    assert {"get", "set"} <= actions
    assert ("lock" in actions) == (cache._gateway.lock is not None)
