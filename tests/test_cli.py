"""The cacheframe command: backends, ping, stats, clear, get, and the demo server."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import httpx
import pytest

from cacheframe import Cache
from cacheframe.cli import main
from servers import free_port, wait_port


def test_backends_lists_builtins(capsys: pytest.CaptureFixture[str]) -> None:
    """`cacheframe backends` lists built-in backends and serialisers with their distribution."""
    assert main(["backends"]) == 0
    out = capsys.readouterr().out
    assert "memory" in out and "json" in out and "(cacheframe)" in out


def test_ping_ok(cache_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`cacheframe ping` succeeds against a reachable backend."""
    assert main(["--url", cache_url, "ping"]) == 0
    assert capsys.readouterr().out.startswith("ok ")


def test_ping_unreachable_exits_non_zero(capsys: pytest.CaptureFixture[str]) -> None:
    """`cacheframe ping` exits non-zero when the store is unreachable or the URL unknown."""
    port = free_port()  # nothing listens there: connection refused
    assert main(["--url", f"redis://127.0.0.1:{port}/0", "ping"]) == 1
    assert "unreachable" in capsys.readouterr().err
    assert main(["--url", f"memcached://127.0.0.1:{port}", "ping"]) == 1
    assert main(["--url", "nosuch://x", "ping"]) != 0
    assert "installed schemes" in capsys.readouterr().err


def test_stats_clear_get(
    cache_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """stats prints JSON; get inspects an entry (size, ttl, serializer); clear removes it."""
    base = ["--url", cache_url]
    monkeypatch.setenv("CACHEFRAME_PREFIX", "clitest")
    assert main([*base, "stats"]) == 0
    assert isinstance(json.loads(capsys.readouterr().out), dict)
    if cache_url.startswith("memory"):  # each process has its own in-memory store
        assert main([*base, "get", "thing", "--namespace", "ns1"]) == 1
        return
    cache = Cache(url=cache_url)

    async def put() -> None:
        await cache.set("thing", {"a": 1}, namespace="ns1")
        await cache.close()

    asyncio.run(put())
    assert main([*base, "get", "thing", "--namespace", "ns1"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["serializer"] == "json" and info["size"] > 0 and info["ttl"] == 60
    assert main([*base, "clear", "--namespace", "ns1"]) == 0
    capsys.readouterr()
    assert main([*base, "get", "thing", "--namespace", "ns1"]) == 1


def test_demo_serves_miss_hit_304() -> None:
    """`cacheframe demo` serves the slow endpoint: MISS, then HIT, then 304."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cacheframe.cli", "demo", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_port(port, timeout=20)
        url = f"http://127.0.0.1:{port}/slow?n=2"
        start = time.monotonic()
        miss = httpx.get(url, timeout=10)
        slow = time.monotonic() - start
        hit = httpx.get(url, timeout=10)
        cond = httpx.get(url, headers={"If-None-Match": hit.headers["etag"]}, timeout=10)
        assert (miss.headers["x-cache"], hit.headers["x-cache"]) == ("MISS", "HIT")
        assert miss.content == hit.content and slow >= 0.9
        assert cond.status_code == 304
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert f"http://127.0.0.1:{port}" in out and "curl" in out
