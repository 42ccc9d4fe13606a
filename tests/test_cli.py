"""The cacheframe command: backends, ping, stats, clear, get, and the demo server."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from cacheframe import Cache
from cacheframe.cli import _parser, main
from servers import free_port, wait_port


def test_backends_lists_builtins(capsys: pytest.CaptureFixture[str]) -> None:
    """`cacheframe backends` lists built-in backends and serialisers with their distribution."""
    assert main(["backends"]) == 0
    out = capsys.readouterr().out
    assert "memory" in out and "json" in out and "(cacheframe)" in out


def test_ping_ok(cache_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """`cacheframe ping` succeeds against a reachable backend. The store deadline is roomy: a
    cluster client connects afresh inside it (0.25 s timed out once on a loaded machine)."""
    monkeypatch.setenv("CACHEFRAME_TIMEOUT", "5")
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
    if cache_url.startswith("memory"):  # each process has its own in-memory store
        assert main([*base, "get", "thing", "--namespace", "ns1"]) == 1
        return
    assert main([*base, "stats"]) == 0
    assert isinstance(json.loads(capsys.readouterr().out)["server"], dict)
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


def test_options_after_the_subcommand(redis_server: object, capsys: pytest.CaptureFixture[str]) -> None:
    """`cacheframe stats --url ...` works like `cacheframe --url ... stats`; after wins."""
    url = redis_server.url  # type: ignore[attr-defined]
    assert main(["stats", "--url", url]) == 0
    after = json.loads(capsys.readouterr().out)
    assert main(["--url", "memcached://127.0.0.1:1", "ping", "--url", url]) == 0
    assert capsys.readouterr().out.startswith("ok ")
    assert after["url"] == url


@pytest.mark.parametrize("fixture", ["redis_server", "memcached_server"])
def test_stats_are_the_servers_not_the_commands_zeros(
    fixture: str, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    """stats prints the server's figures under "server" and no process counters as the app's."""
    url = request.getfixturevalue(fixture).url
    assert main(["stats", "--url", url]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert set(out) == {"url", "server"}
    assert "hits" not in out["server"] or fixture == "redis_server"  # redis: the server's keyspace_hits
    assert "oversized" not in out["server"]
    assert "Cache.stats" in captured.err  # where the app's own counters are


@pytest.mark.parametrize("command", [["clear"], ["stats"], ["get", "some-key"]])
def test_memory_store_says_it_cannot_reach_the_app(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """On memory:// clear/stats/get say plainly they cannot reach a running process's memory."""
    assert main([*command, "--url", "memory://"]) == 1
    err = capsys.readouterr().err
    assert "memory of each running app process" in err and "cannot" in err


def test_help_text_is_plain() -> None:
    """--help of the command and of every subcommand has no reST markup."""
    parser = _parser()
    texts = [parser.format_help()]
    subparsers = next(a for a in parser._actions if a.dest == "command")
    texts += [p.format_help() for p in subparsers.choices.values()]  # type: ignore[union-attr]
    for text in texts:
        for markup in ("``", ":func:", ":class:", ":meth:", ":mod:", "`"):
            assert markup not in text, text


APP_SOURCE = """
import cacheframe
from fastapi import FastAPI

app = FastAPI()

@app.get("/items/{item_id}")
@cacheframe.cache(ttl=60)
async def item(item_id: int, q: str = "") -> dict[str, object]:
    return {"item_id": item_id, "q": q}

@app.get("/me")
@cacheframe.cache(ttl=60, private=True)
async def me() -> dict[str, str]:
    return {"me": "yes"}

sub = FastAPI()

@sub.get("/things/{n}")
@cacheframe.cache(ttl=60)
async def thing(n: int) -> dict[str, int]:
    return {"n": n}

app.mount("/sub", sub)
"""


