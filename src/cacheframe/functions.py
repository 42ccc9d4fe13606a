"""The plain-function path of ``@cache``: values keyed on arguments, serialised.

Async functions share concurrent misses (single-flight) and may serve a stale
value while one background refresh runs. Sync functions stay sync: their store
calls run on the private portal loop (:mod:`cacheframe._sync`).

A value is stored only when it comes back exactly: a miss encodes it, decodes it
again with the return annotation and compares (same types, equal values). One that
does not (a ``SecretStr``, an excluded field, a tuple under ``-> Any``) is returned
uncached, with one warning per function naming the ``serializer`` option.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from . import keys
from ._sync import run_sync
from .cache import STORE_DOWN
from .envelope import ValueEntry, freshness
from .exceptions import EntryError
from .serializers import dumps_for, loads_for
from .stampede import follow

if TYPE_CHECKING:
    from .decorator import Bound, Policy

__all__ = ["call_async", "call_sync"]

log = logging.getLogger("cacheframe")
_MISSING: Any = object()
_background: set[asyncio.Task[Any]] = set()


def _key(
    policy: Policy, bound: Bound, signature: inspect.Signature, args: Any, kwargs: Any, custom: bytes | None
) -> str:
    """The store key of one call: from a key builder's result, or from the bound arguments."""
    if custom is not None:
        return bound.namespace + keys.custom_function_digest(bound.identity or bound.qualname, custom)
    identity = bound.identity or bound.qualname
    return bound.namespace + keys.function_digest(signature, args, kwargs, policy.exclude, identity)


async def _lookup(policy: Policy, bound: Bound, key: str, return_type: Any) -> tuple[Any, ValueEntry | None]:
    """(value or _MISSING or STORE_DOWN, the stale entry usable on error)."""
    cache, serializer = bound.cache, bound.serializer
    entry = await cache.read_shared(key)
    if entry is STORE_DOWN:
        cache.stats.bypasses += 1
        return STORE_DOWN, None
    if entry is None:
        cache.stats.misses += 1
        return _MISSING, None
    if not isinstance(entry, ValueEntry) or entry.serializer != serializer.name:
        cache.bad_entry(key, EntryError("entry of another kind or serializer"))
        return _MISSING, None
    state = freshness(
        entry, stale_while_revalidate=policy.stale_while_revalidate, xfetch_beta=policy.xfetch_beta
    )
    usable_on_error = entry if entry.age() < entry.ttl + min(entry.stale, policy.stale_if_error) else None
    if state == "expired":
        cache.stats.misses += 1
        return _MISSING, usable_on_error
    try:
        value = loads_for(serializer, entry.payload, key, return_type)
    except EntryError as exc:
        cache.bad_entry(key, exc)
        return _MISSING, None
    if state == "stale":
        cache.stats.stale += 1
        return _StaleValue(value), usable_on_error
    cache.stats.hits += 1
    return value, usable_on_error


class _StaleValue:
    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def _encode(bound: Bound, key: str, value: Any, return_type: Any) -> bytes | None:
    """The payload of ``value``, or None (warned once per function) if it would not come back exactly."""
    serializer = bound.serializer
    try:
        payload = dumps_for(serializer, value, key)
        if getattr(serializer, "exact", False):  # pickle rebuilds the object graph itself
            return payload
        if _same(value, loads_for(serializer, payload, key, return_type)):
            return payload
        reason = "it does not come back equal, with the same types"
    except Exception as exc:  # any serialiser failure (a plugin's too) only skips the store
        # The exception's own text may quote the value (a validation error does): name its type only.
        reason = f"{type(exc).__qualname__} while encoding or decoding it"
    bound.cache.stats.not_stored += 1
    if "value" not in bound.warned:
        bound.warned.add("value")
        log.warning(
            "cacheframe: a value of %s is returned uncached: with serializer=%r %s "
            "(secrets, excluded fields, types the return annotation does not rebuild). "
            "Annotate the exact return type, or use @cache(serializer='pickle') with "
            "CACHEFRAME_SECRET set. (Logged once per function; stats.not_stored counts them all.)",
            bound.qualname,
            serializer.name,
            reason,
        )
    return None


