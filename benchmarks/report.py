"""Render a benchmark run (``results.json``) as Markdown and a PNG chart.

python benchmarks/report.py .benchmarks/runs/<id>/results.json --out docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

MODES = {
    "hot": "Hot key: every request asks for `/items?n=100&k=0`",
    "multikey": "100 distinct keys: a wrk Lua script cycles `k=0..99` (all warmed first)",
}
TIMES, DASH = "\u00d7", "\u2013"  # the multiplication sign and an en dash, for the tables
LIBRARY_COLOURS = {
    "baseline": "#9e9e9e",
    "cacheframe": "#1f77b4",
    "cacheframe + local tier": "#17becf",
    "fastapi-cache2": "#ff7f0e",
    "cashews": "#2ca02c",
}


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def _med(summary: dict[str, Any], key: str) -> float | None:
    stats = summary.get(key)
    return stats["median"] if stats else None


def _rps_cell(summary: dict[str, Any]) -> str:
    stats = summary["rps"]
    if not stats:
        return "—"
    if summary["rounds"] > 1:
        return f"**{stats['median']:,.0f}** ({stats['min']:,.0f}{DASH}{stats['max']:,.0f})"
    return f"**{stats['median']:,.0f}**"


def _ratio(summary: dict[str, Any], name: str) -> str:
    stats = summary["ratios"].get(name)
    return f"{stats['median']:.2f}" if stats else "—"


def throughput_tables(results: dict[str, Any]) -> str:
    tp = results.get("throughput")
    if not tp:
        return "_No throughput phase in this run._\n"
    config = results["config"]
    out = []
    for mode, title in MODES.items():
        summaries = tp["summary"].get(mode)
        if not summaries:
            continue
        out += [f"### {title}", ""]
        out += [
            f"| setup | req/s median (min{DASH}max) | {TIMES} floor | {TIMES} ceiling | {TIMES} memory "
            "| CPU/req ÷ memory's "
            f"| {TIMES} no cache | {TIMES} fastapi-cache2 | {TIMES} cashews | p50 ms | p99 ms "
            "| app CPU µs/req | store ops/req | store CPU µs/req | view runs |",
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for sid, s in summaries.items():
            label = results["setups"][sid]["label"]
            cmds = _med(s, "store_cmds_per_req")
            out.append(
                f"| `{sid}` {label} | {_rps_cell(s)} | {_ratio(s, 'floor')} | {_ratio(s, 'ceiling')} "
                f"| {_ratio(s, 'memory')} | {_ratio(s, 'memory_cpu')} | {_ratio(s, 'nocache')} "
                f"| {_ratio(s, 'fastapi-cache2')} | {_ratio(s, 'cashews')} | {_num(_med(s, 'p50_ms'), 2)} "
                f"| {_num(_med(s, 'p99_ms'), 2)} | {_num(_med(s, 'cpu_us_per_req'))} | {_num(cmds, 2)} "
                f"| {_num(_med(s, 'store_cpu_us_per_req'))} | {s['view_runs']} |"
            )
        out.append("")
    rounds, duration, conns = config["rounds"], config["duration_s"], config["connections"]
    out.append(
        f"Medians of {rounds} interleaved round(s) of {duration:g} s at {conns} connections; ratios are "
        f"taken within each round, then the median. {TIMES} ceiling compares a decorator-path setup with "
        "the best an in-handler cache can do on its store: `ceiling` for memory, the store-read ceiling "
        f"(one backend read, nothing else) for Redis and Memcached. {TIMES} memory compares a cacheframe "
        "setup on a network store with the same path (decorator or fast) on the memory backend; the "
        "`-l1` setups put the in-process tier (`local_max_entries`, default `local_max_staleness`) in "
        "front of Redis, so their hits read no store. `CPU/req ÷ memory's` divides the app CPU per "
        "request by that of the same path on memory (within a round, then the median): it moves less "
        f"than req/s when other work shares the machine. {TIMES} fastapi-cache2 and "
        f"{TIMES} cashews compare "
        "with that peer on the same store. `view runs` counts view bodies run during the load (0: every "
        "request was a hit). Store ops and store CPU are per request over the whole load run; store ops "
        "are Redis commands, or memcached keys read and written (`cmd_get` + `cmd_set` + ...: a multi-key "
        "`gets` counts each key; the per-hit table below counts commands)."
    )
    return "\n".join(out) + "\n"


def checks_table(results: dict[str, Any]) -> str:
    tp = results.get("throughput") or {}
    checks = tp.get("checks", {})
    if not checks:
        return ""
    out = [
        "| setup | body bytes | same bytes as floor | cache header (1st, 2nd request) "
        "| fast-path share of hits (hot / multikey) | local-tier share of hits (hot / multikey) "
        "| errors (non-2xx + socket) |",
        "|---|--:|:-:|---|---|---|--:|",
    ]
    summary = tp.get("summary", {})
    for sid, c in checks.items():
        shares, local, errors = [], [], 0
        for mode in MODES:
            s = summary.get(mode, {}).get(sid)
            if s:
                errors += s["errors"]
                share = _med(s, "fast_hit_share")
                shares.append("—" if share is None else f"{share:.0%}")
                share = _med(s, "local_hit_share")
                local.append("—" if share is None else f"{share:.0%}")
        x_cache = ", ".join(v or "—" for v in c["x_cache"])
        out.append(
            f"| `{sid}` | {c['body_bytes']:,} | {'yes' if c['same_bytes_as_floor'] else 'no'} | {x_cache} "
            f"| {' / '.join(shares) or '—'} | {' / '.join(local) or '—'} | {errors} |"
        )
    return "\n".join(out) + "\n"


def stores_table(results: dict[str, Any]) -> str:
    stores = results.get("stores")
    if not stores:
        return "_No store-command phase in this run._\n"
    out = [
        "| setup | store | commands for one miss | commands per hit | per hit, by command "
        "| memcached keys per hit |",
        "|---|---|---|--:|---|---|",
    ]
    for sid, r in stores.items():
        if "error" in r:
            out.append(f"| `{sid}` | | failed: {r['error']} | | | |")
            continue
        miss = ", ".join(f"{k.upper()} {v}" for k, v in r["miss"].items()).replace("|", " ") or "none"
        per_hit = ", ".join(f"{k.upper()} {v:g}" for k, v in r["per_hit"].items()).replace("|", " ") or "none"
        keys = ", ".join(f"{k} {v:g}" for k, v in r.get("per_hit_keys", {}).items()) or "—"
        out.append(
            f"| `{sid}` | {r['store']} | {r['miss_total']} ({miss}) | **{r['per_hit_total']:.2f}** "
            f"| {per_hit} | {keys} |"
        )
    hits = next((r["hits"] for r in stores.values() if "hits" in r), 0)
    out += [
        "",
        f"One miss, then {hits} sequential hits on one keep-alive connection. Redis: `INFO commandstats` "
        "deltas (the snapshot's own `INFO` left out). Memcached: commands counted in the log of a "
        "memcached started with `-vv` (one line per command), because its `stats` counters count keys: "
        "`cmd_get` grows once per key of a multi-key `gets`.",
    ]
    return "\n".join(out) + "\n"


def latency_table(results: dict[str, Any]) -> str:
    lat = results.get("latency")
    if not lat:
        return "_No latency phase in this run._\n"
    rows = lat["setups"]
    base = rows.get("nocache", {}).get("miss_us")
    writes = lat.get("store_write_us", {})
    stores = results.get("setups", {})
    out = [
        "| setup | miss µs | uncached + one write µs | miss minus uncached µs | hit µs | 304 µs "
        "| 304 ≤ hit | miss / hit / 304 app CPU µs |",
        "|---|--:|--:|--:|--:|--:|:-:|---|",
    ]
    for sid, r in rows.items():
        if "error" in r:
            out.append(f"| `{sid}` | failed: {r['error']} | | | | | | |")
            continue
        store = stores.get(sid, {}).get("store")
        write = writes.get(store, 0.0) if store in ("redis", "memcached") else 0.0
        bound = base + write if base is not None and sid != "nocache" else None
        extra = r["miss_us"] - base if base is not None and sid != "nocache" else None
        hit, nm = r.get("hit_us"), r.get("not_modified_us")
        ok = "—" if hit is None or nm is None else ("yes" if nm <= hit * 1.05 else "**no**")
        cpu = " / ".join(_num(r.get(k)) for k in ("miss_cpu_us", "hit_cpu_us", "not_modified_cpu_us"))
        out.append(
            f"| `{sid}` | **{_num(r['miss_us'])}** | {_num(bound)} | {_num(extra)} | {_num(hit)} "
            f"| {_num(nm)} | {ok} | {cpu} |"
        )
    n = results["config"].get("latency_requests", "")
    written = ", ".join(f"{k} {v:.0f} µs" for k, v in writes.items()) or "none"
    out += [
        "",
        f"Medians of {n} sequential requests on one keep-alive connection: misses on fresh keys (the "
        "view already measured, so a cheap view takes no store lock), then hits and `If-None-Match` "
        "304s on one warm key. `uncached + one write` is the `nocache` setup's request plus one store "
        f"write of an entry this size, timed through cacheframe's backend in the benchmark process "
        f"({written}; memory: 0). A network store's miss also pays the lookup that found nothing: one "
        "more round trip, about a hit's extra latency over memory. App CPU from `/proc` (10 ms ticks).",
    ]
    return "\n".join(out) + "\n"


def memory_table(results: dict[str, Any]) -> str:
    mem = results.get("memory")
    if not mem:
        return "_No memory phase in this run._\n"
    if "error" in mem:
        return f"Memory run failed: {mem['error']}\n"
    out = [
        "| keys written | entries held | RSS MiB | seconds |",
        "|--:|--:|--:|--:|",
    ]
    for row in mem["rows"]:
        out.append(
            f"| {row['keys_written']:,} | {row['entries']:,} | {row['rss_mib']:.1f} | {row['seconds']:.1f} |"
        )
    out += [
        "",
        f'`cacheframe.Cache(url="memory://?max_entries={mem["max_entries"]}")`, KV API '
        f"(`await cache.set(key, value)`), {mem['keys']:,} distinct keys, values of ~{mem['value_bytes']} "
        f"bytes of JSON, one process; RSS after `gc.collect()`. Growth from the first checkpoint at the "
        f"bound to the last: **{mem['growth_after_bound_mib']:+.1f} MiB** "
        f"({_num(mem.get('writes_per_second'))} writes/s).",
    ]
    return "\n".join(out) + "\n"


def micro_table(results: dict[str, Any]) -> str:
    micro = results.get("micro")
    if not micro:
        return "_No micro-benchmark phase in this run._\n"
    if "error" in micro:
        return f"Micro-benchmarks failed: {micro['error']}\n"
    out = ["| group | benchmark | median µs | ops/s (from mean) | rounds |", "|---|---|--:|--:|--:|"]
    for b in micro["benchmarks"]:
        out.append(
            f"| {b['group']} | `{b['name']}` | {b['median_us']:.2f} | {b['ops']:,.0f} | {b['rounds']:,} |"
        )
    if micro.get("exit_code"):
        out += ["", f"pytest exited with {micro['exit_code']}: some micro-benchmarks failed."]
    return "\n".join(out) + "\n"


def environment_section(results: dict[str, Any]) -> str:
    env = results.get("environment") or {}
    pk = env.get("packages", {})
    versions = ", ".join(f"{k} {v}" for k, v in pk.items() if v) or "—"
    absent = ", ".join(k for k, v in pk.items() if not v)
    servers = ", ".join(env.get("servers", {}).values()) or "—"
    lines = [
        f"- Date: {env.get('date')}; run `{results['run_id']}`; cacheframe commit {env.get('commit')}",
        f"- CPU: {env.get('cpu')}, {env.get('cores')} cores ({env.get('usable_cores')} usable); "
        f"Linux {env.get('kernel')}" + _load(env),
        f"- Python {env.get('python')}; {versions}" + (f" (not installed: {absent})" if absent else ""),
        f"- Stores: {servers} (started by the benchmark on free loopback ports)",
        f"- Load generator: {env.get('loadgen')}",
    ]
    return "\n".join(lines) + "\n"


def _load(env: dict[str, Any]) -> str:
    """The machine's load average (1, 5, 15 min) at the start and end of the run, when known:
    other work on the machine lowers every figure and widens the spread."""
    start, end = env.get("load_at_start"), env.get("load_at_end")
    if not start:
        return ""
    text = "; load average (1/5/15 min) " + "/".join(f"{x:g}" for x in start) + " at the start"
    if end:
        text += ", " + "/".join(f"{x:g}" for x in end) + " at the end"
    return text


def skipped_section(results: dict[str, Any]) -> str:
    lines = [f"- `{sid}`: {reason}" for sid, reason in results.get("skipped", {}).items()]
    failures = (results.get("throughput") or {}).get("failures", {})
    lines += [f"- `{sid}`: failed: {reason}" for sid, reason in failures.items()]
    return "\n".join(lines) + "\n" if lines else "None.\n"


def _library(setup: dict[str, Any]) -> str:
    """The chart's colour group: the library, with cacheframe's two-tier setups apart."""
    return "cacheframe + local tier" if setup.get("local") else str(setup["library"])


def chart(results: dict[str, Any], png: Path) -> bool:
    """Requests per second and app CPU per request, per setup and mode; ``False`` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    summary = (results.get("throughput") or {}).get("summary") or {}
    modes = [m for m in MODES if m in summary]
    if not modes:
        return False
    sids = [sid for sid in results["setups"] if any(sid in summary[m] for m in modes)]
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.42 * len(sids) * len(modes) + 1.8), sharey=True)
    height = 0.8 / len(modes)
    hatches = ["", "//"]
    for panel, (key, title) in enumerate(
        (("rps", "requests per second (median)"), ("cpu_us_per_req", "app CPU µs per request (median)"))
    ):
        ax = axes[panel]
        for i, mode in enumerate(modes):
            for j, sid in enumerate(sids):
                s = summary[mode].get(sid)
                value = _med(s, key) if s else None
                if value is None:
                    continue
                colour = LIBRARY_COLOURS.get(_library(results["setups"][sid]), "#555555")
                y = j + (i - (len(modes) - 1) / 2) * height
                ax.barh(y, value, height=height * 0.95, color=colour, hatch=hatches[i % 2], edgecolor="white")
                ax.text(value, y, f" {value:,.0f}", va="center", fontsize=7)
        floor = summary[modes[0]].get("floor")
        if floor and key == "rps" and _med(floor, key):
            ax.axvline(_med(floor, key), color="#555555", linestyle="--", linewidth=0.8)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        ax.set_xlim(0, ax.get_xlim()[1] * 1.12)
    axes[0].set_yticks(range(len(sids)), sids, fontsize=8)
    axes[0].invert_yaxis()
    from matplotlib.patches import Patch

    legend = [Patch(facecolor=c, label=lib) for lib, c in LIBRARY_COLOURS.items()]
    legend += [
        Patch(facecolor="white", edgecolor="black", hatch=hatches[i % 2], label=m)
        for i, m in enumerate(modes)
    ]
    fig.legend(handles=legend, fontsize=8, loc="lower center", ncol=len(legend), frameon=False)
    config = results["config"]
    fig.suptitle(
        f"/items?n=100 ({config['payload_bytes']:,} B JSON), uvicorn 1 worker, "
        f"{config['connections']} connections, {config['loadgen']}; solid: hot key, hatched: 100 keys",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0.035, 1, 1))
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return True


