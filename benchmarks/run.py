"""HTTP benchmarks of cacheframe against a floor, a ceiling, no cache and peer libraries.

Starts its own redis-server and memcached on free loopback ports, serves each
setup with uvicorn (1 worker, uvloop + httptools) and drives it with wrk (or a
Python load generator when wrk is absent) in interleaved rounds: one hot key and
100 distinct keys. Then counts store commands per hit, measures the bounded
in-memory backend's RSS over 1,000,000 keys, runs the micro-benchmarks, and
writes docs/benchmarks.md with a PNG chart.

    python benchmarks/run.py                 # everything (~13 min on 2 cores)
    python benchmarks/run.py --quick         # smoke test (~1.5 min), written under .benchmarks/
    python benchmarks/run.py --setups floor,cf-fast-memory --modes hot --rounds 5
    python benchmarks/run.py --list
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import latency
import loadgen
import report
from apps.common import PAYLOAD
from procs import App, Store, command_breakdown, command_delta, cpu_seconds, rss_kib, total_commands
from setups import BY_ID, CEILINGS, PEERS, QUICK, SETUPS, Setup, missing_reason

ROOT = Path(__file__).resolve().parent.parent
BASE_PATH = "/items?n=100"
PACKAGES = (
    "cacheframe",
    "fastapi",
    "starlette",
    "pydantic",
    "uvicorn",
    "uvloop",
    "httptools",
    "orjson",
    "redis",
    "aiomcache",
    "cachetools",
    "fastapi-cache2",
    "cashews",
    "matplotlib",
    "pytest-benchmark",
)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="1 round, 3 s runs, fewer setups, small memory run"
    )
    parser.add_argument("--setups", help="comma-separated setup ids (see --list); default all")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3; quick 1)")
    parser.add_argument("--duration", type=float, help="seconds per load run (default 8; quick 3)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--keys", type=int, default=100, help="distinct keys in the multikey mode")
    parser.add_argument("--modes", default="hot,multikey", help="hot (one key), multikey (--keys keys)")
    parser.add_argument("--phases", default="throughput,latency,stores,memory,micro")
    parser.add_argument(
        "--gc-freeze", action="store_true", help="gc.freeze() in every app at startup (all setups alike)"
    )
    parser.add_argument("--latency-requests", type=int, default=500, help="sequential requests per figure")
    parser.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--hits", type=int, default=200, help="sequential hits in the store-command count")
    parser.add_argument("--memory-keys", type=int, help="keys written in the RSS run (default 1,000,000)")
    parser.add_argument("--memory-bound", type=int, help="max_entries of the RSS run (default 100,000)")
    parser.add_argument(
        "--out", type=Path, help="Markdown report (default docs/benchmarks.md; quick: .benchmarks/)"
    )
    parser.add_argument("--results", type=Path, help="raw results and logs (default .benchmarks/runs/<id>)")
    parser.add_argument("--list", action="store_true", help="list the setups and exit")
    args = parser.parse_args(argv)
    quick = args.quick
    args.rounds = args.rounds or (1 if quick else 3)
    args.duration = args.duration or (3.0 if quick else 8.0)
    args.memory_keys = args.memory_keys or (250_000 if quick else 1_000_000)
    args.memory_bound = args.memory_bound or 100_000
    args.run_id = time.strftime("%Y%m%d-%H%M%S") + ("-quick" if quick else "")
    args.results = args.results or ROOT / ".benchmarks" / "runs" / args.run_id
    args.out = args.out or (
        ROOT / ".benchmarks" / "quick" / "benchmarks.md" if quick else ROOT / "docs" / "benchmarks.md"
    )
    wanted = args.setups.split(",") if args.setups else (QUICK if quick else [s.id for s in SETUPS])
    unknown = [w for w in wanted if w not in BY_ID]
    if unknown:
        parser.error(f"unknown setup(s) {unknown}; known: {', '.join(BY_ID)}")
    args.setup_list = [BY_ID[w] for w in wanted]
    args.mode_list = [m.strip() for m in args.modes.split(",") if m.strip()]
    if set(args.mode_list) - {"hot", "multikey"}:
        parser.error("--modes takes hot and/or multikey")
    args.phase_list = [p.strip() for p in args.phases.split(",") if p.strip()]
    if args.gc_freeze:
        os.environ["BENCH_GC_FREEZE"] = "1"  # the app processes inherit it
    if args.loadgen == "auto":
        args.loadgen = "wrk" if loadgen.wrk_path() else "python"
    return args


# -- environment -------------------------------------------------------------------------


def environment(stores: dict[str, Store], tool: str) -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    servers = {kind: store.version() for kind, store in stores.items()}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    dirty = subprocess.run(["git", "status", "--porcelain", "src"], capture_output=True, text=True, cwd=ROOT)
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "load_at_start": [round(x, 2) for x in os.getloadavg()],
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": versions,
        "servers": servers,
        "loadgen": loadgen.wrk_version()
        if tool == "wrk"
        else "Python asyncio keep-alive load generator"
        + (" (wrk not found)" if loadgen.wrk_path() is None else ""),
        "commit": (commit.stdout.strip() + (" + uncommitted src changes" if dirty.stdout.strip() else ""))
        or None,
    }


# -- throughput ----------------------------------------------------------------------------


def _snapshot(app: App, setup: Setup, store: Store | None) -> dict[str, Any]:
    snap: dict[str, Any] = {"cpu": cpu_seconds(app.pid), "runs": app.json("/runs")["runs"]}
    if setup.library == "cacheframe":
        snap["cf"] = app.json("/cfstats")
    if store is not None:
        snap["store_cpu"] = cpu_seconds(store.pid)
        snap["cmds"] = store.command_counts()
    return snap


def _check(app: App, setup: Setup) -> dict[str, Any]:
    """First request (a miss for a cache) and second (a hit): status, bytes, cache header."""
    status1, headers1, _ = app.get(f"{BASE_PATH}&k=0")
    status2, headers2, body = app.get(f"{BASE_PATH}&k=0")
    return {
        "status": [status1, status2],
        "body_bytes": len(body),
        "same_bytes_as_floor": body == PAYLOAD,
        "body_sha1": hashlib.sha1(body).hexdigest()[:12],
        "x_cache": [_cache_header(headers1), _cache_header(headers2)],
    }


def _cache_header(headers: dict[str, str]) -> str | None:
    """cacheframe's ``X-Cache``, or fastapi-cache2's ``X-FastAPI-Cache`` (cashews sends none)."""
    if "x-cache" in headers:
        return headers["x-cache"]
    if "x-fastapi-cache" in headers:
        return f"X-FastAPI-Cache: {headers['x-fastapi-cache']}"
    return None


def measure(
    app: App, setup: Setup, store: Store | None, mode: str, args: argparse.Namespace
) -> dict[str, Any]:
    keys = args.keys if mode == "multikey" else 1
    for k in range(keys):  # warm every key the run asks for: the run itself measures hits
        app.get(f"{BASE_PATH}&k={k}")
    app.reconnect()  # uvicorn closes idle keep-alive connections: the snapshots use a new one
    before = _snapshot(app, setup, store)
    raw_log = args.results / "logs" / f"{setup.id}-{mode}-r{args.current_round}.txt"
    result = loadgen.run(args.loadgen, app.port, BASE_PATH, keys, args.duration, args.connections, raw_log)
    after = _snapshot(app, setup, store)
    requests = max(1, result["requests"])
    result["cpu_us_per_req"] = (after["cpu"] - before["cpu"]) / requests * 1e6
    result["view_runs"] = after["runs"] - before["runs"]
    result["rss_kib"] = rss_kib(app.pid)
    if "cf" in before:
        hits = after["cf"]["hits"] - before["cf"]["hits"]
        result["fast_hit_share"] = (
            (after["cf"]["fast_hits"] - before["cf"]["fast_hits"]) / hits if hits else None
        )
        result["local_hit_share"] = (
            (after["cf"]["local_hits"] - before["cf"]["local_hits"]) / hits if hits else None
        )
    if store is not None:
        delta = command_delta(store.kind, before["cmds"], after["cmds"])
        result["store_cpu_us_per_req"] = (after["store_cpu"] - before["store_cpu"]) / requests * 1e6
        result["store_cmds_per_req"] = total_commands(store.kind, delta) / requests
        result["store_cmds"] = {
            k: round(v / requests, 3) for k, v in command_breakdown(store.kind, delta).items()
        }
    return result


def start_app(args: argparse.Namespace, setup: Setup, store: Store | None, run: str) -> App:
    """The setup's app on a key prefix of its own (``run`` names this start in prefix and log)."""
    prefix = f"{run}{args.run_id}{setup.id}".replace("-", "")
    log_path = args.results / "logs" / f"{setup.id}-{run}.log"
    return App(setup.module, setup.env(store.url if store else None, prefix), log_path)


