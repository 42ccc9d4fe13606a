"""RFC 9111 §4.4: a successful unsafe request invalidates its target URI's stored GET entries.

When POST, PUT, PATCH or DELETE is answered 2xx or 3xx, every decorated GET route of the
app that serves that path has the entries of that path invalidated: the route's
*resource* (its path parameters, by the values the view receives, as
``view.invalidate(item_id=3)`` names it), or all of the route's entries when it has no
path parameters. That covers every variant (any Host, query, varied header or user).
It replaces a stamp (:mod:`cacheframe._stamps`): one store write, whatever the number
of entries, and race-safe: a GET miss running at that moment in any process sharing the
store does not write back a response that reads as valid.

On a decorated unsafe route this happens before its answer leaves. For the whole app,
:class:`UnsafeInvalidation` (``cacheframe.install(app)``) does it for every route,
decorated or not, and also invalidates the ``Location`` and ``Content-Location`` targets
of the answer when they point into the app (RFC 9111 §4.4), and the tags named by a
``Cache-Group-Invalidation`` header (RFC 9875 §3). A failing store is logged, never
raised: the unsafe request itself has already succeeded.
"""

from __future__ import annotations

import logging
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import SplitResult, unquote, urljoin, urlsplit

from pydantic import TypeAdapter
from starlette.responses import Response
from starlette.routing import Match

from ._engine import Bindable, Binding, Engine
from ._stamps import check_tag
from .exceptions import CacheframeError, ConfigurationError
from .routes import path_values, route_info, validated

__all__ = ["METHODS", "UnsafeInvalidation", "as_annotated", "invalidate", "resource_stamp", "succeeded"]

log = logging.getLogger("cacheframe.unsafe")
METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_DONE = "cacheframe.invalidated"  # a scope key: this request's path was invalidated already
_GROUPS = b"cache-group-invalidation"
_MAX_GROUPS = 1024  # per response: the header is the app's own, this only bounds a runaway one
_DEFAULT_PORTS = {"http": 80, "https": 443}


def succeeded(value: Any, route: Any, sub: Response | None) -> bool:
    """Whether the view's answer is 2xx or 3xx, by the status FastAPI will send for it
    (a returned ``Response``'s own, else the one set on the injected response, else the
    route's ``status_code``, else 200)."""
    if isinstance(value, Response):
        status = value.status_code
    else:
        status = (sub.status_code if sub is not None else None) or getattr(route, "status_code", None) or 200
    return 200 <= status < 400


def as_annotated(func: Callable[..., Any], name: str, value: Any) -> Any:
    """``value`` as the parameter ``name`` of ``func`` receives it (validated by its
    annotation, laxly, as FastAPI does), or as given when the annotation does not say."""
    try:
        annotation = typing.get_type_hints(func, include_extras=True).get(name)
    except Exception:  # unresolvable annotations: the resource is named as given
        return value
    if annotation is None:
        return value
    try:
        return TypeAdapter(annotation).validate_python(value)
    except Exception:  # not convertible: the resource is named as given
        return value


def resource_stamp(
    binding: Binding, func: Callable[..., Any], params: Mapping[str, Any], *, received: bool = False
) -> str:
    """The stamp of a view's resource named by its path parameters (``received``: already as
    the view's route receives them, else converted so: by the field requests to it were
    validated with, else by the view's annotation); the namespace's stamp, all of the view,
    when there are none."""
    stamps = binding.engine.stamps
    if not params:
        return stamps.namespace(binding.namespace)
    values = (
        dict(params)
        if received
        else {name: _as_received(binding, func, name, v) for name, v in params.items()}
    )
    return stamps.resource(binding.namespace, stamps.params_identity(values))


def _as_received(binding: Binding, func: Callable[..., Any], name: str, value: Any) -> Any:
    field = binding.path_fields.get(name)
    if field is not None:
        return validated(field, name, value)
    return as_annotated(func, name, value)


