"""The engine and its gateway built by hand over a backend, without ``Cache`` or FastAPI, for
the tests of the layers below the façade (test_engine, test_gateway, test_memo)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from cacheframe._engine import Binding, Engine
from cacheframe._gateway import StoreGateway
from cacheframe.envelope import ResponseEntry, ValueEntry
from cacheframe.policy import Policy
from cacheframe.registry import load_serializer_factory
from cacheframe.settings import load_settings
from cacheframe.stats import CacheStats
from cacheframe.types import Backend

FUNC = "mod.f"  # the decorated function of new_binding: its namespace in the labelled counters


def new_gateway(backend: Backend, **options: Any) -> StoreGateway:
    """A gateway to ``backend`` with settings ``options`` and counters of its own."""
    return StoreGateway(backend, load_settings(**options), CacheStats(), "test")


def counts(of: Engine | StoreGateway) -> CacheStats:
    """The counters kept by the CacheStats observer of an engine or gateway made here."""
    assert isinstance(of.observer, CacheStats)
    return of.observer


def new_engine(backend: Backend, **options: Any) -> Engine:
    """An engine over ``backend`` with settings ``options``, and the settings' serialiser."""
    door = new_gateway(backend, **options)
    serializer = load_serializer_factory(door.settings.serializer)(secret=None)
    return Engine(door, door.settings, serializer)


def policy(**options: Any) -> Policy:
    """A ``@cache(ttl=60)`` policy; ``options`` override its fields."""
    fields: dict[str, Any] = {
        "ttl": 60.0,
        "namespace": None,
        "key_builder": None,
        "serializer": None,
        "vary": (),
        "private": False,
        "exclude": (),
        "stale_while_revalidate": 0.0,
        "stale_if_error": 0.0,
        "xfetch_beta": 0.0,
    }
    return Policy(**{**fields, **options})


def new_binding(of: Engine, **options: Any) -> Binding:
    """The binding of a function ``FUNC`` to ``of`` under ``policy(**options)``."""
    return of.bind(policy(**options), FUNC, "", True)


def value_entry(
    payload: bytes = b"1", *, age: float = 0.0, ttl: float = 60.0, stale: float = 0.0, delta: float = 0.0
) -> ValueEntry:
    """A JSON value entry stored ``age`` seconds ago."""
    return ValueEntry("json", payload, time.time() - age, ttl, stale, delta)


def response_entry(body: bytes = b"body", *, etag: bytes = b'"e1"', age: float = 0.0) -> ResponseEntry:
    """A 200 text response entry stored ``age`` seconds ago, fresh for 60 s."""
    return ResponseEntry(200, [(b"content-type", b"text/plain")], body, etag, time.time() - age, 60.0)


async def settle() -> None:
    """Let every task started so far run up to where it waits."""
    for _ in range(5):
        await asyncio.sleep(0)
