"""The ``cacheframe`` command: demo, backends, ping, stats, clear, get."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from . import envelope
from .cache import Cache
from .exceptions import CacheframeError
from .registry import BACKENDS_GROUP, SERIALIZERS_GROUP, available
from .types import SupportsStats, SupportsTTL

__all__ = ["main"]


def _cache(args: argparse.Namespace) -> Cache:
    return Cache(args.url) if args.url else Cache()


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


async def _ping(cache: Cache) -> float:
    key = cache.key("cli", "ping")
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


def cmd_stats(args: argparse.Namespace) -> int:
    """Print the backend's statistics as JSON."""
    cache = _cache(args)
    if not isinstance(cache.backend, SupportsStats):
        print(f"cacheframe: {type(cache.backend).__name__} reports no statistics", file=sys.stderr)
        return 1
    try:
        stats = asyncio.run(_with_close(cache, cache.backend.stats()))
    except CacheframeError as exc:
        print(f"cacheframe: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(dict(stats), indent=2, default=str))
    return 0


def cmd_clear(args: argparse.Namespace) -> int:
    """Remove the entries of one namespace, or of the whole prefix."""
    cache = _cache(args)
    try:
        asyncio.run(_with_close(cache, cache.backend.clear(cache.namespace_key(args.namespace))))
    except CacheframeError as exc:
        print(f"cacheframe: {exc}", file=sys.stderr)
        return 1
    print(f"cleared {cache.namespace_key(args.namespace)}*")
    return 0


async def _inspect(cache: Cache, key: str) -> dict[str, Any] | None:
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
    else:
        info.update(serializer=entry.serializer, payload_bytes=len(entry.payload))
    return info


def cmd_get(args: argparse.Namespace) -> int:
    """Inspect one entry: size, ttl left, headers."""
    cache = _cache(args)
    key = cache.key(args.namespace, args.key) if args.namespace else args.key
    try:
        info = asyncio.run(_with_close(cache, _inspect(cache, key)))
    except CacheframeError as exc:
        print(f"cacheframe: {exc}", file=sys.stderr)
        return 1
    if info is None:
        print(f"no entry under {key!r}", file=sys.stderr)
        return 1
    print(json.dumps(info, indent=2, default=str))
    return 0


async def _with_close(cache: Cache, coro: Any) -> Any:
    try:
        return await coro
    finally:
        await cache.close()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cacheframe", description=__doc__)
    parser.add_argument("--url", help="backend URL (default: CACHEFRAME_URL or memory://)")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="serve the demo app")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    demo.set_defaults(func=cmd_demo)
    sub.add_parser("backends", help="list installed backends and serializers").set_defaults(func=cmd_backends)
    sub.add_parser("ping", help="round trip to the backend").set_defaults(func=cmd_ping)
    sub.add_parser("stats", help="backend statistics").set_defaults(func=cmd_stats)
    clear = sub.add_parser("clear", help="remove entries")
    clear.add_argument("--namespace", default=None, help="only this namespace")
    clear.set_defaults(func=cmd_clear)
    get = sub.add_parser("get", help="inspect an entry")
    get.add_argument("key", help="the full store key, or a name with --namespace")
    get.add_argument("--namespace", default=None, help="treat KEY as a name in this namespace")
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
