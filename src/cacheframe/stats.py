"""The counters of one ``Cache``: what its lookups, fills and store calls came to."""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["CacheStats"]


@dataclass
class CacheStats:
    """Counters of one ``Cache`` (process-local)."""

    hits: int = 0
    fast_hits: int = 0
    misses: int = 0
    bypasses: int = 0
    stale: int = 0
    stores: int = 0
    not_stored: int = 0
    backend_errors: int = 0
    short_circuited: int = 0
    bad_entries: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain mapping."""
        return asdict(self)