async def invalidate(scope: Any, also: Sequence[str] = ()) -> int:
    """Invalidate the stored entries of this request's path (and of the paths in ``also``)
    for every decorated GET route of the app serving them; the number of routes reached.
    A path already invalidated for this request is not invalidated twice."""
    done = scope.setdefault(_DONE, set())
    reached = 0
    for path in (scope["path"], *also):
        if path in done:
            continue
        done.add(path)
        for decorator, func, values in _get_routes(scope, path):
            binding = decorator.bind(func)
            stamp = resource_stamp(binding, func, values, received=True)
            try:
                await binding.engine.invalidate([stamp], binding.stats_name)
            except CacheframeError as exc:  # the store failed; the request succeeded anyway
                log.warning(
                    "cacheframe: invalidating %s after a %s failed: %s",
                    binding.qualname,
                    scope["method"],
                    exc,
                )
            reached += 1
    return reached


def _get_routes(scope: Any, path: str) -> list[tuple[Bindable, Any, dict[str, Any]]]:
    """(decorator, function, path parameters) of every decorated route a GET to ``path``
    could reach."""
    router = getattr(scope.get("app"), "router", None)
    if router is None:
        return []
    probe = {
        "type": "http",
        "method": "GET",
        "path": path,
        "root_path": scope.get("root_path", ""),
        "headers": scope.get("headers", []),
        "scheme": scope.get("scheme", "http"),
        "server": scope.get("server"),
    }
    found: list[tuple[Bindable, Any, dict[str, Any]]] = []
    _collect(getattr(router, "routes", ()), probe, found)
    return found


def _collect(routes: Any, probe: dict[str, Any], found: list[tuple[Bindable, Any, dict[str, Any]]]) -> None:
    for route in routes:
        candidates = getattr(route, "effective_candidates", None)  # an included router (FastAPI ≥ 0.16x)
        if candidates is not None:
            _collect(candidates() if callable(candidates) else candidates, probe, found)
            continue
        match, child = route.matches(dict(probe))
        if match is not Match.FULL:
            continue
        endpoint = getattr(route, "endpoint", None)
        decorator = getattr(endpoint, "__cacheframe__", None)
        func = getattr(endpoint, "__wrapped__", None)
        if decorator is not None and func is not None:
            # The path parameters as a GET would hand them to the view (and its dependencies).
            found.append((decorator, func, path_values(route_info(route), child.get("path_params") or {})))
        elif getattr(route, "routes", None):  # a mount (a sub-application, a router): below its prefix
            _collect(route.routes, {**probe, **child}, found)


def decorated_engines(app: Any) -> list[Engine]:
    """The engines (one per cache) of every decorated route of ``app``."""
    engines: dict[int, Engine] = {}

    def walk(routes: Iterable[Any]) -> None:
        for route in routes:
            candidates = getattr(route, "effective_candidates", None)
            if candidates is not None:
                walk(candidates() if callable(candidates) else candidates)
                continue
            walk(getattr(route, "routes", ()) or ())  # a mounted router
            endpoint = getattr(route, "endpoint", None)
            decorator = getattr(endpoint, "__cacheframe__", None)
            func = getattr(endpoint, "__wrapped__", None)
            if decorator is not None and func is not None:
                engine = decorator.bind(func).engine
                engines[id(engine)] = engine

    walk(getattr(getattr(app, "router", None), "routes", ()) or ())
    return list(engines.values())


def groups(value: bytes) -> list[str]:
    """The group names of a ``Cache-Group-Invalidation`` value: an RFC 8941 List of Strings
    (other members are ignored, and names beyond the first 1024)."""
    names: list[str] = []
    text = value.decode("latin-1")
    i, n = 0, len(text)
    while i < n and len(names) < _MAX_GROUPS:
        while i < n and text[i] in " \t,":
            i += 1
        if i >= n:
            break
        if text[i] != '"':  # not a String: skip the member
            while i < n and text[i] != ",":
                i += 1
            continue
        i += 1
        out: list[str] = []
        while i < n and text[i] != '"':
            if text[i] == "\\" and i + 1 < n:
                i += 1
            out.append(text[i])
            i += 1
        i += 1
        while i < n and text[i] != ",":  # parameters of the member: not used
            i += 1
        if out:
            names.append("".join(out))
    return names


