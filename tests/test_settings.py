"""Settings from the environment and from options, with errors naming the variable."""

from __future__ import annotations

import pytest

from cacheframe import Cache, ConfigurationError, configure, get_cache
from cacheframe.settings import load_settings


def test_defaults() -> None:
    """Without environment: memory://, prefix cacheframe, 60 s, json, enabled."""
    s = load_settings()
    assert (s.url, s.prefix, s.default_ttl, s.serializer, s.enabled) == (
        "memory://",
        "cacheframe",
        60,
        "json",
        True,
    )
    assert s.honor_request_cache_control is True and s.max_entries == 10_000


def test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """CACHEFRAME_* variables fill the settings."""
    monkeypatch.setenv("CACHEFRAME_PREFIX", "envp")
    monkeypatch.setenv("CACHEFRAME_DEFAULT_TTL", "5")
    monkeypatch.setenv("CACHEFRAME_ENABLED", "false")
    monkeypatch.setenv("CACHEFRAME_SECRET", "s3cret")
    s = load_settings()
    assert (s.prefix, s.default_ttl, s.enabled) == ("envp", 5, False)
    assert s.secret is not None and "s3cret" not in repr(s)


def test_options_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keyword options win over the environment."""
    monkeypatch.setenv("CACHEFRAME_PREFIX", "envp")
    assert load_settings(prefix="opt").prefix == "opt"


def test_invalid_environment_names_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """An invalid variable is named in the error."""
    monkeypatch.setenv("CACHEFRAME_DEFAULT_TTL", "soon")
    with pytest.raises(ConfigurationError, match="CACHEFRAME_DEFAULT_TTL"):
        load_settings()


def test_invalid_option_names_option() -> None:
    """An invalid or unknown option is named, with the known ones."""
    with pytest.raises(ConfigurationError, match="option max_entries"):
        load_settings(max_entries=0)
    with pytest.raises(ConfigurationError, match="unknown option.*ttl_default.*known options"):
        load_settings(ttl_default=3)


def test_unknown_scheme_lists_installed() -> None:
    """An unknown URL scheme fails at Cache()/configure() time listing installed schemes."""
    with pytest.raises(ConfigurationError, match=r"'nosuch'.*installed schemes:.*memory"):
        Cache(url="nosuch://x")
    with pytest.raises(ConfigurationError, match="installed schemes"):
        configure(url="nosuch://x")


def test_url_without_scheme() -> None:
    """A URL without a scheme explains the expected form."""
    with pytest.raises(ConfigurationError, match="no scheme"):
        Cache(url="localhost:6379")


def test_get_cache_lazy_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """get_cache() builds the default from the environment once."""
    monkeypatch.setenv("CACHEFRAME_PREFIX", "lazy")
    first = get_cache()
    assert first.settings.prefix == "lazy" and get_cache() is first


def test_configure_without_arguments_reads_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """configure() reads CACHEFRAME_* and replaces the default."""
    monkeypatch.setenv("CACHEFRAME_URL", "memory://?max_entries=3")
    c = configure()
    assert get_cache() is c and c.settings.url == "memory://?max_entries=3"
