"""Logging: one ``cacheframe`` hierarchy, and nothing sensitive in it.

Failures are driven for real (damaged entries, a store that refuses connections, a
failing refresh, unstorable responses) with user input and secrets in every place a
log line could pick them up: the store URL's password, key/value keys, function
arguments, request paths and query strings. None of them may appear in any record.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import pytest
from fastapi import FastAPI, Response
from fastapi.testclient import TestClient

import cacheframe
from cacheframe import keys

SECRETS = ("hunter2", "alice@example.com", "alice%40example.com", "tok-5ecret", "s3cr3t-arg")
# The documented loggers (docs/observability.md): every record comes from one of them.
LOGGERS = {
    "cacheframe.store",
    "cacheframe.engine",
    "cacheframe.views",
    "cacheframe.functions",
    "cacheframe.unsafe",
    "cacheframe.startup",
}


def assert_clean(caplog: pytest.LogCaptureFixture) -> None:
    """No secret or user input in any record (message, arguments or traceback), and every
    record on a documented logger."""
    assert caplog.records, "the failures were expected to log something"
    for record in caplog.records:
        assert record.name in LOGGERS, record.name
        text = record.getMessage() + (caplog.handler.format(record) if record.exc_info else "")
        for secret in SECRETS:
            assert secret not in text, (secret, text)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_app() -> FastAPI:
    app = FastAPI()

    @app.get("/users/{email}")
    @cacheframe.cache(ttl=60)
    async def user(email: str, token: str = "", response: Response = None) -> dict[str, str]:  # type: ignore[assignment]
        response.set_cookie("session", "abc")  # unstorable: logged at DEBUG with its reason
        return {"email": email}

    return app


def test_store_down_logs_no_password_nor_path(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="cacheframe")
    cacheframe.configure(url=f"redis://:hunter2@127.0.0.1:{_closed_port()}/0", timeout=0.25)
    client = TestClient(make_app())
    response = client.get("/users/alice@example.com", params={"token": "tok-5ecret"})
    assert response.headers["x-cache"] == "BYPASS"
    assert any(r.name == "cacheframe.store" and r.levelno == logging.WARNING for r in caplog.records)
    assert_clean(caplog)


async def test_startup_warning_redacts_the_url(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="cacheframe")
    cache = cacheframe.Cache(url=f"redis://:hunter2@127.0.0.1:{_closed_port()}/0", timeout=0.25)
    async with cache.lifespan():
        pass
    assert [r.name for r in caplog.records] == ["cacheframe.startup"]
    assert "***" in caplog.records[0].getMessage()
    assert_clean(caplog)


def test_unstorable_response_logs_the_view_not_the_request(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="cacheframe")
    cacheframe.configure()
    response = TestClient(make_app()).get("/users/alice@example.com", params={"token": "tok-5ecret"})
    assert response.headers["x-cache"] == "MISS"
    (record,) = caplog.records
    assert record.name == "cacheframe.views" and record.levelno == logging.DEBUG
    assert "make_app.<locals>.user" in record.getMessage() and "Set-Cookie" in record.getMessage()
    assert_clean(caplog)


async def test_damaged_entries_log_hashed_keys(caplog: pytest.LogCaptureFixture) -> None:
    """A damaged key/value entry and a damaged function entry: the key is logged hashed."""
    caplog.set_level(logging.DEBUG, logger="cacheframe")
    cache = cacheframe.configure()

    @cacheframe.cache(ttl=60, namespace="people")
    async def lookup(email: str) -> str:
        return email.upper()

    await cache.set("alice@example.com", {"a": 1})
    await lookup("s3cr3t-arg")
    for key in list(cache.backend._data):  # type: ignore[attr-defined]
        await cache.backend.set(key, b"garbage", 60)
    assert await cache.get("alice@example.com") is None
    assert await lookup("s3cr3t-arg") == "S3CR3T-ARG"
    damaged = [r for r in caplog.records if "damaged" in r.getMessage()]
    assert [r.name for r in damaged] == ["cacheframe.store", "cacheframe.store"]
    full = cache._engine.key("kv", "alice@example.com")
    assert keys.loggable(full) in damaged[0].getMessage()
    assert keys.loggable(full).startswith(f"{cache.settings.prefix}:kv:#")
    assert cache.stats.bad_entries == 2
    assert_clean(caplog)


async def test_refresh_and_stale_if_error_failures(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failing background refresh and a failing computation under stale-if-error: logged by
    the function's name and the exception's type, never its arguments."""
    caplog.set_level(logging.DEBUG, logger="cacheframe")
    cacheframe.configure()
    fail = False

    @cacheframe.cache(ttl=10, stale_while_revalidate=100)
    async def refreshed(email: str) -> str:
        if fail:
            raise RuntimeError("upstream failed")
        return email

    @cacheframe.cache(ttl=10, stale_if_error=100)
    async def guarded(email: str) -> str:
        if fail:
            raise RuntimeError("upstream failed")
        return email

    await refreshed("s3cr3t-arg")
    await guarded("alice@example.com")
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 30)
    fail = True
    assert await refreshed("s3cr3t-arg") == "s3cr3t-arg"  # stale; the refresh runs behind
    for _ in range(20):
        await asyncio.sleep(0.01)
    assert await guarded("alice@example.com") == "alice@example.com"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert {r.name for r in warnings} == {"cacheframe.engine"}
    assert any("background refresh" in r.getMessage() for r in warnings)
    assert any("stale-if-error" in r.getMessage() for r in warnings)
    assert all("RuntimeError" in r.getMessage() for r in warnings)
    assert_clean(caplog)


def test_loggable_keeps_the_namespace_and_hashes_the_rest() -> None:
    key = "app:kv:alice%40example.com"
    shown = keys.loggable(key)
    assert shown.startswith("app:kv:#") and "alice" not in shown
    assert shown == keys.loggable(key)  # stable: log lines of one key can be matched
    assert keys.loggable("app:kv:") == "app:kv:"  # a namespace holds no user input
    assert "alice" not in keys.loggable("alice@example.com")


def test_rate_limit_kept(caplog: pytest.LogCaptureFixture) -> None:
    """Repeated store failures log one warning per interval, whatever their number."""
    caplog.set_level(logging.WARNING, logger="cacheframe")
    cache = cacheframe.configure(
        url=f"redis://127.0.0.1:{_closed_port()}/0", timeout=0.25, breaker_threshold=100
    )
    client = TestClient(make_app())
    for _ in range(5):
        client.get("/users/x")
    assert cache.stats.store_errors["get"] == 5
    assert len([r for r in caplog.records if r.name == "cacheframe.store"]) == 1
