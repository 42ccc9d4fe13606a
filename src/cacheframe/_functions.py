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
from typing import Any

from pydantic import BaseModel

from . import keys, stats
from ._engine import DOWN, EXPIRED, FRESH, HIT, INVALID, MISSING, RECHECK, SOFT, STALE, Binding, Engine
from ._gateway import NEEDS_IO, Entry, Stamped, down
from ._stamps import Deps, collect, collecting, stop_collecting, tag
from ._sync import run_sync
from .envelope import ValueEntry
from .exceptions import EntryError
from .serializers import dumps_for, loads_for

__all__ = ["call_async", "call_key", "call_sync"]

log = logging.getLogger("cacheframe.functions")
_background: set[asyncio.Task[Any]] = set()


def call_key(
    binding: Binding, signature: inspect.Signature, args: Any, kwargs: Any, custom: bytes | None
) -> str:
    """The store key of one call: from a key builder's result, or from the bound arguments."""
    identity = binding.identity or binding.qualname
    if custom is not None:
        return binding.namespace + keys.custom_function_digest(identity, custom)
    return binding.namespace + keys.function_digest(signature, args, kwargs, binding.policy.exclude, identity)


class _Call:
    """The engine's producer for one call of a cached function: run it, serialise its value
    (when it comes back exactly), and decode a stored value as its answer."""

    __slots__ = ("args", "binding", "func", "key", "kwargs", "return_type")

    def __init__(
        self,
        binding: Binding,
        key: str,
        func: Callable[..., Awaitable[Any]],
        args: Any,
        kwargs: Any,
        return_type: Any,
    ) -> None:
        self.binding, self.key, self.func = binding, key, func
        self.args, self.kwargs, self.return_type = args, kwargs, return_type

    async def compute(self, label: bytes) -> Any:
        value = await self.func(*self.args, **self.kwargs)
        if self.binding.policy.result_tags is not None:
            tag(*self.binding.policy.result_tags(value))
        return value

    def failed(self, result: Any) -> bool:
        return False  # a function fails by raising

    def stale_on_error(self, exc: Exception) -> bool:
        return True

    def answer(self, entry: Entry, label: bytes) -> Any:
        if type(entry) is not ValueEntry or entry.serializer != self.binding.serializer.name:
            raise EntryError("entry of another kind or serializer")
        return loads_for(self.binding.serializer, entry.payload, self.key, self.return_type)

    def answer_result(self, result: Any, entry: Entry | None, label: bytes, not_stored: str | None) -> Any:
        return result  # a stored entry decodes to an equal value: a hit returns the same

    def to_entry(self, result: Any, cost: float) -> ValueEntry | str:
        binding = self.binding
        if binding.local_only and "local" not in binding.warned:
            binding.warned.add("local")
            log.warning(
                "cacheframe: %s is a local function whose closure cannot be keyed: its entries are "
                "kept apart per process and never shared. "
                "Pass @cache(namespace=...) naming it to share them.",
                binding.qualname,
            )
        payload = _encode(binding, self.key, result, self.return_type)
        if payload is None:
            return stats.NS_UNSERIALIZABLE
        return ValueEntry(
            binding.serializer.name, payload, time.time(), binding.ttl, binding.policy.stale_window, cost
        )


def placed(
    binding: Binding, signature: inspect.Signature, args: Any, kwargs: Any, custom: bytes | None
) -> tuple[str, Deps]:
    """The store key of one call (in its stamp bucket, where the store has buckets) and the
    stamps its entry depends on: the cache's and the function's, this call's own (named by
    its key: what ``func.invalidate(*args)`` replaces) and its tags (the function's
    templates, filled from its arguments)."""
    logical = call_key(binding, signature, args, kwargs, custom)
    stamps = binding.engine.stamps
    key = stamps.place(logical)
    identity = logical.encode("utf-8", "surrogatepass")
    tags = tag_names(binding, signature, args, kwargs)
    return key, stamps.deps(binding.namespace, identity, tags, binding.tags_results, stamps.bucket_of(key))


