"""``sqlitecache:///path/to/file.db``: a small, real third-party backend.

It shows the whole contract a plugin implements: ``from_url``, the five
async methods, and optional capabilities (``ttl``, ``add``).
"""

from __future__ import annotations

import asyncio
import math
import os
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, Field

from cacheframe.backends.options import parse_options
from cacheframe.exceptions import BackendError, ConfigurationError

_SCHEMA = "CREATE TABLE IF NOT EXISTS entries (key TEXT PRIMARY KEY, value BLOB, expires REAL)"


class SQLiteOptions(BaseModel):
    """``?timeout=``: how long a call waits for the database lock, in seconds."""

    timeout: float = Field(5.0, gt=0)


class SQLiteBackend:
    """Entries in one SQLite table; blocking calls run in a worker thread."""

    def __init__(self, path: str, timeout: float = 5.0) -> None:
        self.path = path
        self.timeout = timeout
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self._pool: ThreadPoolExecutor | None = None

    @classmethod
    def from_url(cls, url: str, settings: Any = None) -> SQLiteBackend:
        """``sqlitecache:///abs/path.db`` or ``sqlitecache://:memory:``; a misspelt option is an error."""
        options = parse_options(
            url, SQLiteOptions, None if settings is None else {"timeout": settings.timeout}
        )
        parts = urlsplit(url)
        path = parts.path or parts.netloc
        if not path:
            raise ConfigurationError(f"{url!r} names no database file: use sqlitecache:///path/to/cache.db")
        return cls(path, options.timeout)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = sqlite3.connect(
                self.path, timeout=self.timeout, check_same_thread=False, isolation_level=None
            )
            self._conn.execute(_SCHEMA)
        return self._conn

    def _executor(self) -> ThreadPoolExecutor:
        if os.getpid() != self._pid:  # forked: the parent's threads and connection are not ours
            self._pid, self._lock, self._conn, self._pool = os.getpid(), threading.Lock(), None, None
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="sqlitecache")
        return self._pool

    async def _run(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        def work() -> list[Any]:
            with self._lock:
                cur = self._connection().execute(sql, params)
                return [cur.rowcount, *cur.fetchall()]

        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor(), work)
        except sqlite3.Error as exc:
            raise BackendError(f"sqlite: {exc}") from exc

    async def get(self, key: str) -> bytes | None:
        rows = await self._run("SELECT value FROM entries WHERE key = ? AND expires > ?", (key, time.time()))
        return bytes(rows[1][0]) if len(rows) > 1 else None

    async def set(self, key: str, value: bytes, ttl: float | None) -> None:
        expires = math.inf if ttl is None else time.time() + ttl
        await self._run("INSERT OR REPLACE INTO entries VALUES (?, ?, ?)", (key, value, expires))

    async def delete(self, key: str) -> bool:
        rows = await self._run("DELETE FROM entries WHERE key = ? AND expires > ?", (key, time.time()))
        return bool(rows[0] > 0)

    async def clear(self, namespace: str) -> None:
        # A range, not LIKE: no character in a namespace acts as a pattern.
        await self._run(
            "DELETE FROM entries WHERE key >= ? AND key < ?", (namespace, namespace + "\U0010ffff")
        )

    async def close(self) -> None:
        with self._lock:
            if self._conn is not None and self.path != ":memory:":
                self._conn.close()
                self._conn = None

    async def ttl(self, key: str) -> float | None:
        rows = await self._run(
            "SELECT expires FROM entries WHERE key = ? AND expires > ?", (key, time.time())
        )
        return max(0.0, rows[1][0] - time.time()) if len(rows) > 1 else None

    async def add(self, key: str, value: bytes, ttl: float | None) -> bool:
        expires = math.inf if ttl is None else time.time() + ttl
        await self._run("DELETE FROM entries WHERE key = ? AND expires <= ?", (key, time.time()))
        rows = await self._run("INSERT OR IGNORE INTO entries VALUES (?, ?, ?)", (key, value, expires))
        return bool(rows[0] == 1)