def phase_throughput(
    args: argparse.Namespace, setups: list[Setup], stores: dict[str, Store]
) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    checks: dict[str, Any] = {}
    failures: dict[str, str] = {}
    for rnd in range(args.rounds):
        args.current_round = rnd
        shift = (rnd * len(setups)) // args.rounds  # the order rotates so no setup is always first
        order = setups[shift:] + setups[:shift]
        modes = args.mode_list if rnd % 2 == 0 else args.mode_list[::-1]
        for setup in order:
            if setup.id in failures:
                continue
            store = stores.get(setup.store)
            try:
                app = start_app(args, setup, store, f"b-r{rnd}")
            except (RuntimeError, OSError) as exc:
                failures[setup.id] = f"server did not start: {exc}"
                log(f"{setup.id}: {failures[setup.id]}")
                continue
            try:
                checks.setdefault(setup.id, _check(app, setup))
                for mode in modes:
                    rec = measure(app, setup, store, mode, args)
                    rec.update(setup=setup.id, mode=mode, round=rnd)
                    runs.append(rec)
                    extra = (
                        f" store={rec['store_cmds_per_req']:.2f} cmd/req"
                        if "store_cmds_per_req" in rec
                        else ""
                    )
                    log(
                        f"round {rnd + 1}/{args.rounds} {mode:>8} {setup.id:<18} "
                        f"{rec['rps'] or 0:>8.0f} req/s "
                        f"p99={rec['p99_ms'] or 0:.1f} ms cpu={rec['cpu_us_per_req']:.0f} µs/req "
                        f"view_runs={rec['view_runs']}{extra}"
                    )
            except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as exc:
                failures[setup.id] = f"{type(exc).__name__}: {exc}"
                log(f"{setup.id}: failed: {failures[setup.id]}")
            finally:
                app.close()
    return {"runs": runs, "checks": checks, "failures": failures, "summary": summarize(runs, setups)}


