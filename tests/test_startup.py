"""Startup checks: bad configuration stops the app's startup; an unreachable store is a warning."""

from __future__ import annotations

import logging

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import cacheframe
from cacheframe import BackendError, Cache, ConfigurationError, UnknownBackendError
from cacheframe import settings as settings_module
from cacheframe.cli import main
from servers import free_port


def _app(lifespan: object) -> FastAPI:
    app = FastAPI(lifespan=lifespan)  # type: ignore[arg-type]

    @app.get("/items/{n}")
    @cacheframe.cache(ttl=60)
    async def item(n: int) -> dict[str, int]:
        return {"n": n}

    return app


@pytest.mark.parametrize(
    ("url", "error", "words"),
    [
        ("foo://x", UnknownBackendError, "installed schemes"),
        ("not a url", ConfigurationError, "has no scheme"),
        ("redis://127.0.0.1:6379/0?tiemout=1", ConfigurationError, "tiemout"),
        ("memory://?max_entriess=3", ConfigurationError, "max_entriess"),
    ],
)
def test_bad_configuration_stops_default_lifespan(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], url: str, error: type, words: str
) -> None:
    """CACHEFRAME_URL with an unknown scheme, no scheme or a wrong option stops startup, as the CLI says."""
    monkeypatch.setenv("CACHEFRAME_URL", url)
    with pytest.raises(error) as raised, TestClient(_app(cacheframe.lifespan)):
        pass  # pragma: no cover - startup must fail before this runs
    assert words in str(raised.value)
    assert main(["ping"]) != 0  # the CLI reports the very same message
    assert str(raised.value) in capsys.readouterr().err


def test_unreachable_store_at_startup_warns_without_password(caplog: pytest.LogCaptureFixture) -> None:
    """A store nobody listens on is a warning naming the URL without its password; the app starts."""
    port = free_port()
    cacheframe.configure(url=f"redis://app:hunter2@127.0.0.1:{port}/0", timeout=0.2)
    with caplog.at_level(logging.WARNING, "cacheframe"), TestClient(_app(cacheframe.lifespan)) as client:
        assert client.get("/items/3").json() == {"n": 3}
    startup = [r for r in caplog.records if "unreachable at startup" in r.getMessage()]
    assert len(startup) == 1 and startup[0].levelno == logging.WARNING
    message = startup[0].getMessage()
    assert f"redis://app:***@127.0.0.1:{port}/0" in message and "hunter2" not in caplog.text


def test_unreachable_store_fails_startup_when_fail_closed() -> None:
    """fail_open=false: an unreachable store stops startup with BackendError naming the URL."""
    port = free_port()
    cache = Cache(f"redis://:hunter2@127.0.0.1:{port}/0", timeout=0.2, fail_open=False)
    with (
        pytest.raises(BackendError, match="unreachable at startup") as raised,
        TestClient(_app(cache.lifespan)),
    ):
        pass  # pragma: no cover
    assert "hunter2" not in str(raised.value) and ":***@" in str(raised.value)


def test_cache_lifespan_checks_its_store(caplog: pytest.LogCaptureFixture) -> None:
    """Cache.lifespan probes its own store at startup too (memcached here)."""
    port = free_port()
    cache = Cache(f"memcached://127.0.0.1:{port}", timeout=0.2)
    with caplog.at_level(logging.WARNING, "cacheframe"), TestClient(_app(cache.lifespan)):
        pass
    assert f"memcached://127.0.0.1:{port} is unreachable at startup" in caplog.text


def test_reachable_store_starts_quietly(redis_server: object, caplog: pytest.LogCaptureFixture) -> None:
    """A working store logs nothing at startup."""
    cacheframe.configure(url=redis_server.url, timeout=5.0)  # type: ignore[attr-defined]
    with caplog.at_level(logging.WARNING, "cacheframe"), TestClient(_app(cacheframe.lifespan)) as client:
        assert client.get("/items/4").json() == {"n": 4}
    assert caplog.records == []


def test_unknown_environment_variable_warned_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """CACHEFRAME_URLL is warned about once per process, naming CACHEFRAME_URL."""
    monkeypatch.setattr(settings_module, "_warned_unknown", set())
    monkeypatch.setenv("CACHEFRAME_URLL", "redis://x")
    monkeypatch.setenv("CACHEFRAME_STAMPEDE_LOCK_MIN_CSOT", "1")
    with caplog.at_level(logging.WARNING, "cacheframe"):
        Cache()
        Cache()
        with TestClient(_app(cacheframe.lifespan)):
            pass
    warned = [r.getMessage() for r in caplog.records if "not a cacheframe setting" in r.getMessage()]
    assert len(warned) == 2
    assert any("CACHEFRAME_URLL" in m and "did you mean CACHEFRAME_URL?" in m for m in warned)
    assert any("did you mean CACHEFRAME_STAMPEDE_LOCK_MIN_COST?" in m for m in warned)


def test_unreachable_sentinel_warning_hides_sentinel_password(caplog: pytest.LogCaptureFixture) -> None:
    """A password passed as a query option (sentinel_password) is redacted from the startup warning too."""
    port = free_port()
    url = f"redis+sentinel://:hunter2@127.0.0.1:{port}/mymaster?sentinel_password=swordfish"
    cache = Cache(url, timeout=0.2)
    with caplog.at_level(logging.WARNING, "cacheframe"), TestClient(_app(cache.lifespan)):
        pass
    assert "unreachable at startup" in caplog.text and "sentinel_password=***" in caplog.text
    assert "swordfish" not in caplog.text and "hunter2" not in caplog.text
    assert "swordfish" not in repr(cache)


@pytest.mark.parametrize(
    ("variable", "hint"),
    [
        ("CACHEFRAME_TTL", "did you mean CACHEFRAME_DEFAULT_TTL?"),
        ("CACHEFRAME_REDIS_URL", "did you mean CACHEFRAME_URL?"),
        ("CACHEFRAME_DEBUG", "known settings: CACHEFRAME_URL, CACHEFRAME_PREFIX"),
    ],
)
def test_unknown_environment_variable_hint_ignores_the_prefix(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, variable: str, hint: str
) -> None:
    """The suggestion compares setting names, not the shared CACHEFRAME_ prefix (TTL is not URL)."""
    monkeypatch.setattr(settings_module, "_warned_unknown", set())
    monkeypatch.setenv(variable, "1")
    with caplog.at_level(logging.WARNING, "cacheframe"):
        Cache()
    warned = [r.getMessage() for r in caplog.records if variable in r.getMessage()]
    assert len(warned) == 1 and hint in warned[0], warned


def test_disabled_cache_does_not_probe_its_store(caplog: pytest.LogCaptureFixture) -> None:
    """enabled=false never calls the store, so an unreachable one neither warns nor stops startup."""
    port = free_port()
    cache = Cache(f"redis://127.0.0.1:{port}/0", timeout=0.2, fail_open=False, enabled=False)
    with caplog.at_level(logging.WARNING, "cacheframe"), TestClient(_app(cache.lifespan)) as client:
        assert client.get("/items/5").json() == {"n": 5}
    assert "unreachable" not in caplog.text