def render(results: dict[str, Any], png_name: str | None) -> str:
    config = results["config"]
    quick = " (quick smoke run: 1 short round, not for comparison)" if results.get("quick") else ""
    parts = [
        "# Benchmarks",
        "",
        f"<!-- Generated by `nox -s bench` (benchmarks/run.py, run {results['run_id']}); "
        "edit benchmarks/report.py, not this file. -->",
        "",
        f"Measured on the machine below{quick}. Compare ratios, not absolute numbers: they depend on the "
        "machine. Reproduce with `nox -s bench` (see `benchmarks/README.md`).",
        "",
        "## Method",
        "",
        f"- One view, `GET /items?n=100&k=K`, returning 100 pydantic items (`id: int, name: str, price: "
        f"float, tags: list[str], created: datetime`) through `response_model=list[Item]`: "
        f"{config['payload_bytes']:,} bytes of JSON for every setup.",
        "- Each setup runs in its own uvicorn process (1 worker, uvloop, httptools, access log off), "
        "started afresh each round with an empty key prefix; redis-server and memcached are the "
        "benchmark's own, on free loopback ports.",
        f"- Load: `wrk -t1 -c{config['connections']} -d{config['duration_s']:g}s --latency`, or a Python "
        "asyncio keep-alive client when wrk is absent. Two modes: one hot key, and "
        f"{config['keys']} distinct keys cycled by a Lua script so in-flight merging cannot hide the "
        "store's cost. Every key is warmed before the run, so a cached setup serves only hits.",
        f"- {config['rounds']} interleaved round(s): every setup once per round, the order rotating "
        "between rounds; medians reported.",
        "- **floor**: the same bytes as a constant pre-encoded `Response` from a view without parameters. "
        "**ceiling**: a view with the cached view's parameters (`n: int, k: int`) returning the constant "
        "bytes: the best any in-handler cache can do. **store-read ceiling** (Redis, Memcached): the same "
        "view returning bytes it reads with one `backend.get` through cacheframe's backend, the store "
        "call a decorator hit makes, and nothing else. **no cache**: build and serialise every time.",
        "- cacheframe **fast path**: `fastpath.install(app)`, hits answered by ASGI middleware before "
        "routing; **decorator path**: `@cacheframe.cache(ttl=60)` alone; `-l1`: either one on Redis with "
        "the in-process tier on (`local_max_entries=100_000`, `local_max_staleness` 0.1 s), hits "
        "answered from this process's copies while the invalidation channel's lease holds. "
        "Peers: fastapi-cache2 "
        '`@cache(expire=60)` (InMemoryBackend / RedisBackend), cashews `@cache(ttl="60s")` '
        "(`mem://` / `redis://`), set up as their READMEs show.",
        "- App CPU µs/request: `utime + stime` of the uvicorn process from `/proc/<pid>/stat` around the "
        "load run, divided by the requests served (the store's CPU the same way).",
        "- Garbage collector: "
        + (
            "`gc.freeze()` at startup in every app (`--gc-freeze`)."
            if config.get("gc_freeze")
            else "Python's defaults, untuned (see the note under the tables)."
        ),
        "",
        "## Throughput and latency",
        "",
    ]
    if png_name:
        parts += [f"![requests per second and CPU per request]({png_name})", ""]
    parts += [
        throughput_tables(results),
        "### What each setup answered",
        "",
        checks_table(results) or "—\n",
        "## One miss, one hit, one 304 (sequential latency)",
        "",
        latency_table(results),
        "## Store commands per hit",
        "",
        stores_table(results),
        "## Memory: bounded in-memory backend",
        "",
        memory_table(results),
        "## Micro-benchmarks (pytest-benchmark)",
        "",
        micro_table(results),
        "## Setups skipped or failed",
        "",
        skipped_section(results),
        "## Machine and versions",
        "",
        environment_section(results),
    ]
    return "\n".join(parts)


def write(results: dict[str, Any], md: Path) -> None:
    """Write the Markdown report and, beside it, ``<name>.png``."""
    md.parent.mkdir(parents=True, exist_ok=True)
    png = md.with_suffix(".png")
    has_chart = chart(results, png)
    md.write_text(render(results, png.name if has_chart else None))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("results", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    args = parser.parse_args()
    write(json.loads(args.results.read_text()), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
