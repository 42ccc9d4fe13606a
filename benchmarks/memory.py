"""RSS of a process writing 1,000,000 distinct keys into the bounded in-memory backend.

Writes through ``cacheframe.Cache(url="memory://?max_entries=N")``'s KV API (the
same envelope, serialiser and backend a view uses) and reports the process RSS
and the entry count at checkpoints. Once the bound is reached, LRU eviction
should keep both flat.

    python benchmarks/memory.py --keys 1000000 --max-entries 100000 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import time
from pathlib import Path
from typing import Any

import cacheframe


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def checkpoints(keys: int, bound: int) -> list[int]:
    marks = {0, bound, keys, *(m for m in (100_000, 250_000, 500_000, 750_000) if m < keys)}
    return sorted(m for m in marks if m <= keys)


async def fill(keys: int, bound: int, value_bytes: int) -> dict[str, Any]:
    cache = cacheframe.Cache(url=f"memory://?max_entries={bound}", prefix="rss")
    filler = "x" * max(0, value_bytes - 40)
    rows = []
    marks = checkpoints(keys, bound)
    written = 0
    started = time.perf_counter()
    for mark in marks:
        while written < mark:
            await cache.set(
                f"key-{written}", {"id": written, "name": f"item-{written}", "pad": filler}, ttl=3600
            )
            written += 1
        gc.collect()
        rows.append(
            {
                "keys_written": written,
                "entries": len(cache.backend),  # type: ignore[arg-type]
                "rss_mib": rss_kib() / 1024,
                "seconds": time.perf_counter() - started,
            }
        )
        print(
            f"  {written:>9,} keys: {rows[-1]['entries']:>7,} entries, RSS {rows[-1]['rss_mib']:.1f} MiB",
            flush=True,
        )
    first_full = next((r for r in rows if r["keys_written"] >= bound), rows[-1])
    stored = await cache.get(f"key-{keys - 1}") if keys else None
    await cache.close()
    return {
        "keys": keys,
        "max_entries": bound,
        "value_bytes": len(json.dumps({"id": keys, "name": f"item-{keys}", "pad": filler})),
        "rows": rows,
        "growth_after_bound_mib": rows[-1]["rss_mib"] - first_full["rss_mib"],
        "last_key_readable": stored is not None,
        "writes_per_second": keys / rows[-1]["seconds"] if rows[-1]["seconds"] else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--max-entries", type=int, default=100_000)
    parser.add_argument("--value-bytes", type=int, default=200, help="approximate JSON size of each value")
    parser.add_argument("--json", type=Path, help="write the result here")
    args = parser.parse_args()
    result = asyncio.run(fill(args.keys, args.max_entries, args.value_bytes))
    print(f"RSS growth after the bound was reached: {result['growth_after_bound_mib']:+.1f} MiB")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
