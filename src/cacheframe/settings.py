"""Settings: one pydantic-settings model, environment prefix ``CACHEFRAME_``."""

from __future__ import annotations

import difflib
import logging
import os
import re
import threading
from typing import Any

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .exceptions import ConfigurationError

__all__ = ["CacheSettings", "load_settings"]

log = logging.getLogger("cacheframe.startup")
ENV_PREFIX = "CACHEFRAME_"
# Unknown variables already warned about: a typo is reported once per process, not per Cache.
_warned_unknown: set[str] = set()
_warned_lock = threading.Lock()


class CacheSettings(BaseSettings):
    """Every knob of a :class:`~cacheframe.Cache`; each field is ``CACHEFRAME_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="CACHEFRAME_", extra="forbid", frozen=True)

    url: str = Field("memory://", description="Backend URL; the scheme names the backend.")
    prefix: str = Field("cacheframe", min_length=1, description="Prefix of every key.")
    default_ttl: float = Field(60.0, gt=0, description="Seconds an entry stays fresh.")
    serializer: str = Field("json", min_length=1, description="Serialiser for function values.")
    secret: SecretStr | None = Field(None, description="HMAC key; required by `pickle`.")
    enabled: bool = Field(True, description="`false`: every call runs the function.")
    max_entries: int = Field(10_000, gt=0, description="Bound of the in-memory backend.")
    max_bytes: int | None = Field(None, gt=0, description="Optional byte bound (memory).")
    honor_request_cache_control: bool = Field(
        True, description="Obey the client's `Cache-Control`/`Pragma` request directives."
    )
    timeout: float = Field(0.25, gt=0, description="Deadline in seconds for one store call.")
    fail_open: bool = Field(True, description="A store error is a miss, not an exception.")
    breaker_threshold: int = Field(5, ge=1, description="Consecutive store failures that open the circuit.")
    breaker_cooldown: float = Field(5.0, gt=0, description="Seconds the open circuit skips the store.")
    stampede_wait: float = Field(5.0, gt=0, description="Seconds a concurrent miss waits for the first.")
    stampede_lock: bool = Field(True, description="Take a lock in the store (where supported) on a miss.")
    stampede_lock_min_cost: float = Field(
        0.005,
        ge=0,
        description="Only for views whose last computation took this long (s; unknown counts as long).",
    )
    lock_lease: float = Field(5.0, gt=0, description="Lease of that lock; waiters give up after it.")
    local_max_entries: int = Field(
        0, ge=0, description="Entries of the in-process tier in front of a network store (0: off)."
    )
    local_max_bytes: int = Field(64 * 1024 * 1024, gt=0, description="Byte bound of that in-process tier.")
    local_max_staleness: float = Field(
        0.1,
        gt=0,
        le=60,
        description="Seconds an in-process copy may lag an invalidation (Redis: the lease of its channel).",
    )
    local_ttl: float | None = Field(
        None,
        gt=0,
        description="Max seconds an in-process copy lives (Memcached: the tier's bound; unset: validated).",
    )
    cache_status_header: str = Field("X-Cache", min_length=1, description="HIT/MISS header.")
    cache_status: bool = Field(True, description="Send an RFC 9211 `Cache-Status` header on view replies.")
    cache_status_name: str = Field(
        "cacheframe", description="The cache's name in `Cache-Status` (a structured-field token)."
    )

    @field_validator("prefix")
    @classmethod
    def _prefix_has_no_separator(cls, value: str) -> str:
        if any(c.isspace() for c in value):
            raise ValueError("must not contain whitespace")
        return value

    @field_validator("cache_status_name")
    @classmethod
    def _status_name_is_token(cls, value: str) -> str:
        if not _SF_TOKEN.fullmatch(value):
            raise ValueError(
                "must be a structured-field token (RFC 8941 §3.3.4): a letter or *, then tchars, : or /"
            )
        return value


# RFC 8941 §3.3.4: sf-token = ( ALPHA / "*" ) *( tchar / ":" / "/" ).
_SF_TOKEN = re.compile(r"[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*")


def warn_unknown_environment() -> None:
    """Log a warning, once per process, for each ``CACHEFRAME_*`` variable that is no setting."""
    known = [ENV_PREFIX + name.upper() for name in CacheSettings.model_fields]
    for name in os.environ:
        if not name.upper().startswith(ENV_PREFIX) or name.upper() in known:
            continue
        with _warned_lock:
            if name in _warned_unknown:
                continue
            _warned_unknown.add(name)
        close = _closest_setting(name.upper()[len(ENV_PREFIX) :])
        hint = f"did you mean {close}?" if close else f"known settings: {', '.join(known)}"
        log.warning("cacheframe: environment variable %s is not a cacheframe setting; %s", name, hint)


def _closest_setting(typed: str) -> str | None:
    """The setting ``CACHEFRAME_<typed>`` was probably meant to be, or None when none is close.

    Names are compared without the shared prefix (which would make every name look close);
    a whole-word match (``TTL`` in ``DEFAULT_TTL``, ``URL`` in ``REDIS_URL``) comes first.
    """
    names = [name.upper() for name in CacheSettings.model_fields]
    words = set(typed.split("_"))
    by_word = [n for n in names if set(n.split("_")) <= words or words <= set(n.split("_"))]
    close = difflib.get_close_matches(typed, names, n=1, cutoff=0.6) or by_word[:1]
    return ENV_PREFIX + close[0] if close else None


def load_settings(**options: Any) -> CacheSettings:
    """Build settings from keyword options over the environment, with readable errors."""
    warn_unknown_environment()
    unknown = sorted(set(options) - set(CacheSettings.model_fields))
    if unknown:
        known = ", ".join(sorted(CacheSettings.model_fields))
        raise ConfigurationError(f"unknown option(s) {', '.join(unknown)}; known options: {known}")
    try:
        return CacheSettings(**options)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else "?"
            source = "option" if field in options else "variable"
            name = field if field in options else f"CACHEFRAME_{field.upper()}"
            problems.append(f"{source} {name}: {err['msg']} (got {err.get('input')!r})")
        raise ConfigurationError("invalid cacheframe settings: " + "; ".join(problems)) from exc
