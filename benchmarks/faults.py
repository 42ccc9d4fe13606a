"""Fault run: request latency while the store is paused, and time until caching resumes.

Starts its own redis-server (or memcached) on a free port and the app under
uvicorn, drives it with a Python load generator over real HTTP, then:
1. steady state (hits), 2. store SIGSTOPped, 3. store SIGCONTed — and reports
p50/p99 per phase plus the seconds from SIGCONT until the first HIT.

    python benchmarks/faults.py --store redis --seconds 5 --concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx
from procs import child_environ

APP = textwrap.dedent(
    """
    import asyncio, os
    from fastapi import FastAPI
    import cacheframe

    cacheframe.configure(url=os.environ["BENCH_URL"], prefix="faultbench")
    app = FastAPI()

    @app.get("/work")
    @cacheframe.cache(ttl=300)
    async def work(k: int = 0) -> dict[str, int]:
        await asyncio.sleep(0.005)  # the view's own time: a fast database call
        return {"k": k}
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} never opened")


def start_store(kind: str, workdir: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    if kind == "redis":
        argv = [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        url = f"redis://127.0.0.1:{port}/0"
    else:
        argv = [shutil.which("memcached") or "memcached", "-l", "127.0.0.1", "-p", str(port), "-U", "0"]
        argv += ["-u", "nobody"] if os.geteuid() == 0 else []
        url = f"memcached://127.0.0.1:{port}"
    proc = subprocess.Popen(argv, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return proc, url


async def phase(client: httpx.AsyncClient, seconds: float, concurrency: int, keys: int) -> dict[str, object]:
    latencies: list[float] = []
    labels: dict[str, int] = {}
    errors = 0
    stop = time.monotonic() + seconds

    async def worker(offset: int) -> None:
        nonlocal errors
        i = offset
        while time.monotonic() < stop:
            start = time.perf_counter()
            try:
                response = await client.get(f"/work?k={i % keys}")
            except httpx.HTTPError:
                errors += 1
                continue
            latencies.append(time.perf_counter() - start)
            if response.status_code != 200:
                errors += 1
            label = response.headers.get("x-cache", "?")
            labels[label] = labels.get(label, 0) + 1
            i += concurrency

    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return {
        "requests": len(latencies),
        "p50_ms": q[49] * 1e3,
        "p99_ms": q[98] * 1e3,
        "labels": labels,
        "errors": errors,
    }


async def until_hit(client: httpx.AsyncClient, limit: float = 30.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < limit:
        response = await client.get("/work?k=0")
        if response.headers.get("x-cache") == "HIT":
            return time.monotonic() - start
        await asyncio.sleep(0.01)
    return float("nan")


async def drive(
    base: str, store: subprocess.Popen[bytes], args: argparse.Namespace
) -> list[tuple[str, object]]:
    limits = httpx.Limits(max_connections=args.concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:
        for k in range(args.keys):  # warm every key
            await client.get(f"/work?k={k}")
        rows: list[tuple[str, object]] = [
            ("steady (store up)", await phase(client, args.seconds, args.concurrency, args.keys))
        ]
        store.send_signal(signal.SIGSTOP)
        rows.append(
            ("store paused (SIGSTOP)", await phase(client, args.seconds, args.concurrency, args.keys))
        )
        store.send_signal(signal.SIGCONT)
        rows.append(("seconds from SIGCONT to first HIT", await until_hit(client)))
        rows.append(("after resume", await phase(client, args.seconds, args.concurrency, args.keys)))
        return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--store", choices=["redis", "memcached"], default="redis")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--keys", type=int, default=100)
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="cf-faultbench-")
    store, url = start_store(args.store, workdir)
    app_file = Path(workdir) / "faultapp.py"
    app_file.write_text(APP)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "faultapp:app", "--port", str(port), "--log-level", "warning"],
        cwd=workdir,
        env=child_environ(BENCH_URL=url),
    )
    try:
        wait_port(port)
        rows = asyncio.run(drive(f"http://127.0.0.1:{port}", store, args))
    finally:
        server.terminate()
        server.wait(10)
        store.send_signal(signal.SIGCONT)
        store.kill()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"fault run: {args.store}, {args.concurrency} clients, {args.keys} keys, {args.seconds}s per phase")
    print("| phase | requests | p50 ms | p99 ms | X-Cache | errors |")
    print("|---|---|---|---|---|---|")
    for name, value in rows:
        if isinstance(value, dict):
            print(
                f"| {name} | {value['requests']} | {value['p50_ms']:.2f} | {value['p99_ms']:.2f} "
                f"| {value['labels']} | {value['errors']} |"
            )
        else:
            print(f"| {name} | {value:.2f} s | | | | |")


if __name__ == "__main__":
    main()
