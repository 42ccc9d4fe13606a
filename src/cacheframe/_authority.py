"""The authority (``host[:port]``) Starlette builds ``request.url`` and ``url_for`` from.

Starlette takes the *first* ``Host`` header when it parses as a host with a
valid port, and otherwise the server's own address (``scope["server"]``). A
view that renders absolute URLs sees exactly this value, so the view key holds
exactly this value too: keying the raw header instead would let a malformed
``Host`` store a page that names this server's address under another key, and
keying the last header would let ``Host: a`` + ``Host: b`` poison ``b``'s entry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["request_authority"]

_parse: Callable[[str], Any] | None
try:  # recent Starlette rejects malformed Host headers and falls back to the server address
    from starlette._utils import parse_host_header as _parse
except ImportError:  # pragma: no cover - older Starlette used any Host header as it came
    _parse = None

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
# Host header -> whether Starlette accepts it: hosts repeat, the parse is a regex.
# Bounded: at most 4096 hosts of at most 255 characters (about 1 MiB).
_VALID: dict[str, bool] = {}
_VALID_MAX = 4096
_VALID_MAX_LEN = 255


def _accepted(host: str) -> bool:
    valid = _VALID.get(host)
    if valid is None:
        if _parse is None:
            return True
        parsed = _parse(host)
        valid = parsed is not None and parsed.is_valid_port
        if len(host) <= _VALID_MAX_LEN:
            if len(_VALID) >= _VALID_MAX:
                _VALID.clear()
            _VALID[host] = valid
    return valid


def request_authority(host_header: str, scope: Any) -> str:
    """The authority of ``request.url`` for this request (``host_header`` is the first
    ``Host`` header, ``""`` when there is none); ``""`` when Starlette builds a relative URL."""
    if host_header and _accepted(host_header):
        return host_header
    server = scope.get("server")
    if server is None:
        return ""
    host, port = server
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return host if port == _DEFAULT_PORTS.get(scope.get("scheme", "http")) else f"{host}:{port}"