@pytest.fixture
def cli_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module with a cached FastAPI app in the working directory; returns its module name."""
    name = f"cliapp_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(APP_SOURCE))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("CACHEFRAME_PREFIX", f"cli{uuid.uuid4().hex[:8]}")
    return name


def test_get_by_request_and_body(
    cli_app: str, redis_server: object, capsys: pytest.CaptureFixture[str]
) -> None:
    """get --app module:app /path finds the entry that request is answered from; --body prints it."""
    import importlib

    import cacheframe

    url = redis_server.url  # type: ignore[attr-defined]
    cacheframe.configure(url=url, timeout=5.0)
    module = importlib.import_module(cli_app)
    with TestClient(module.app, base_url="http://127.0.0.1:8000") as client:
        assert client.get("/items/3?q=x").headers["x-cache"] == "MISS"
        assert client.get("/me", headers={"Authorization": "Bearer a"}).headers["x-cache"] == "MISS"
    base = ["get", "--url", url, "--app", f"{cli_app}:app"]
    assert main([*base, "/items/3?q=x"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["status"] == 200 and info["headers"]["content-type"] == "application/json"
    assert main([*base, "/items/3?q=x", "--body"]) == 0
    assert json.loads(capsys.readouterr().out) == {"item_id": 3, "q": "x"}
    assert main([*base, "--body", "/me", "--header", "Authorization: Bearer a"]) == 0
    assert json.loads(capsys.readouterr().out) == {"me": "yes"}
    assert main([*base, "/me", "--header", "Authorization: Bearer b"]) == 1  # another user: no entry
    assert main([*base, "/items/4"]) == 1
    assert "no entry under" in capsys.readouterr().err
    assert main([*base, "/items/3?q=x", "--host", "example.org"]) == 1  # the host is part of the key
    # the raw key shown by the summary reads the same entry
    assert main(["get", "--url", url, info["key"], "--body"]) == 0
    assert json.loads(capsys.readouterr().out) == {"item_id": 3, "q": "x"}


def test_get_by_request_explains_bad_input(cli_app: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--app with a bad reference, or a path no cached route answers, says what is wrong."""
    assert main(["get", "--app", "nomodule_xyz:app", "/x"]) == 2
    assert "cannot import 'nomodule_xyz'" in capsys.readouterr().err
    assert main(["get", "--app", cli_app, "/x"]) == 2
    assert "module:attribute" in capsys.readouterr().err
    assert main(["get", "--url", "redis://127.0.0.1:1/0", "--app", f"{cli_app}:app", "/nothing"]) == 2
    assert "no route" in capsys.readouterr().err


def test_get_by_request_into_a_mounted_app(
    cli_app: str, redis_server: object, capsys: pytest.CaptureFixture[str]
) -> None:
    """get --app finds an entry of a route in a mounted sub-application (no traceback on the Mount)."""
    import importlib

    import cacheframe

    url = redis_server.url  # type: ignore[attr-defined]
    cacheframe.configure(url=url, timeout=2.0)
    module = importlib.import_module(cli_app)
    with TestClient(module.app, base_url="http://127.0.0.1:8000") as client:
        assert client.get("/sub/things/5").headers["x-cache"] == "MISS"
    base = ["get", "--url", url, "--app", f"{cli_app}:app"]
    assert main([*base, "/sub/things/5", "--body"]) == 0
    assert json.loads(capsys.readouterr().out) == {"n": 5}
    assert main([*base, "/sub/nothing"]) == 2
    assert "no route" in capsys.readouterr().err


def test_get_by_request_behind_a_root_path(
    cli_app: str, redis_server: object, capsys: pytest.CaptureFixture[str]
) -> None:
    """get --root-path finds the entry of an app served with the ASGI server's --root-path."""
    import importlib

    import cacheframe

    url = redis_server.url  # type: ignore[attr-defined]
    cacheframe.configure(url=url, timeout=2.0)
    module = importlib.import_module(cli_app)
    # uvicorn --root-path /api: the scope's path carries the root path in front (as here)
    with TestClient(module.app, base_url="http://127.0.0.1:8000", root_path="/api") as client:
        assert client.get("/api/items/7").headers["x-cache"] == "MISS"
    base = ["get", "--url", url, "--app", f"{cli_app}:app", "/items/7", "--body"]
    assert main([*base, "--root-path", "/api"]) == 0
    assert json.loads(capsys.readouterr().out) == {"item_id": 7, "q": ""}
    assert main(base) == 1  # without it, another path: no entry


@pytest.mark.parametrize("fixture", ["redis_server", "memcached_server"])
def test_invalidate_by_tag_and_namespace(
    fixture: str,
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`cacheframe invalidate --tag` (hard or --soft) and `--namespace` reach the app's entries
    from a separate process's point of view: another Cache on the same store."""
    url = request.getfixturevalue(fixture).url
    prefix = f"inv{uuid.uuid4().hex[:6]}"
    monkeypatch.setenv("CACHEFRAME_PREFIX", prefix)  # the command's cache: the app's prefix
    cache = Cache(url, prefix=prefix, timeout=5.0)
    runs: list[str] = []

    @cache.cache(ttl=60, namespace="rates", tags=["rate:{code}"])
    async def rate(code: str) -> str:
        runs.append(code)
        return code

    async def calls(*codes: str) -> None:
        for code in codes:
            await rate(code)

    asyncio.run(calls("EUR", "USD", "EUR"))
    assert runs == ["EUR", "USD"]
    assert main(["invalidate", "--url", url, "--tag", "rate:EUR"]) == 0
    assert "invalidated tag 'rate:EUR'" in capsys.readouterr().out
    asyncio.run(calls("EUR", "USD"))
    assert runs == ["EUR", "USD", "EUR"]
    assert main(["invalidate", "--url", url, "--namespace", "rates"]) == 0
    asyncio.run(calls("EUR", "USD"))
    assert runs == ["EUR", "USD", "EUR", "EUR", "USD"]
    assert main(["invalidate", "--url", url]) == 2  # nothing named


def test_invalidate_refuses_memory(capsys: pytest.CaptureFixture[str]) -> None:
    """memory:// lives in each app process: the command says it cannot reach it."""
    assert main(["invalidate", "--url", "memory://", "--tag", "x"]) == 1
    assert "cannot invalidate" in capsys.readouterr().err