def _stats(values: list[float | None]) -> dict[str, float] | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}


def summarize(runs: list[dict[str, Any]], setups: list[Setup]) -> dict[str, dict[str, Any]]:
    """Per mode and setup: medians over rounds; ratios taken within each round, then the median."""
    by = {(r["mode"], r["setup"], r["round"]): r for r in runs}
    out: dict[str, dict[str, Any]] = {}
    for mode in sorted({r["mode"] for r in runs}):
        out[mode] = {}
        for setup in setups:
            recs = [r for r in runs if r["mode"] == mode and r["setup"] == setup.id]
            if not recs:
                continue
            summary: dict[str, Any] = {
                key: _stats([r.get(key) for r in recs])
                for key in (
                    "rps",
                    "p50_ms",
                    "p99_ms",
                    "cpu_us_per_req",
                    "store_cpu_us_per_req",
                    "store_cmds_per_req",
                    "fast_hit_share",
                    "local_hit_share",
                    "rss_kib",
                )
            }
            summary["rounds"] = len(recs)
            summary["view_runs"] = sum(r["view_runs"] for r in recs)
            summary["errors"] = sum(r["non_2xx"] + r["socket_errors"] for r in recs)
            summary["store_cmds"] = recs[-1].get("store_cmds")
            refs = {"floor": "floor", "nocache": "nocache"}
            if setup.library == "cacheframe" and not setup.fastpath and setup.store in CEILINGS:
                refs["ceiling"] = CEILINGS[setup.store]
            if setup.library == "cacheframe" and setup.store != "memory":  # the same path on memory
                refs["memory"] = f"cf-{'fast' if setup.fastpath else 'deco'}-memory"
            if setup.library not in PEERS and setup.store in ("memory", "redis"):
                refs |= {
                    peer: f"{'fc2' if peer == 'fastapi-cache2' else peer}-{setup.store}" for peer in PEERS
                }
            ratios = {}
            for name, ref in refs.items():
                per_round = []
                for r in recs:
                    other = by.get((mode, ref, r["round"]))
                    if other and other.get("rps") and r.get("rps"):
                        per_round.append(r["rps"] / other["rps"])
                ratios[name] = _stats(per_round)
            if "memory" in refs:  # CPU per request over the same path's on memory: steadier when busy
                per_round = []
                for r in recs:
                    other = by.get((mode, refs["memory"], r["round"]))
                    if other and other.get("cpu_us_per_req") and r.get("cpu_us_per_req"):
                        per_round.append(r["cpu_us_per_req"] / other["cpu_us_per_req"])
                ratios["memory_cpu"] = _stats(per_round)
            summary["ratios"] = ratios
            out[mode][setup.id] = summary
    return out


# -- store commands per hit ------------------------------------------------------------------


