"""Load generators: wrk (when installed) or a small asyncio HTTP/1.1 keep-alive client.

Both send ``GET <path>`` on ``connections`` keep-alive connections for ``duration``
seconds and report requests, req/s, p50/p99 latency and non-2xx answers. With
``keys`` > 1 the query's ``k`` cycles through ``0..keys-1`` across all
connections (a wrk Lua script does the same), so concurrent requests rarely share
a key and in-flight merging cannot hide the per-hit cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"

_LUA = """-- cycle k = 0..{last} across every connection of the thread
local counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", "{base}&k=" .. (counter % {keys}))
end
"""


def wrk_path() -> str | None:
    return shutil.which("wrk")


def wrk_version() -> str | None:
    exe = wrk_path()
    if exe is None:
        return None
    out = subprocess.run([exe, "-v"], capture_output=True, text=True, timeout=10)
    line = (out.stdout or out.stderr).splitlines()[0] if (out.stdout or out.stderr) else ""
    return line.split(" Copyright")[0].strip()


def run(
    tool: str, port: int, base: str, keys: int, duration: float, connections: int, raw_log: Path | None = None
) -> dict[str, Any]:
    """Drive ``http://127.0.0.1:port<base>`` (``base`` holds ``n``; ``k`` is added)."""
    if tool == "wrk":
        return run_wrk(port, base, keys, duration, connections, raw_log)
    return run_python(port, base, keys, duration, connections)


# -- wrk ---------------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}


def _to_ms(token: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", token)
    if not m:
        raise ValueError(f"unexpected wrk latency {token!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(text: str) -> dict[str, Any]:
    """Requests, req/s, p50/p99 (ms), non-2xx/3xx and socket errors from ``wrk --latency``."""
    out: dict[str, Any] = {}
    m = re.search(r"^\s*(\d+) requests in ([\d.]+)(\w+),", text, re.M)
    out["requests"] = int(m.group(1)) if m else 0
    m = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    out["rps"] = float(m.group(1)) if m else None
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}(?:\.000)?%\s+(\S+)", text, re.M)
        out[f"p{pct}_ms"] = _to_ms(m.group(1)) if m else None
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    out["non_2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    out["socket_errors"] = sum(int(g) for g in m.groups()) if m else 0
    return out


def run_wrk(
    port: int, base: str, keys: int, duration: float, connections: int, raw_log: Path | None
) -> dict[str, Any]:
    exe = wrk_path()
    if exe is None:
        raise RuntimeError("wrk is not installed")
    seconds = max(1, round(duration))
    argv = [exe, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s"]
    with tempfile.TemporaryDirectory(prefix="cf-bench-wrk-") as tmp:
        if keys > 1:
            script = Path(tmp) / "keys.lua"
            script.write_text(_LUA.format(base=base, keys=keys, last=keys - 1))
            argv += ["-s", str(script)]
            url = f"http://{HOST}:{port}{base}"
        else:
            url = f"http://{HOST}:{port}{base}&k=0"
        done = subprocess.run([*argv, url], capture_output=True, text=True, timeout=seconds + 60)
    if raw_log is not None:
        raw_log.write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
    result = parse_wrk(done.stdout)
    result["tool"] = "wrk"
    return result


# -- Python ------------------------------------------------------------------------------


def run_python(port: int, base: str, keys: int, duration: float, connections: int) -> dict[str, Any]:
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    result: dict[str, Any] = runner(_drive(port, base, keys, duration, connections))
    result["tool"] = "python"
    return result


async def _drive(port: int, base: str, keys: int, duration: float, connections: int) -> dict[str, Any]:
    counter = itertools.count()
    latencies: list[float] = []
    tally = {"non_2xx": 0, "socket_errors": 0}
    start = time.perf_counter()
    stop_at = start + duration

    def next_request() -> bytes:
        k = next(counter) % keys if keys > 1 else 0
        return f"GET {base}&k={k} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode()

    async def connection() -> None:
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
        except OSError:
            tally["socket_errors"] += 1
            return
        try:
            while time.perf_counter() < stop_at:
                sent = time.perf_counter()
                writer.write(next_request())
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                length = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
                if length is None:
                    raise OSError("response without Content-Length")
                await reader.readexactly(int(length.group(1)))
                latencies.append(time.perf_counter() - sent)
                if not 200 <= status < 400:
                    tally["non_2xx"] += 1
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            tally["socket_errors"] += 1
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    tasks = [asyncio.ensure_future(connection()) for _ in range(connections)]
    _, pending = await asyncio.wait(tasks, timeout=duration + 15)  # every loop bounded in time
    for task in pending:
        task.cancel()
    elapsed = time.perf_counter() - start
    latencies.sort()

    def pct(p: float) -> float | None:
        if not latencies:
            return None
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1e3

    return {
        "requests": len(latencies),
        "rps": len(latencies) / elapsed if latencies else None,
        "p50_ms": pct(50),
        "p99_ms": pct(99),
        **tally,
    }
