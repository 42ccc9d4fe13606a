"""The cacheframe command: demo, backends, ping, stats, clear, invalidate, get."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from . import envelope
from ._engine import Engine
from .cache import Cache
from .exceptions import CacheframeError, ConfigurationError
from .registry import BACKENDS_GROUP, SERIALIZERS_GROUP, available
from .settings import CacheSettings
from .startup import redact
from .types import Backend, SupportsStats, SupportsTTL

__all__ = ["main"]


@dataclass(frozen=True)
class _Store:
    """What the commands need of a cache: its backend, settings and key layout."""

    backend: Backend
    settings: CacheSettings
    engine: Engine

    @classmethod
    def of(cls, engine: Engine) -> _Store:
        return cls(engine.gateway.backend, engine.settings, engine)

    @property
    def in_process(self) -> bool:
        return self.engine.gateway.in_process

    def __repr__(self) -> str:
        return self.engine.gateway.name

    async def close(self) -> None:
        await self.backend.close()


def _cache(args: argparse.Namespace) -> _Store:
    made = Cache(args.url) if args.url else Cache()
    return _Store.of(made._engine)  # the package's own façade: its engine is ours to use


def cmd_demo(args: argparse.Namespace) -> int:
    """Serve the demo app with uvicorn and print what to try."""
    try:
        import uvicorn
    except ImportError:
        print("the demo needs uvicorn: pip install 'cacheframe[demo]'", file=sys.stderr)
        return 2
    base = f"http://{args.host}:{args.port}"
    print(
        f"cacheframe demo on {base} (backend: in-memory unless CACHEFRAME_URL is set)\n"
        f"  curl -si '{base}/slow?n=2' | grep -iE 'x-cache|etag|age|cache-control'   # MISS, ~1 s\n"
        f"  curl -si '{base}/slow?n=2' | grep -iE 'x-cache|etag|age|cache-control'   # HIT, instant\n"
        f"  curl -si -H 'If-None-Match: <etag from above>' '{base}/slow?n=2' | head -1  # 304\n"
        f"  curl -si -H 'Cache-Control: no-cache' '{base}/slow?n=2' | grep -i x-cache  # forced refresh\n"
        f"  docs: {base}/docs",
        flush=True,
    )
    uvicorn.run("cacheframe.demo:app", host=args.host, port=args.port, log_level="warning")
    return 0


def cmd_backends(args: argparse.Namespace) -> int:
    """List installed backends and serialisers with their distributions."""
    for title, group in (("backends", BACKENDS_GROUP), ("serializers", SERIALIZERS_GROUP)):
        print(f"{title}:")
        for name, plugin in sorted(available(group).items()):
            print(f"  {name:<16} {plugin.target:<52} ({plugin.distribution})")
    return 0


async def _ping(cache: _Store) -> float:
    key = cache.engine.key("cli", "ping")
    start = time.perf_counter()
    await cache.backend.set(key, b"pong", 10)
    value = await cache.backend.get(key)
    elapsed = time.perf_counter() - start
    if value != b"pong":
        raise CacheframeError(f"wrote b'pong' but read back {value!r}")
    await cache.backend.delete(key)
    return elapsed


def cmd_ping(args: argparse.Namespace) -> int:
    """Round trip to the configured backend; non-zero exit when unreachable."""
    cache = _cache(args)
    try:
        elapsed = asyncio.run(_with_close(cache, _ping(cache)))
    except (CacheframeError, OSError) as exc:
        print(f"cacheframe: {cache!r} unreachable: {exc}", file=sys.stderr)
        return 1
    print(f"ok {cache!r}: set+get in {elapsed * 1000:.2f} ms")
    return 0


# Figures some backends count in the process that runs them, not in the server: in this
# command they are its own zeros, never the app's, so they are left out of "server".
_CLIENT_COUNTERS: dict[str, tuple[str, ...]] = {"memcached": ("hits", "misses", "oversized")}
_APP_COUNTERS_NOTE = (
    "the app's own counters (hits, misses, bypasses, errors) live in each app process: "
    "read Cache.stats (or get_cache().stats) there"
)


def _in_process(cache: _Store, action: str) -> bool:
    """Say so, and return True, when the store lives inside each app process (memory://)."""
    if not cache.in_process:
        return False
    print(
        f"cacheframe: {redact(cache.settings.url)} keeps entries in the memory of each running app "
        f"process; this command is a separate process and cannot {action} it. "
        "Use a shared store (redis://, memcached://), or call the cache from inside the app.",
        file=sys.stderr,
    )
    return True


def cmd_stats(args: argparse.Namespace) -> int:
    """Print the store server's own statistics as JSON (not this command's counters)."""
    cache = _cache(args)
    if _in_process(cache, "see the statistics of"):
        return 1
    if not isinstance(cache.backend, SupportsStats):
        print(f"cacheframe: {type(cache.backend).__name__} reports no statistics", file=sys.stderr)
        return 1
    try:
        stats = dict(asyncio.run(_with_close(cache, cache.backend.stats())))
    except CacheframeError as exc:
        print(f"cacheframe: {exc}", file=sys.stderr)
        return 1
    name = str(stats.get("backend", ""))
    server = {k: v for k, v in stats.items() if k not in _CLIENT_COUNTERS.get(name, ())}
    print(json.dumps({"url": redact(cache.settings.url), "server": server}, indent=2, default=str))
    print(f"cacheframe: {_APP_COUNTERS_NOTE}", file=sys.stderr)
    return 0


def cmd_clear(args: argparse.Namespace) -> int:
    """Remove the entries of one namespace, or of the whole prefix."""
    cache = _cache(args)
    if _in_process(cache, "clear"):
        return 1
    try:
        asyncio.run(_with_close(cache, cache.backend.clear(cache.engine.namespace_key(args.namespace))))
    except CacheframeError as exc:
        print(f"cacheframe: {exc}", file=sys.stderr)
        return 1
    print(f"cleared {cache.engine.namespace_key(args.namespace)}*")
    return 0


def cmd_invalidate(args: argparse.Namespace) -> int:
    """Invalidate by tag (hard, or --soft) or by namespace, in every process sharing the store."""
    if not args.tag and args.namespace is None:
        print("cacheframe: invalidate needs --tag TAG (repeatable) or --namespace NS", file=sys.stderr)
        return 2
    made = Cache(args.url) if args.url else Cache()
    engine = made._engine  # the package's own façade: its engine is ours to use
    store = _Store.of(engine)
    if _in_process(store, "invalidate"):
        return 1

    async def run() -> None:
        if args.tag:
            await made.invalidate_tags(*args.tag, soft=args.soft)
        if args.namespace is not None:
            stamp = engine.stamps.namespace(engine.namespace_key(args.namespace))
            await engine.invalidate([stamp], args.namespace)

    try:
        asyncio.run(_with_close(store, run()))
    except CacheframeError as exc:
        print(f"cacheframe: {exc}", file=sys.stderr)
        return 1
    what = [f"tag {tag!r}" for tag in args.tag] + (
        [f"namespace {args.namespace!r}"] if args.namespace else []
    )
    print(f"invalidated {', '.join(what)}{' (soft: served stale while refreshed)' if args.soft else ''}")
    return 0


async def _inspect(cache: _Store, key: str) -> dict[str, Any] | None:
    raw = await cache.backend.get(key)
    if raw is None:
        return None
    info: dict[str, Any] = {"key": key, "size": len(raw)}
    if isinstance(cache.backend, SupportsTTL):
        info["store_ttl_left"] = await cache.backend.ttl(key)
    try:
        entry = envelope.decode(raw)
    except CacheframeError as exc:
        info["damaged"] = str(exc)
        return info
    info.update(created=entry.created, ttl=entry.ttl, age=round(entry.age(), 3))
    if isinstance(entry, envelope.ResponseEntry):
        info.update(
            status=entry.status,
            etag=entry.etag.decode("latin-1"),
            headers={k.decode("latin-1"): v.decode("latin-1") for k, v in entry.headers},
            body_bytes=len(entry.body),
        )
        info["body"] = entry.body
    else:
        info.update(serializer=entry.serializer, payload_bytes=len(entry.payload))
        info["body"] = entry.payload
    return info


def _load_app(ref: str) -> Any:
    """The ASGI app named by ``module:attribute``, imported as uvicorn does (from the cwd)."""
    module_name, _, attribute = ref.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(f"--app takes module:attribute (like main:app), got {ref!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"--app {ref}: cannot import {module_name!r}: {exc}") from exc
    app = getattr(module, attribute, None)
    if app is None:
        raise ConfigurationError(f"--app {ref}: module {module_name!r} has no attribute {attribute!r}")
    return app


def _route_for(app: Any, scope: dict[str, Any]) -> Any:
    """The endpoint route that answers ``scope``, descending into mounted apps as Starlette does;
    ``scope`` is updated as routing would update it (path params, ``root_path`` of a mount)."""
    from starlette.routing import Match

    routes: Sequence[Any] = getattr(app, "routes", None) or ()
    for route in routes:
        match, child = route.matches(scope)
        if match != Match.FULL:
            continue
        scope.update(child)
        if hasattr(route, "endpoint"):
            return route
        mounted = getattr(route, "app", None)
        return None if mounted is None else _route_for(mounted, scope)
    return None


def _request_key(args: argparse.Namespace) -> tuple[_Store, str]:
    """The cache and store key a GET to ``args.key`` on ``args.app`` is answered from.

    The key is computed by ``keys.view_key``, the function the decorator itself uses.
    """
    from starlette.requests import Request

    from . import default, keys
    from .decorator import Decorator
    from .routes import route_info

    if args.url:  # the default cache that @cacheframe.cache uses, before the app binds to it
        default.configure(args.url)
    app = _load_app(args.app)
    target = urlsplit(args.key)
    headers = [(b"host", args.host.encode("latin-1"))]
    for header in args.header:
        name, sep, value = header.partition(":")
        if not sep:
            raise ConfigurationError(f"--header takes 'Name: value', got {header!r}")
        headers.append((name.strip().lower().encode("latin-1"), value.strip().encode("latin-1")))
    # An ASGI server run with --root-path R puts R before the path (uvicorn does); FastAPI's
    # own root_path then replaces scope["root_path"], as FastAPI.__call__ does per request.
    root = args.root_path.rstrip("/")
    path = root + (target.path or "/")
    scope: dict[str, Any] = {
        "type": "http",
        "method": args.method.upper(),
        "scheme": "http",
        "root_path": getattr(app, "root_path", "") or root,
        "path": path,
        "raw_path": path.encode(),
        "query_string": target.query.encode("latin-1"),
        "headers": headers,
        "app": app,
    }
    route = _route_for(app, scope)
    if route is None:
        raise ConfigurationError(f"no route of {args.app} answers {args.method.upper()} {target.path}")
    decorator = getattr(route.endpoint, "__cacheframe__", None)
    func = getattr(route.endpoint, "__wrapped__", None)
    if not isinstance(decorator, Decorator) or func is None:
        raise ConfigurationError(f"the route {route.path} of {args.app} is not cached by cacheframe")
    policy = decorator.policy
    if policy.key_builder is not None:
        raise ConfigurationError(
            f"the route {route.path} builds its keys with key_builder: look the entry up by its raw key"
        )
    binding = decorator.bind(func)
    info = route_info(route)
    request = Request(scope)
    key = keys.view_key(
        binding.namespace,
        scope,
        args.host,
        headers=request.headers if policy.vary or info.header_names or policy.private else None,
        cookies=request.cookies if info.cookie_names else {},
        vary=policy.vary_lower,
        header_params=info.header_names,
        cookie_params=info.cookie_names,
        private=policy.private,
    )
    return _Store.of(binding.engine), binding.engine.stamps.place(key)


def cmd_get(args: argparse.Namespace) -> int:
    """Inspect one entry (size, ttl left, headers), or print its body with --body."""
    if args.app:
        cache, key = _request_key(args)
    else:
        cache = _cache(args)
        key = cache.engine.key(args.namespace, args.key) if args.namespace else args.key
    if _in_process(cache, "read"):
        return 1
    try:
        info = asyncio.run(_with_close(cache, _inspect(cache, key)))
    except CacheframeError as exc:
        print(f"cacheframe: {exc}", file=sys.stderr)
        return 1
    if info is None:
        print(f"cacheframe: no entry under {key!r}", file=sys.stderr)
        return 1
    body = info.pop("body", b"")
    if args.body:
        sys.stdout.buffer.write(body)
        sys.stdout.flush()
        return 0
    print(json.dumps(info, indent=2, default=str))
    return 0


async def _with_close(cache: _Store, coro: Any) -> Any:
    try:
        return await coro
    finally:
        await cache.close()


def _parser() -> argparse.ArgumentParser:
    # --url is accepted before or after the subcommand; given after, it wins.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url", default=argparse.SUPPRESS, help="backend URL (default: CACHEFRAME_URL, else memory://)"
    )
    parser = argparse.ArgumentParser(prog="cacheframe", description=__doc__)
    parser.add_argument("--url", default=None, help="backend URL (default: CACHEFRAME_URL, else memory://)")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", parents=[common], help="serve the demo app")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    demo.set_defaults(func=cmd_demo)
    sub.add_parser("backends", parents=[common], help="list installed backends and serializers").set_defaults(
        func=cmd_backends
    )
    sub.add_parser("ping", parents=[common], help="round trip to the backend").set_defaults(func=cmd_ping)
    sub.add_parser(
        "stats", parents=[common], help="the store server's own statistics (not the app's counters)"
    ).set_defaults(func=cmd_stats)
    clear = sub.add_parser("clear", parents=[common], help="remove entries from a shared store")
    clear.add_argument("--namespace", default=None, help="only this namespace")
    clear.set_defaults(func=cmd_clear)
    invalidate = sub.add_parser(
        "invalidate", parents=[common], help="invalidate entries by tag or namespace in a shared store"
    )
    invalidate.add_argument("--tag", action="append", default=[], help="a tag (repeatable)")
    invalidate.add_argument("--soft", action="store_true", help="mark stale (served while refreshed)")
    invalidate.add_argument("--namespace", default=None, help="every entry of this namespace")
    invalidate.set_defaults(func=cmd_invalidate)
    get = sub.add_parser(
        "get",
        parents=[common],
        help="inspect an entry",
        description="Inspect one entry by its store key, by a name in a namespace, or by the "
        "request it answers (--app main:app /items/3).",
    )
    get.add_argument("key", help="the full store key; a name with --namespace; a request path with --app")
    get.add_argument("--namespace", default=None, help="treat KEY as a name in this namespace")
    get.add_argument("--app", default=None, help="module:attribute of the FastAPI app; KEY is then a path")
    get.add_argument(
        "--host", default="127.0.0.1:8000", help="with --app: the request's Host header (part of the key)"
    )
    get.add_argument(
        "--root-path", default="", help="with --app: the ASGI server's --root-path, if it is run with one"
    )
    get.add_argument("--method", default="GET", choices=["GET", "HEAD"], help="with --app: the method")
    get.add_argument(
        "--header",
        action="append",
        default=[],
        help="with --app: a request header 'Name: value' (repeatable), for vary or private routes",
    )
    get.add_argument("--body", action="store_true", help="print the stored body instead of the summary")
    get.set_defaults(func=cmd_get)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cacheframe`` console script."""
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args))
    except CacheframeError as exc:
        print(f"cacheframe: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
