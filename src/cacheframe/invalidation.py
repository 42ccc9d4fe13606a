"""``@invalidates``: a write route that invalidates what it changed, once it succeeded.

::

    @app.put("/items/{item_id}")
    @invalidates(read_item, list_items, tags=["item:{item_id}"])
    async def update_item(item_id: int, item: Item) -> Item: ...

After a 2xx or 3xx answer (an exception, or a 4xx/5xx ``Response``, invalidates
nothing), each target is invalidated by the write route's own arguments: a view by
its path parameters of the same names (``read_item.invalidate(item_id=...)``), or
all of it when the write route has none of them; and each tag template is filled
from the write route's parameters. The invalidation is durable in the store before
the answer leaves; a store that cannot take it raises
:class:`~cacheframe.BackendError` (the write happened: the client learns that the
cache may still show the old data).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from . import unsafe
from ._stamps import MAX_TAGS, check_tag
from .default import get_cache
from .exceptions import ConfigurationError
from .policy import tag_fields

__all__ = ["invalidates"]

F = TypeVar("F", bound=Callable[..., Any])


def invalidates(*targets: Any, tags: Sequence[str] = ()) -> Callable[[F], F]:
    """Invalidate ``targets`` (functions decorated with ``@cache``) and ``tags`` (templates over
    the decorated write route's parameters) after it answers 2xx or 3xx. Place it under the
    route decorator."""
    for target in targets:
        if getattr(target, "__cacheframe__", None) is None or not hasattr(target, "invalidate"):
            raise ConfigurationError(
                f"@invalidates: {target!r} is not a function decorated with @cache; pass the cached view"
            )
    if isinstance(tags, str):
        raise ConfigurationError(f"@invalidates takes a list of tag templates, got the string {tags!r}")
    if len(tags) > MAX_TAGS:
        raise ConfigurationError(f"@invalidates: at most {MAX_TAGS} tags, got {len(tags)}")
    for template in tags:
        check_tag(template)

    def decorate(func: F) -> F:
        signature = inspect.signature(func)
        for template in tags:
            missing = [name for name in tag_fields(template) if name not in signature.parameters]
            if missing:
                raise ConfigurationError(
                    f"@invalidates(tags=[{template!r}]) on {func.__qualname__}: {', '.join(missing)} "
                    f"names no parameter of it (its parameters: {', '.join(signature.parameters) or 'none'})"
                )
        is_async = inspect.iscoroutinefunction(func)

        @functools.wraps(func)
        async def write(*args: Any, **kwargs: Any) -> Any:
            if is_async:
                result = await func(*args, **kwargs)
            else:
                result = await run_in_threadpool(func, *args, **kwargs)
            if _succeeded(result, kwargs):
                bound = signature.bind_partial(*args, **kwargs)
                bound.apply_defaults()
                await _invalidate(targets, tags, dict(bound.arguments))
            return result

        return cast(F, write)

    return decorate


def _succeeded(result: Any, kwargs: dict[str, Any]) -> bool:
    """2xx or 3xx, by the status FastAPI will send: a returned Response's, else one set on an
    injected Response, else success (the route's own status code)."""
    if isinstance(result, Response):
        return 200 <= result.status_code < 400
    for value in kwargs.values():
        if isinstance(value, Response) and value.status_code is not None:
            return 200 <= value.status_code < 400
    return True


async def _invalidate(targets: Sequence[Any], tags: Sequence[str], arguments: dict[str, Any]) -> None:
    for target in targets:
        decorator = target.__cacheframe__
        binding = decorator.bind(target.__wrapped__)
        # A view's resource is its path parameters, by the names requests to it showed. Before
        # any request in this process they are unknown: then all of the target is invalidated
        # (more than needed, never less).
        known = [names for names in binding.path_names if set(names) <= arguments.keys()]
        params = {name: arguments[name] for name in known[0]} if known else {}
        stamp = unsafe.resource_stamp(binding, target.__wrapped__, params)
        await binding.engine.invalidate([stamp], binding.stats_name)
    if tags:
        engine = targets[0].__cacheframe__.bind(targets[0].__wrapped__).engine if targets else None
        names = [check_tag(template.format_map(arguments)) for template in tags]
        if engine is None:
            await get_cache().invalidate_tags(*names)
        else:
            await engine.invalidate_tags(names, soft=False)
