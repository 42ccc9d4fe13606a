"""Two workers sharing one Redis: throughput with and without the in-process tier, and how
long an invalidation takes to reach both workers under load.

Starts its own redis-server on a free loopback port and two uvicorn processes serving
``apps/tagged.py`` (1 worker each, on two ports, so the driver can ask each one: the
processes ``uvicorn --workers 2`` would run, made addressable), both on one key prefix,
so they share entries and stamps. Then, once without and once with the local tier
(``local_max_entries``; ``local_max_staleness`` is the default unless ``--staleness``):

1. **throughput**: wrk on both workers at once, 100 keys each (``k=0..99``, all warm),
   ``--rounds`` interleaved rounds of ``--duration`` s; the sum of both workers' req/s.
2. **invalidation delay**: the same wrk load runs on both workers while a driver (this
   process, a third process without a local tier) does ``--invalidations`` rounds of:
   write a new version to the "database" (a Redis key the view reads on a miss), call
   ``cache.invalidate_tags("item:0")`` and note when it returned (T), then poll
   ``k=0`` on both workers until each answers the new version (and three more times: an
   old answer after a new one would be counted as a flip). Per round and worker:

   - *last old answer*: when the last request answered with the old version was sent,
     minus T (the request was served after it was sent: this is the earliest time it can
     have been served; the promise is that nothing is served old after
     T + ``local_max_staleness``, so this must stay under the bound);
   - *new everywhere*: when both workers had answered the new version (response read),
     minus T: includes the request's own time in the queue under load.

    python benchmarks/two_workers.py                       # fast path, 200 invalidations
    python benchmarks/two_workers.py --deco --invalidations 500 --json /tmp/two.json

Traffic goes only to 127.0.0.1; every process started here is stopped by its PID.
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import loadgen
from procs import HOST, App, Store, cpu_seconds

import cacheframe

BASE = "/items?n=100"
KEYS = 100
PROBE = f"{BASE}&k=0"
VERSION = re.compile(rb'"name":"item-0-0-v(\d+)"')


def log(message: str) -> None:
    print(f"[two-workers {time.strftime('%H:%M:%S')}] {message}", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--deco", action="store_true", help="decorator path only (default: fast path)")
    parser.add_argument("--local-max-entries", type=int, default=100_000)
    parser.add_argument("--staleness", type=float, help="local_max_staleness (default: the setting's)")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds per setting")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per throughput run")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections per worker")
    parser.add_argument("--invalidations", type=int, default=200, help="invalidation rounds per setting")
    parser.add_argument("--json", type=Path, help="write the raw results here")
    return parser.parse_args(argv)


# -- the two workers ----------------------------------------------------------------------


class Workers:
    """Two app processes on one store and one key prefix."""

    def __init__(self, store: Store, prefix: str, local: int, args: argparse.Namespace, logdir: Path) -> None:
        env = {
            "BENCH_PREFIX": prefix,
            "BENCH_STORE": "redis",
            "BENCH_URL": store.url,
            "BENCH_REDIS_URL": store.url,
            "BENCH_FASTPATH": "0" if args.deco else "1",
            "BENCH_LOCAL_MAX_ENTRIES": str(local),
        }
        if args.staleness is not None:
            env["CACHEFRAME_LOCAL_MAX_STALENESS"] = str(args.staleness)
        self.apps: list[App] = []
        try:
            for i in range(2):
                self.apps.append(App("tagged", env, logdir / f"{prefix}-w{i}.log"))
            for app in self.apps:  # the first request of each key is a miss, the second fills the tier
                for k in range(KEYS):
                    app.get(f"{BASE}&k={k}")
                    app.get(f"{BASE}&k={k}")
                app.reconnect()
        except BaseException:
            self.close()
            raise

    def stats(self) -> list[dict[str, int]]:
        out = [app.json("/cfstats") for app in self.apps]
        for app in self.apps:
            app.reconnect()
        return out

    def close(self) -> None:
        for app in self.apps:
            app.close()


def _wrk_both(
    workers: Workers, duration: float, connections: int, logdir: Path, tag: str
) -> list[dict[str, Any]]:
    """wrk on both workers at once (100 keys each); one result per worker."""
    results: list[dict[str, Any]] = [{}, {}]

    def drive(i: int) -> None:
        raw = logdir / f"wrk-{tag}-w{i}.txt"
        results[i] = loadgen.run_wrk(workers.apps[i].port, BASE, KEYS, duration, connections, raw)

    threads = [threading.Thread(target=drive, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def _share(before: list[dict[str, int]], after: list[dict[str, int]]) -> float | None:
    hits = sum(a["hits"] - b["hits"] for a, b in zip(after, before, strict=True))
    local = sum(a["local_hits"] - b["local_hits"] for a, b in zip(after, before, strict=True))
    return local / hits if hits else None


# -- throughput ---------------------------------------------------------------------------


def throughput(workers: Workers, args: argparse.Namespace, logdir: Path, tag: str) -> dict[str, Any]:
    before = workers.stats()
    cpu0 = [cpu_seconds(app.pid) for app in workers.apps]
    runs = _wrk_both(workers, args.duration, args.connections, logdir, tag)
    cpu1 = [cpu_seconds(app.pid) for app in workers.apps]
    after = workers.stats()
    requests = sum(r["requests"] for r in runs)
    return {
        "rps": sum(r["rps"] or 0 for r in runs),
        "per_worker_rps": [r["rps"] for r in runs],
        "p99_ms": max(r["p99_ms"] or 0 for r in runs),
        "cpu_us_per_req": (sum(cpu1) - sum(cpu0)) / max(1, requests) * 1e6,
        "local_hit_share": _share(before, after),
        "errors": sum(r["non_2xx"] + r["socket_errors"] for r in runs),
    }


# -- invalidation delay ---------------------------------------------------------------------


class Conn:
    """One keep-alive HTTP/1.1 connection to a worker, reading the probe's version."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def version(self) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        assert self.reader is not None
        self.writer.write(f"GET {PROBE} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
        if length is None or head[9:12] != b"200":
            raise RuntimeError(f"unexpected answer: {head[:80]!r}")
        body = await self.reader.readexactly(int(length.group(1)))
        found = VERSION.search(body)
        if found is None:
            raise RuntimeError("no version in the body")
        return int(found.group(1))

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()


async def _poll(conn: Conn, version: int, returned: float) -> dict[str, Any]:
    """Ask one worker until it answers ``version`` (then three more times)."""
    last_old_sent = last_old_read = first_new = None
    flips = after_new = 0
    latencies = []
    deadline = returned + 10.0
    while time.monotonic() < deadline:
        sent = time.monotonic()
        seen = await conn.version()
        read = time.monotonic()
        latencies.append(read - sent)
        if seen < version:
            last_old_sent, last_old_read = sent - returned, read - returned
            if first_new is not None:
                flips += 1
        else:
            if first_new is None:
                first_new = read - returned
            after_new += 1
            if after_new > 3:
                break
    return {
        "last_old_sent": last_old_sent,
        "last_old_read": last_old_read,
        "new": first_new,
        "flips": flips,
        "latencies": latencies,
    }


async def _invalidations(url: str, prefix: str, ports: list[int], rounds: int) -> list[dict[str, Any]]:
    import redis.asyncio as redis

    cache = cacheframe.Cache(url, prefix=prefix, local_max_entries=0, timeout=5.0)
    database = redis.Redis.from_url(url)
    conns = [Conn(port) for port in ports]
    out = []
    try:
        for _ in range(rounds):
            version = int(await database.incr(f"{prefix}:version"))
            await cache.invalidate_tags("item:0")
            returned = time.monotonic()
            polls = await asyncio.gather(*(_poll(c, version, returned) for c in conns))
            out.append({"workers": polls, "new_everywhere": max(p["new"] or 10.0 for p in polls)})
            await asyncio.sleep(random.uniform(0.01, 0.03))
    finally:
        for c in conns:
            await c.close()
        await database.aclose()
        await cache.close()
    return out


def invalidation(
    workers: Workers, store: Store, prefix: str, args: argparse.Namespace, logdir: Path, tag: str
) -> dict[str, Any]:
    """The invalidation rounds, under wrk load on both workers (stopped when they are done)."""
    exe = loadgen.wrk_path()
    assert exe is not None
    loads = []
    with tempfile.TemporaryDirectory(prefix="cf-two-workers-") as tmp:
        script = Path(tmp) / "keys.lua"
        script.write_text(loadgen._LUA.format(base=BASE, keys=KEYS, last=KEYS - 1))
        before = workers.stats()
        started = time.monotonic()
        try:
            for i, app in enumerate(workers.apps):
                argv = [exe, "-t1", f"-c{args.connections}", "-d600s", "--latency", "--timeout", "10s"]
                argv += ["-s", str(script), f"http://{HOST}:{app.port}{BASE}"]
                out = open(logdir / f"wrk-{tag}-inv-w{i}.txt", "w")  # noqa: SIM115 (closed below)
                loads.append((subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT), out))
            time.sleep(1.0)  # the load is on before the first round
            ports = [app.port for app in workers.apps]
            rounds = asyncio.run(_invalidations(store.url, prefix, ports, args.invalidations))
        finally:
            for proc, _ in loads:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGINT)  # wrk prints its summary and exits
            for proc, out in loads:
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
                out.close()
        elapsed = time.monotonic() - started
        after = workers.stats()
    texts = [(logdir / f"wrk-{tag}-inv-w{i}.txt").read_text() for i in range(2)]
    served = sum(loadgen.parse_wrk(t)["requests"] for t in texts)
    return {
        "rounds": rounds,
        "load_rps": served / elapsed,
        "local_hit_share": _share(before, after),
        "stats": after,
    }


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def summarize_delays(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    olds_sent = [w["last_old_sent"] or 0.0 for r in rounds for w in r["workers"]]
    olds_read = [w["last_old_read"] or 0.0 for r in rounds for w in r["workers"]]
    everywhere = [r["new_everywhere"] for r in rounds]
    latencies = [x for r in rounds for w in r["workers"] for x in w["latencies"]]
    return {
        "rounds": len(rounds),
        "old_after_T": sum(1 for r in rounds for w in r["workers"] if w["last_old_sent"] is not None),
        "last_old_sent_ms": {
            "max": max(olds_sent) * 1e3,
            "p99": _pct(olds_sent, 99) * 1e3,
            "p50": _pct(olds_sent, 50) * 1e3,
        },
        "last_old_read_ms": {"max": max(olds_read) * 1e3, "p99": _pct(olds_read, 99) * 1e3},
        "new_everywhere_ms": {
            "max": max(everywhere) * 1e3,
            "p99": _pct(everywhere, 99) * 1e3,
            "p50": statistics.median(everywhere) * 1e3,
        },
        "flips": sum(w["flips"] for r in rounds for w in r["workers"]),
        "poll_ms": {"p50": statistics.median(latencies) * 1e3, "p99": _pct(latencies, 99) * 1e3},
    }


# -- main -----------------------------------------------------------------------------------


def _terminate(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    if loadgen.wrk_path() is None:
        log("wrk is needed (apt-get install wrk)")
        return 2
    run_id = time.strftime("%Y%m%d-%H%M%S")
    logdir = Path(tempfile.mkdtemp(prefix=f"cf-two-workers-{run_id}-"))
    settings = {"off": 0, "l1": args.local_max_entries}
    results: dict[str, Any] = {
        "config": {k: v for k, v in vars(args).items() if k != "json"}
        | {"path": "deco" if args.deco else "fast"},
        "throughput": {name: [] for name in settings},
        "invalidation": {},
    }
    with contextlib.ExitStack() as stack:
        store = Store("redis", logdir)
        stack.callback(store.close)
        log(f"redis on {store.url}; logs in {logdir}")
        for rnd in range(args.rounds):
            for name in list(settings) if rnd % 2 == 0 else list(settings)[::-1]:
                prefix = f"tw{run_id.replace('-', '')}{name}{rnd}"
                workers = Workers(store, prefix, settings[name], args, logdir)
                try:
                    rec = throughput(workers, args, logdir, f"{name}-r{rnd}")
                finally:
                    workers.close()
                results["throughput"][name].append(rec)
                log(
                    f"throughput {name:>3} round {rnd + 1}: {rec['rps']:,.0f} req/s "
                    f"(workers {', '.join(f'{r:,.0f}' for r in rec['per_worker_rps'])}), "
                    f"cpu {rec['cpu_us_per_req']:.0f} µs/req, local share {rec['local_hit_share']}"
                )
        for name, local in settings.items():
            prefix = f"ti{run_id.replace('-', '')}{name}"
            workers = Workers(store, prefix, local, args, logdir)
            try:
                rec = invalidation(workers, store, prefix, args, logdir, name)
            finally:
                workers.close()
            rec["summary"] = summarize_delays(rec["rounds"])
            results["invalidation"][name] = rec
            s = rec["summary"]
            log(
                f"invalidation {name:>3}: {s['rounds']} rounds under {rec['load_rps']:,.0f} req/s; "
                f"last old answer sent T+{s['last_old_sent_ms']['max']:.1f} ms max "
                f"(p99 {s['last_old_sent_ms']['p99']:.1f}), new on both workers by "
                f"T+{s['new_everywhere_ms']['max']:.1f} ms max (p99 {s['new_everywhere_ms']['p99']:.1f}, "
                f"median {s['new_everywhere_ms']['p50']:.1f}); flips {s['flips']}"
            )
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


def report(results: dict[str, Any]) -> str:
    config = results["config"]
    lines = [
        f"Two workers, {config['path']} path, wrk -c{config['connections']} on each, 100 keys:",
        "",
        "| local tier | req/s, both workers (median of rounds) | app CPU µs/req | local-tier share of hits |",
        "|---|--:|--:|--:|",
    ]
    for name, recs in results["throughput"].items():
        if not recs:
            continue
        share = statistics.median([r["local_hit_share"] or 0.0 for r in recs])
        lines.append(
            f"| {name} | {statistics.median(r['rps'] for r in recs):,.0f} "
            f"({min(r['rps'] for r in recs):,.0f}-{max(r['rps'] for r in recs):,.0f}) "
            f"| {statistics.median(r['cpu_us_per_req'] for r in recs):.0f} | {share:.1%} |"
        )
    lines += [
        "",
        "| local tier | rounds | load req/s | last old answer sent after T: max / p99 / median ms "
        "| served new on both workers after T: max / p99 / median ms | old answers sent after T "
        "| flips | one probe request: median / p99 ms | local-tier share |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for name, rec in results["invalidation"].items():
        s = rec["summary"]
        old, new = s["last_old_sent_ms"], s["new_everywhere_ms"]
        share = rec["local_hit_share"]
        lines.append(
            f"| {name} | {s['rounds']} | {rec['load_rps']:,.0f} | {old['max']:.1f} / {old['p99']:.1f} / "
            f"{old['p50']:.1f} | {new['max']:.1f} / {new['p99']:.1f} / {new['p50']:.1f} "
            f"| {s['old_after_T']} | {s['flips']} | {s['poll_ms']['p50']:.1f} / {s['poll_ms']['p99']:.1f} "
            f"| {'—' if share is None else f'{share:.1%}'} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