def phase_latency(args: argparse.Namespace, setups: list[Setup], stores: dict[str, Store]) -> dict[str, Any]:
    """Sequential miss / hit / 304 latency per setup (interleaved rounds), one store write per store."""
    out: dict[str, Any] = {"setups": {}, "store_write_us": {}}
    n, rounds = args.latency_requests, 5
    for kind, store in stores.items():
        out["store_write_us"][kind] = latency.store_write_us(store.url, len(PAYLOAD) + 200, n)
    with contextlib.ExitStack() as stack:
        probes: dict[str, latency.Probe] = {}
        for setup in setups:
            if not (setup.cached or setup.id == "nocache"):
                continue
            try:
                app = start_app(args, setup, stores.get(setup.store), "latency")
            except (RuntimeError, OSError) as exc:
                out["setups"][setup.id] = {"error": str(exc)}
                continue
            stack.callback(app.close)
            probes[setup.id] = latency.Probe(app, setup.cached)
        for _ in range(rounds):
            for sid, probe in list(probes.items()):
                try:
                    probe.round(max(1, n // rounds))
                except (RuntimeError, OSError) as exc:
                    out["setups"][sid] = {"error": str(exc)}
                    del probes[sid]
        for sid, probe in probes.items():
            out["setups"][sid] = probe.result()
            log(f"latency {sid}: " + " ".join(f"{k}={v:.0f}" for k, v in out["setups"][sid].items()))
    return out


def _commands(store: Store) -> tuple[dict[str, int], dict[str, int]]:
    """(commands by name, memcached's key counters) served so far."""
    if store.kind == "redis":
        return store.command_counts(), {}
    return dict(store.logged_commands()), store.command_counts()


def phase_stores(args: argparse.Namespace, setups: list[Setup], stores: dict[str, Store]) -> dict[str, Any]:
    """Commands a miss and each of ``--hits`` sequential hits send to the store.

    Redis: ``INFO commandstats``. Memcached's ``stats`` count keys (a multi-key
    ``gets`` counts once per key), so commands are counted in the log of a
    second memcached started with ``-vv``, which logs one line per command.
    """
    out: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        counting: dict[str, Store] = {}
        for setup in setups:
            if not setup.cached or setup.store not in stores:
                continue
            store = counting.get(setup.store)
            if store is None:
                store = stores[setup.store]
                if setup.store == "memcached":
                    store = Store("memcached", args.results / "logs", verbose=True)
                    stack.callback(store.close)
                counting[setup.store] = store
            prefix = f"s{args.run_id}-{setup.id}".replace("-", "")
            log_path = args.results / "logs" / f"{setup.id}-stores.log"
            try:
                app = App(setup.module, setup.env(store.url, prefix), log_path)
            except (RuntimeError, OSError) as exc:
                out[setup.id] = {"error": str(exc)}
                continue
            try:
                out[setup.id] = _count_commands(app, store, args.hits)
                log(f"stores {setup.id}: miss {out[setup.id]['miss']} per hit {out[setup.id]['per_hit']}")
            except (RuntimeError, OSError) as exc:
                out[setup.id] = {"error": str(exc)}
            finally:
                app.close()
    return out


def _count_commands(app: App, store: Store, hits: int) -> dict[str, Any]:
    app.get(f"{BASE_PATH}&k=6")  # opens the app's store connections: not part of a miss
    app.get(f"{BASE_PATH}&k=6")
    path = f"{BASE_PATH}&k=7"
    c0, _ = _commands(store)
    app.get(path)
    c1, k1 = _commands(store)
    for _ in range(hits):
        app.get(path)
    c2, k2 = _commands(store)
    miss, hit = command_delta("redis", c0, c1), command_delta("redis", c1, c2)  # "info" left out
    rec: dict[str, Any] = {
        "store": store.kind,
        "hits": hits,
        "miss_total": sum(miss.values()),
        "miss": miss,
        "per_hit_total": sum(hit.values()) / hits,
        "per_hit": {k: round(v / hits, 3) for k, v in hit.items()},
    }
    if store.kind == "memcached":
        keys_hit = command_breakdown("memcached", command_delta("memcached", k1, k2))
        rec["per_hit_keys"] = {k: round(v / hits, 3) for k, v in keys_hit.items()}
    return rec


# -- memory and micro (child processes) --------------------------------------------------------


def phase_memory(args: argparse.Namespace) -> dict[str, Any]:
    path = args.results / "memory.json"
    argv = [
        sys.executable,
        str(ROOT / "benchmarks" / "memory.py"),
        "--keys",
        str(args.memory_keys),
        "--max-entries",
        str(args.memory_bound),
        "--json",
        str(path),
    ]
    log(f"memory: {args.memory_keys:,} keys into memory://?max_entries={args.memory_bound}")
    done = subprocess.run(argv, timeout=1800, cwd=ROOT)
    if done.returncode != 0:
        return {"error": f"memory.py exited with {done.returncode}"}
    result: dict[str, Any] = json.loads(path.read_text())
    return result


def phase_micro(args: argparse.Namespace) -> dict[str, Any]:
    path = args.results / "micro.json"
    micro = ROOT / "benchmarks" / "micro"
    argv = [
        sys.executable,
        "-m",
        "pytest",
        "-c",
        str(micro / "pytest.ini"),
        str(micro),
        "-q",
        f"--benchmark-json={path}",
        "--benchmark-columns=min,median,mean,ops,rounds",
        f"--benchmark-max-time={0.1 if args.quick else 1.0}",
    ]
    log("micro-benchmarks (pytest-benchmark)")
    done = subprocess.run(argv, timeout=900, cwd=ROOT)
    if not path.exists():
        return {"error": f"pytest exited with {done.returncode} and wrote no results"}
    data = json.loads(path.read_text())
    benches = [
        {
            "name": b["name"],
            "group": b.get("group"),
            "median_us": b["stats"]["median"] * 1e6,
            "mean_us": b["stats"]["mean"] * 1e6,
            "ops": b["stats"]["ops"],
            "rounds": b["stats"]["rounds"],
        }
        for b in data.get("benchmarks", [])
    ]
    return {"benchmarks": benches, "exit_code": done.returncode}


# -- main ----------------------------------------------------------------------------------


def _terminate(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through every finally: our processes are stopped


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for s in SETUPS:
            print(f"{s.id:<18} {s.label}{'  [quick]' if s.id in QUICK else ''}")
        return 0
    signal.signal(signal.SIGTERM, _terminate)
    (args.results / "logs").mkdir(parents=True, exist_ok=True)
    skipped = {s.id: reason for s in args.setup_list if (reason := missing_reason(s))}
    for sid, reason in skipped.items():
        log(f"skipping {sid}: {reason}")
    setups = [s for s in args.setup_list if s.id not in skipped]
    results: dict[str, Any] = {
        "run_id": args.run_id,
        "quick": args.quick,
        "config": {
            "rounds": args.rounds,
            "duration_s": args.duration,
            "connections": args.connections,
            "keys": args.keys,
            "modes": args.mode_list,
            "loadgen": args.loadgen,
            "hits": args.hits,
            "latency_requests": args.latency_requests,
            "gc_freeze": args.gc_freeze,
            "path": BASE_PATH,
            "payload_bytes": len(PAYLOAD),
        },
        "setups": {
            s.id: {
                "label": s.label,
                "store": s.store,
                "library": s.library,
                "cached": s.cached,
                "local": s.local,
            }
            for s in args.setup_list
        },
        "skipped": skipped,
    }
    needed = {s.store for s in setups} & {"redis", "memcached"}
    with contextlib.ExitStack() as stack:
        stores: dict[str, Store] = {}
        for kind in sorted(needed):
            store = Store(kind, args.results / "logs")
            stack.callback(store.close)
            stores[kind] = store
            log(f"started {kind} on 127.0.0.1:{store.port} (pid {store.pid})")
        results["environment"] = environment(stores, args.loadgen)
        log(
            f"{len(setups)} setups, {args.rounds} round(s) x {args.mode_list} x {args.duration:g} s, "
            f"{args.connections} connections, load generator: {args.loadgen}"
        )
        if "throughput" in args.phase_list:
            results["throughput"] = phase_throughput(args, setups, stores)
            _save(args, results)
        if "latency" in args.phase_list:
            results["latency"] = phase_latency(args, setups, stores)
            _save(args, results)
        if "stores" in args.phase_list:
            results["stores"] = phase_stores(args, setups, stores)
            _save(args, results)
    if "memory" in args.phase_list:
        results["memory"] = phase_memory(args)
        _save(args, results)
    if "micro" in args.phase_list:
        results["micro"] = phase_micro(args)
        _save(args, results)
    results.setdefault("environment", {})["load_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report.write(results, args.out)
    log(f"wrote {args.out} (raw results: {args.results / 'results.json'})")
    print(report.throughput_tables(results))
    return 0


def _save(args: argparse.Namespace, results: dict[str, Any]) -> None:
    (args.results / "results.json").write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    sys.exit(main())