def tag_names(binding: Binding, signature: inspect.Signature, args: Any, kwargs: Any) -> tuple[str, ...]:
    """The call's tags: the function's templates, filled from its arguments."""
    if not binding.policy.tags:
        return ()
    bound = signature.bind(*args, **kwargs)
    bound.apply_defaults()
    return tuple(template.format_map(bound.arguments) for template in binding.policy.tags)


def _tag_caller(
    outer: list[str], binding: Binding, signature: inspect.Signature, args: Any, kwargs: Any, read: Any
) -> None:
    """A cached call made while another cached computation runs: that one is tagged with this
    call's tags, and with those its stored result was tagged with (what it answers from)."""
    outer.extend(tag_names(binding, signature, args, kwargs))
    entry = read[0] if isinstance(read, tuple) else None
    if isinstance(entry, ValueEntry):
        outer.extend(entry.seal.tags)


def _lookup(
    engine: Engine, call: _Call, found: Stamped, deps: Deps, tag_tokens: list[bytes | None] | None = None
) -> tuple[str, Any]:
    """What the store's entry is worth to this call: (state, the value or the entry)."""
    key, binding = call.key, call.binding
    entry, tokens = found
    if type(entry) is ValueEntry and entry.serializer != binding.serializer.name:
        engine.gateway.bad_entry(key, EntryError("entry of another serializer"))
        entry = None
    state = engine.classify(
        binding, key, entry, ValueEntry, count=False, sealing=(deps, tokens), tag_tokens=tag_tokens
    )
    if state == INVALID:  # invalidated: a miss, and never a stand-in for a failure
        return EXPIRED, None
    if state == FRESH:
        try:
            value = call.answer(entry, HIT)  # type: ignore[arg-type]
        except EntryError as exc:
            engine.gateway.bad_entry(key, exc)
            return MISSING, None
        engine.observer.on_hit(binding.stats_name, engine.gateway.tier)  # once its value was read
        return FRESH, value
    return state, entry


