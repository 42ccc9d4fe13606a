"""Client CPU of one cached hit, in-process: repeatable where the HTTP run is noisy.

Drives ``apps/cacheframe_app.py`` through ASGI calls in one event loop (uvloop), no
HTTP server and no load generator: every key warmed, then ``--hits`` sequential hits.
Without ``--callgrind`` it prints CPU µs per hit (``time.process_time``, the store's
round trip not included). With ``--callgrind`` it runs the loop twice under
``valgrind --tool=callgrind`` (``--hits`` and twice as many, same hash seed) and prints
the difference of their instruction counts per hit: start-up cancels out, and the
count barely moves between runs on a busy machine (compare two commits with it)::

    python benchmarks/hitcost.py --store redis --fastpath --keys 100 --callgrind

The store is the benchmark's own (``procs.Store``) on a free loopback port. Entries
live for an hour here (the app's 60 s would lapse during a run under valgrind), and
the store timeout is 5 s for the same reason.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent


def _scope(k: int) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/items",
        "raw_path": b"/items",
        "root_path": "",
        "query_string": f"n=100&k={k}".encode(),
        "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk"), (b"accept", b"*/*")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }


async def _hits(hits: int, keys: int) -> float:
    """Warm ``keys`` keys, then ``hits`` hits cycling over them; CPU seconds of the hits."""
    sys.path.insert(0, str(BENCH_DIR))
    import apps.common

    apps.common.TTL = 3600
    from apps.cacheframe_app import app

    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    lifespan = asyncio.ensure_future(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, inbox.get, outbox.put)
    )
    await inbox.put({"type": "lifespan.startup"})
    assert (await outbox.get())["type"] == "lifespan.startup.complete"
    scopes = [_scope(k) for k in range(keys)]
    for scope in scopes:
        await app({**scope, "state": {}}, receive, send)
    statuses.clear()
    runs = apps.common._Runs.count
    started = time.process_time()
    for i in range(hits):
        await app({**scopes[i % keys], "state": {}}, receive, send)
    spent = time.process_time() - started
    if statuses != [200] * hits or apps.common._Runs.count != runs:
        raise SystemExit(
            f"not all hits: statuses {set(statuses)}, {apps.common._Runs.count - runs} view runs"
        )
    await inbox.put({"type": "lifespan.shutdown"})
    await outbox.get()
    await lifespan
    return spent


def _child(args: argparse.Namespace) -> None:
    import uvloop

    spent = uvloop.run(_hits(args.hits, args.keys))
    print(f"{spent / args.hits * 1e6:.1f} µs CPU per hit ({args.hits} hits, {args.keys} keys)")


def _instructions(argv: list[str], env: dict[str, str], outdir: str, hits: int) -> int:
    out = os.path.join(outdir, f"callgrind.{hits}")
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *argv, "--hits", str(hits)]
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    match = re.search(r"^(?:summary|totals): (\d+)", Path(out).read_text(), re.M)
    assert match is not None, out
    return int(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--store", choices=["memory", "redis", "memcached"], default="redis")
    parser.add_argument("--fastpath", action="store_true", help="install the ASGI fast path")
    parser.add_argument("--keys", type=int, default=1, help="distinct keys cycled (1: one hot key)")
    parser.add_argument("--hits", type=int, default=2000)
    parser.add_argument("--callgrind", action="store_true", help="instructions per hit under callgrind")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    sys.path.insert(0, str(BENCH_DIR))
    from procs import Store

    logdir = Path(tempfile.mkdtemp(prefix="cf-hitcost-"))
    store = None if args.store == "memory" else Store(args.store, logdir)
    try:
        url = "memory://" if store is None else store.url + ("&" if "?" in store.url else "?") + "timeout=5"
        env = {**os.environ, "BENCH_URL": url, "BENCH_FASTPATH": "1" if args.fastpath else "0"}
        env["BENCH_PREFIX"], env["PYTHONHASHSEED"] = f"hc{os.getpid()}", "0"
        argv = [sys.executable, __file__, "--child", "--keys", str(args.keys)]
        what = f"{args.store}, {'fast path' if args.fastpath else 'decorator'}, {args.keys} key(s)"
        if not args.callgrind:
            subprocess.run([*argv, "--hits", str(args.hits)], env=env, check=True)
            return
        if shutil.which("valgrind") is None:
            raise SystemExit("--callgrind needs valgrind")
        once = _instructions(argv, env, str(logdir), args.hits)
        env["BENCH_PREFIX"] += "b"
        twice = _instructions(argv, env, str(logdir), 2 * args.hits)
        print(f"{what}: {(twice - once) / args.hits:,.0f} instructions per hit")
    finally:
        if store is not None:
            store.close()
        shutil.rmtree(logdir, ignore_errors=True)


if __name__ == "__main__":
    main()