def _same(a: Any, b: Any) -> bool:
    """``a == b`` with the same types throughout (``1``, ``1.0`` and ``True`` differ here)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict):  # order too: a dict's order is visible to the caller
        return len(a) == len(b) and all(
            _same(ka, kb) and _same(va, vb) for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True)
        )
    if isinstance(a, set | frozenset):
        return {(type(x), x) for x in a} == {(type(x), x) for x in b}
    if dataclasses.is_dataclass(a):  # every field, compare=False and init=False ones too
        return all(_same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    if isinstance(a, BaseModel):  # == (private attributes too), then the fields' and extras' types
        return bool(a == b) and all(
            _same(getattr(a, name), getattr(b, name))
            for name in (*type(a).model_fields, *(a.model_extra or ()))
        )
    if isinstance(a, float) and a != a:  # NaN
        return bool(b != b)
    return bool(a == b)


async def _store(
    bound: Bound, policy: Policy, key: str, value: Any, delta: float, epoch: int, return_type: Any
) -> ValueEntry | None:
    cache, serializer = bound.cache, bound.serializer
    if bound.local_only and "local" not in bound.warned:
        bound.warned.add("local")
        log.warning(
            "cacheframe: %s is a local function whose closure cannot be keyed: its entries are "
            "kept apart per process and never shared. Pass @cache(namespace=...) naming it to share them.",
            bound.qualname,
        )
    payload = _encode(bound, key, value, return_type)
    if payload is None:
        return None
    stale = max(policy.stale_while_revalidate, policy.stale_if_error)
    entry = ValueEntry(serializer.name, payload, time.time(), bound.ttl, stale, delta)
    if cache.invalidations != epoch:  # invalidated while computing: do not write back
        cache.stats.not_stored += 1
        return entry
    await cache.write_entry(key, entry)
    return entry


def _decode_shared(bound: Bound, key: str, shared: Any, return_type: Any) -> Any:
    """The value of an entry for ``key`` (shared by the leader, or stale), or _MISSING."""
    if isinstance(shared, ValueEntry):
        try:
            return loads_for(bound.serializer, shared.payload, key, return_type)
        except EntryError:
            pass
    return _MISSING


async def _compute(
    policy: Policy,
    bound: Bound,
    key: str,
    func: Callable[..., Awaitable[Any]],
    args: Any,
    kwargs: Any,
    stale: ValueEntry | None,
    return_type: Any,
    use_store: bool = True,
) -> Any:
    """Run ``func`` once per key in this loop (single-flight) and store the value (if ``use_store``)."""
    cache = bound.cache
    pending = cache.flights.pending(key)
    if pending is not None:
        shared = await follow(pending, cache.settings.stampede_wait)
        value = _decode_shared(bound, key, shared, return_type)
        if value is not _MISSING:
            return value
        try:
            return await func(*args, **kwargs)
        except Exception:
            fallback = _decode_shared(bound, key, stale, return_type)
            if fallback is _MISSING:
                raise
            return fallback
    async with cache.flights.lead(key) as future:
        epoch, started = cache.invalidations, time.perf_counter()
        try:
            value = await func(*args, **kwargs)
        except Exception as exc:
            fallback = _decode_shared(bound, key, stale, return_type)
            if fallback is _MISSING:
                raise
            log.warning("cacheframe: %s failed (%s); returning the stale value", key, exc)
            return fallback
        delta = time.perf_counter() - started
        if use_store:
            entry = await _store(bound, policy, key, value, delta, epoch, return_type)
        else:  # the store is down: share the value in this process only
            payload = _encode(bound, key, value, return_type)
            now = time.time()
            entry = None if payload is None else ValueEntry(bound.serializer.name, payload, now, bound.ttl)
        future.set_result(entry)
        return value  # a stored entry decodes to an equal value: a hit returns the same


async def call_async(
    policy: Policy,
    bound: Bound,
    func: Callable[..., Awaitable[Any]],
    signature: inspect.Signature,
    return_type: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Call a cached async function."""
    cache = bound.cache
    if not cache.settings.enabled:
        return await func(*args, **kwargs)
    custom = None
    if policy.key_builder is not None:
        custom = await keys.custom_key(policy.key_builder, func, None, args, kwargs)
    key = _key(policy, bound, signature, args, kwargs, custom)
    value, stale = await _lookup(policy, bound, key, return_type)
    if value is STORE_DOWN:
        return await _compute(policy, bound, key, func, args, kwargs, None, return_type, use_store=False)
    if isinstance(value, _StaleValue):
        if cache.claim_refresh(key):
            task = asyncio.create_task(_refresh(policy, bound, key, func, args, kwargs, return_type))
            _background.add(task)
            task.add_done_callback(_background.discard)
        return value.value
    if value is not _MISSING:
        return value
    return await _compute(policy, bound, key, func, args, kwargs, stale, return_type)


async def _refresh(
    policy: Policy,
    bound: Bound,
    key: str,
    func: Callable[..., Awaitable[Any]],
    args: Any,
    kwargs: Any,
    return_type: Any,
) -> None:
    try:
        await _compute(policy, bound, key, func, args, kwargs, None, return_type)
    except Exception as exc:  # keep serving the stale value
        log.warning("cacheframe: background refresh of %s failed: %s", key, exc)
    finally:
        bound.cache.refreshing.pop(key, None)


def call_sync(
    policy: Policy,
    bound: Bound,
    func: Callable[..., Any],
    signature: inspect.Signature,
    return_type: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Call a cached sync function; stale values are served only on error (no background refresh)."""
    cache = bound.cache
    if not cache.settings.enabled:
        return func(*args, **kwargs)
    custom = None
    if policy.key_builder is not None:
        custom = run_sync(keys.custom_key(policy.key_builder, func, None, args, kwargs))
    key = _key(policy, bound, signature, args, kwargs, custom)
    value, stale = run_sync(_lookup(policy, bound, key, return_type))
    if value is STORE_DOWN:
        return func(*args, **kwargs)
    if isinstance(value, _StaleValue):
        value = _MISSING  # sync callers get a fresh value
    if value is not _MISSING:
        return value
    epoch, started = cache.invalidations, time.perf_counter()
    try:
        value = func(*args, **kwargs)
    except Exception:
        fallback = _decode_shared(bound, key, stale, return_type)
        if fallback is _MISSING:
            raise
        return fallback
    run_sync(_store(bound, policy, key, value, time.perf_counter() - started, epoch, return_type))
    return value