async def call_async(
    binding: Binding,
    func: Callable[..., Awaitable[Any]],
    signature: inspect.Signature,
    return_type: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Call a cached async function."""
    engine = binding.engine
    if not engine.settings.enabled:
        engine.observer.on_bypass(binding.stats_name, stats.DISABLED)
        return await func(*args, **kwargs)
    custom = None
    if binding.policy.key_builder is not None:
        custom = await keys.custom_key(binding.policy.key_builder, func, None, args, kwargs)
    key, stamps = placed(binding, signature, args, kwargs, custom)
    call = _Call(binding, key, func, args, kwargs, return_type)
    gateway = engine.gateway
    read = gateway.peek_stamped(key, stamps.keys)
    if read is NEEDS_IO:
        read = await gateway.read_stamped(key, stamps.keys)
    state, found = _lookup(engine, call, read, stamps)  # type: ignore[arg-type]
    if state == RECHECK:  # tagged from its result: read those tags' stamps, then judge
        tag_tokens = await engine.result_tag_tokens(found, stamps.bucket)
        state, found = _lookup(engine, call, read, stamps, tag_tokens)  # type: ignore[arg-type]
    outer = collecting()
    if outer is not None:  # called by a cached computation: it depends on this call's tags too
        _tag_caller(outer, binding, signature, args, kwargs, read)
    if state == FRESH:
        return found
    sealing = (stamps, list(read[1]))  # type: ignore[index]  # the computation's own: a tag epoch is filled in
    if state == DOWN:
        engine.observer.on_bypass(binding.stats_name, down(found) or stats.STORE_DOWN)
        return await engine.fill(binding, key, call, None, use_store=False)
    if state in (STALE, SOFT) and outer is None:
        reason = stats.WHILE_REVALIDATE if state == STALE else stats.SOFT_INVALIDATION
        try:
            value, refresh = engine.serve_stale(binding, key, found, call, reason)
        except EntryError as exc:
            engine.gateway.bad_entry(key, exc)
            return await engine.fill(binding, key, call, None, reread=True, sealing=sealing)
        if refresh:
            task = asyncio.create_task(engine.refresh(binding, key, call, sealing))
            _background.add(task)
            task.add_done_callback(_background.discard)
        return value
    # A cached computation calling this one (``outer``) gets a fresh value, never a stale one:
    # it would store it as fresh, under the tokens of now, and outlive the refresh.
    usable = state in (EXPIRED, STALE)
    stale = engine.usable_on_error(binding, found) if usable and found is not None else None
    return await engine.fill(binding, key, call, stale, reread=True, sealing=sealing)


def call_sync(
    binding: Binding,
    func: Callable[..., Any],
    signature: inspect.Signature,
    return_type: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Call a cached sync function in the caller's thread; the store calls run on the portal
    loop. Stale values are served only on error (no background refresh), and concurrent
    callers are not single-flighted (each thread computes)."""
    engine = binding.engine
    if not engine.settings.enabled:
        engine.observer.on_bypass(binding.stats_name, stats.DISABLED)
        return func(*args, **kwargs)
    custom = None
    if binding.policy.key_builder is not None:
        custom = run_sync(keys.custom_key(binding.policy.key_builder, func, None, args, kwargs))
    key, stamps = placed(binding, signature, args, kwargs, custom)
    call = _Call(binding, key, func, args, kwargs, return_type)
    gateway = engine.gateway
    peeked = gateway.peek_stamped(key, stamps.keys) if gateway.local is not None else NEEDS_IO  # local tier
    # Else on the portal loop, as every store call.
    read = peeked if isinstance(peeked, tuple) else run_sync(gateway.read_stamped(key, stamps.keys))
    state, found = _lookup(engine, call, read, stamps)
    if state == RECHECK:
        tag_tokens = run_sync(engine.result_tag_tokens(found, stamps.bucket))
        state, found = _lookup(engine, call, read, stamps, tag_tokens)
    outer = collecting()
    if outer is not None:  # called by a cached computation: it depends on this call's tags too
        _tag_caller(outer, binding, signature, args, kwargs, read)
    if state == FRESH:
        return found
    if state == DOWN:
        engine.observer.on_bypass(binding.stats_name, down(found) or stats.STORE_DOWN)
        return func(*args, **kwargs)
    # A stale value is not served to a sync caller (no background refresh): it gets a fresh one.
    stale = (
        engine.usable_on_error(binding, found) if state in (STALE, EXPIRED) and found is not None else None
    )
    sealing = (stamps, list(read[1]))  # the tokens read before computing (a tag epoch is filled in)
    seal = run_sync(engine.seal(sealing))
    epoch, started = engine.begin(binding)
    collected, token = collect()  # tags taken from the result inside it (cacheframe.tag)
    try:
        value = func(*args, **kwargs)  # in the caller's thread; only the store calls take the portal
    except Exception as exc:
        stop_collecting(token)
        fallback = engine.instead_of_error(binding, stale, call, exc)
        if fallback is None:
            raise
        return fallback
    if binding.policy.result_tags is not None:
        tag(*binding.policy.result_tags(value))
    stop_collecting(token)
    entry = engine.made(binding, call, value, started)
    if seal is not None and collected:
        tagged = run_sync(engine.tag_seal(binding, seal, sealing, collected))
        seal = None if isinstance(tagged, str) else tagged
    if not isinstance(entry, str) and seal is not None:
        entry.seal = seal
        run_sync(engine.store(binding, key, entry, epoch))
    return value


def _encode(binding: Binding, key: str, value: Any, return_type: Any) -> bytes | None:
    """The payload of ``value``, or None (warned once per function) if it would not come back exactly."""
    serializer = binding.serializer
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
    if "value" not in binding.warned:
        binding.warned.add("value")
        log.warning(
            "cacheframe: a value of %s is returned uncached: with serializer=%r %s "
            "(secrets, excluded fields, types the return annotation does not rebuild). "
            "Annotate the exact return type, or use @cache(serializer='pickle') with "
            "CACHEFRAME_SECRET set. (Logged once per function; stats.not_stored counts them all.)",
            binding.qualname,
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