def _targets(headers: Iterable[tuple[bytes, bytes]], scope: Any) -> list[str]:
    """The paths, as the app sees them (percent-decoded, like the ASGI ``path``), of the
    ``Location`` and ``Content-Location`` that point into this app: relative, or on the
    request's host and port (a scheme's default port spelt out or not). Malformed ones are
    left out."""
    host = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"host"), "")
    base = f"{scope.get('scheme', 'http')}://{host or 'request.invalid'}{scope['path']}"
    try:
        origin = _origin(urlsplit(base))
    except ValueError:  # a Host header that is no host[:port]: only relative targets are ours
        origin = None
    paths = []
    for name, value in headers:
        if name not in (b"location", b"content-location"):
            continue
        try:
            target = urlsplit(urljoin(base, value.decode("latin-1").strip()))
            if target.scheme not in ("http", "https") or _origin(target) != origin:
                continue  # another origin's resource: not this cache's to invalidate
        except ValueError:  # not a URL (a bad port, an unclosed IPv6 literal)
            continue
        if target.path:
            paths.append(unquote(target.path))
    return paths


def _origin(url: SplitResult) -> tuple[str, int | None]:
    """The host and port of ``url``, the port None when it is its scheme's default (a TLS
    proxy in front makes ``https://host/`` and the app's ``http://host/`` the same origin)."""
    port = url.port
    if port == _DEFAULT_PORTS.get(url.scheme):
        port = None
    return (url.hostname or "").rstrip("."), port


class UnsafeInvalidation:
    """ASGI middleware: RFC 9111 §4.4 for every route of the app (``cacheframe.install``).

    A 2xx or 3xx answer to POST, PUT, PATCH or DELETE invalidates, before it is sent, the
    cached GET entries of its path and of its ``Location`` and ``Content-Location`` targets
    in the app, and the tags its ``Cache-Group-Invalidation`` header names, in every cache
    the app's decorated routes use. Other requests pass untouched."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._engines: list[Engine] | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in METHODS:
            await self.app(scope, receive, send)
            return

        scope.setdefault(_DONE, set())  # shared with the copy: a decorated route's work counts
        # The request as this app received it: a mounted sub-application rewrites "app" and
        # "root_path" in the scope it shares, and would narrow the search to its own routes.
        request = dict(scope)

        async def send_after_invalidating(message: Any) -> None:
            if message["type"] == "http.response.start" and 200 <= message["status"] < 400:
                await self._invalidate(request, message.get("headers") or [])
            await send(message)

        await self.app(scope, receive, send_after_invalidating)

    async def _invalidate(self, scope: Any, headers: list[tuple[bytes, bytes]]) -> None:
        try:
            await invalidate(scope, _targets(headers, scope))
        except Exception as exc:  # never fail an answered unsafe request
            log.error("cacheframe: invalidating after a %s failed", scope["method"], exc_info=exc)
        names = [name for key, value in headers if key == _GROUPS for name in groups(value)]
        tags = []
        for name in dict.fromkeys(names):
            try:
                tags.append(check_tag(name))
            except ConfigurationError as exc:  # no entry can have this tag: the others still count
                log.warning("cacheframe: ignoring a Cache-Group-Invalidation group: %s", exc)
        if not tags:
            return
        if self._engines is None:
            self._engines = decorated_engines(scope.get("app"))
        for engine in self._engines:
            try:
                await engine.invalidate_tags(tags, soft=False)
            except CacheframeError as exc:
                log.warning("cacheframe: invalidating groups %s failed: %s", tags, exc)
