"""The contract every backend keeps, as a pytest test class to inherit.

A backend's whole test module::

    import pytest
    from cacheframe.testing import BackendConformance

    class TestMyBackend(BackendConformance):
        @pytest.fixture
        def backend_url(self):
            return "mine://127.0.0.1:9999"

or an empty subclass run with ``pytest --cacheframe-url mine://127.0.0.1:9999``.
The suite builds backends from that URL through the installed entry point. Fixtures
a subclass may override: ``backend_url``; ``backend_factory`` (the class, when it is
not installed yet); ``backend`` (an async fixture yielding a backend built your
way, decorated with ``cacheframe.testing.async_fixture``); ``unreachable_url`` (a
URL whose store cannot be reached, ``None`` for a store that has nothing to lose,
like an in-process one). Running the suite with neither
``--cacheframe-url`` nor ``backend_url`` fails, saying what to pass.

Async tests run with pytest-asyncio when it is installed (strict or auto mode),
otherwise with anyio's pytest plugin. Every backend call is bounded by
``call_timeout``: a backend that never answers fails its tests instead of hanging
the run. Optional capabilities (``SupportsTTL``, ``SupportsAdd``, ``SupportsLock``,
``SupportsStats``, ``SupportsStamps``) are tested when the backend implements them and skipped, with
the reason shown, when it does not; so is ``SupportsStamps`` (with
``SupportsStampsNowait`` checked against it). Every test writes under a fresh namespace, so
the suite can run against a shared server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from ..exceptions import BackendError, ConfigurationError
from ..types import (
    Backend,
    BackendFactory,
    SupportsAdd,
    SupportsCreateStamps,
    SupportsLock,
    SupportsLockRoundTrips,
    SupportsStamps,
    SupportsStampsNowait,
    SupportsStats,
    SupportsTTL,
)
from ._support import (
    async_fixture,
    async_test,
    bounded,
    bounded_view,
    require_runner,
    unreachable,
    with_option,
)

__all__ = ["BackendConformance"]

# Long enough for stores with whole-second expiry (memcached rounds up to 1 s, ±1 s).
EXPIRY_TTL = 1.0
EXPIRY_WAIT = 2.2

# Namespaces that a pattern-matching clear (SQL LIKE, glob, a C string cut at NUL) mixes up
# with "my-app": each pair is checked both ways round, as a namespace and as a key's prefix.
LOOKALIKES = {
    "underscore": "my_app",
    "percent": "my%app",
    "star": "my*app",
    "question": "my?app",
    "brackets": "my[-]app",
    "open-bracket": "my[app",
    "close-bracket": "my]app",
    "backslash": "my\\-app",
    "nul": "my\x00app",
}
PLAIN = "my-app"


def _ns() -> str:
    return f"cf-conf-{uuid.uuid4().hex[:12]}:"


class BackendConformance:
    """Inherit, and give the suite a backend: ``--cacheframe-url``, or a ``backend_url`` fixture."""

    large_value_size = 512 * 1024
    call_timeout = 10.0
    """Seconds one backend call may take before its test fails as hanging."""

    # -- fixtures -----------------------------------------------------------------------

    @pytest.fixture(autouse=True)
    def _async_runner(self, request: pytest.FixtureRequest) -> None:
        """Fail at once, saying what to install, when no async test plugin is active."""
        require_runner(request.config)

    @pytest.fixture
    def anyio_backend(self) -> str:
        """Under anyio's plugin: asyncio (backends are asyncio code)."""
        return "asyncio"

    @pytest.fixture
    def backend_url(self, request: pytest.FixtureRequest) -> str:
        """The URL under test: ``--cacheframe-url``, unless a subclass overrides this fixture."""
        try:
            url = request.config.getoption("--cacheframe-url")
        except ValueError:  # the option is missing: cacheframe's pytest plugin was disabled
            url = None
        if not url:
            pytest.fail(
                f"no backend to test: run pytest with --cacheframe-url <scheme>://..., or define a "
                f"backend_url fixture in {type(self).__name__} returning the URL of a running store",
                pytrace=False,
            )
        return str(url)

    @pytest.fixture
    def backend_factory(self, backend_url: str) -> BackendFactory:
        """What the URL's scheme selects through the ``cacheframe.backends`` entry point."""
        from ..registry import load_backend_factory

        return load_backend_factory(backend_url)

    @pytest.fixture
    def unreachable_url(self, backend_url: str) -> str | None:
        """``backend_url`` pointed at a loopback port that refuses connections.

        Override it for a store named otherwise (a file, a socket path: without it the
        error test is skipped, saying so); return ``None`` only for a store that cannot
        fail (in-process).
        """
        url = unreachable(backend_url)
        if url is None:
            pytest.skip(
                f"{backend_url!r} names no host to point elsewhere: define an unreachable_url fixture in "
                f"{type(self).__name__} (a URL whose store cannot be reached) to test error types"
            )
        return url

    @async_fixture
    async def backend(self, backend_factory: BackendFactory, backend_url: str) -> AsyncIterator[Backend]:
        """A backend built from ``backend_url``; closed afterwards."""
        instance = backend_factory.from_url(backend_url, None)
        yield instance
        await bounded(instance.close(), self.call_timeout, f"{instance!r}.close()")

    @pytest.fixture
    def ns(self) -> str:
        """A namespace no other test uses: ``cf-conf-<random>:``."""
        return _ns()

    @async_fixture
    async def store(self, backend: Backend, ns: str) -> AsyncIterator[Any]:
        """The backend under test, each call bounded by ``call_timeout``; its namespace cleared after."""
        view = bounded_view(backend, self.call_timeout)
        yield view
        await view.clear(ns)

    def _fresh(self, backend_factory: BackendFactory, backend_url: str) -> Backend:
        return backend_factory.from_url(backend_url, None)

    def _run(self, loop: asyncio.AbstractEventLoop, call: Any, what: str) -> Any:
        return loop.run_until_complete(bounded(call, self.call_timeout, what))

    # -- the base contract ----------------------------------------------------------

    @async_test
    async def test_satisfies_protocol(self, backend: Backend) -> None:
        """The object implements the Backend protocol."""
        assert isinstance(backend, Backend)

    @async_test
    async def test_missing_key_is_none(self, store: Backend, ns: str) -> None:
        """An absent key reads as None."""
        assert await store.get(ns + "absent") is None

    @async_test
    async def test_bytes_round_trip(self, store: Backend, ns: str) -> None:
        """Every byte value, including empty and all 256 byte values, comes back exactly."""
        values = {"empty": b"", "all": bytes(range(256)), "text": "héllo".encode(), "nul": b"\x00\r\n"}
        for name, value in values.items():
            await store.set(ns + name, value, 30)
        for name, value in values.items():
            got = await store.get(ns + name)
            assert got == value, name
            assert isinstance(got, bytes)

    @async_test
    async def test_overwrite(self, store: Backend, ns: str) -> None:
        """A second set replaces the first."""
        await store.set(ns + "k", b"one", 30)
        await store.set(ns + "k", b"two", 30)
        assert await store.get(ns + "k") == b"two"

    @async_test
    async def test_ttl_expiry(self, store: Backend, ns: str) -> None:
        """An entry is gone after its ttl; one without ttl stays."""
        await store.set(ns + "short", b"v", EXPIRY_TTL)
        await store.set(ns + "forever", b"v", None)
        await store.set(ns + "long", b"v", 600)
        assert await store.get(ns + "short") == b"v"
        await asyncio.sleep(EXPIRY_WAIT)
        assert await store.get(ns + "short") is None
        assert await store.get(ns + "forever") == b"v"
        assert await store.get(ns + "long") == b"v"

    @async_test
    async def test_fractional_ttl_is_not_forever(self, store: Backend, ns: str) -> None:
        """A sub-second ttl still expires (it must not become 'never')."""
        await store.set(ns + "frac", b"v", 0.4)
        await asyncio.sleep(EXPIRY_WAIT)
        assert await store.get(ns + "frac") is None

    @async_test
    async def test_delete(self, store: Backend, ns: str) -> None:
        """Delete removes a key and reports whether it existed."""
        await store.set(ns + "k", b"v", 30)
        assert await store.delete(ns + "k") is True
        assert await store.get(ns + "k") is None
        assert await store.delete(ns + "k") is False

    @async_test
    async def test_clear_namespace_isolated(self, store: Backend, ns: str) -> None:
        """clear(ns) removes that namespace only: siblings, prefixes and look-alikes stay."""
        keys = {
            "inside": f"{ns}a:1",
            "inside_deep": f"{ns}a:sub:2",
            "sibling": f"{ns}b:1",
            "lookalike": f"{ns}ab:1",
        }
        for key in keys.values():
            await store.set(key, b"v", 60)
        await store.clear(f"{ns}a:")
        assert await store.get(keys["inside"]) is None
        assert await store.get(keys["inside_deep"]) is None
        assert await store.get(keys["sibling"]) == b"v"
        assert await store.get(keys["lookalike"]) == b"v"
        await store.set(keys["inside"], b"again", 60)
        assert await store.get(keys["inside"]) == b"again"

    @async_test
    async def test_clear_other_prefix_untouched(self, store: Backend, ns: str) -> None:
        """Clearing one prefix leaves another prefix's identical namespace alone."""
        other = _ns()
        try:
            await store.set(f"{ns}x:1", b"mine", 60)
            await store.set(f"{other}x:1", b"theirs", 60)
            await store.clear(ns)
            assert await store.get(f"{ns}x:1") is None
            assert await store.get(f"{other}x:1") == b"theirs"
        finally:
            await store.clear(other)

    @async_test
    async def test_odd_keys(self, store: Backend, ns: str) -> None:
        """Keys using the whole key alphabet, and long keys, are distinct and round-trip."""
        odd = [
            "a%2A%3F%5B%5D",
            "{tag}:x",
            "x~" + "f" * 32,
            "dots.and-dashes_",
            "L" * 400,
            "L" * 399 + "M",
            "glob*?[",  # never produced by cacheframe, but must not act as a pattern
        ]
        for i, name in enumerate(odd):
            await store.set(ns + name, str(i).encode(), 60)
        for i, name in enumerate(odd):
            assert await store.get(ns + name) == str(i).encode(), name

    @async_test
    async def test_glob_characters_do_not_widen_clear(self, store: Backend, ns: str) -> None:
        """A namespace holding glob characters clears only itself."""
        await store.set(f"{ns}n*:1", b"star", 60)
        await store.set(f"{ns}nX:1", b"plain", 60)
        await store.clear(f"{ns}n*:")
        assert await store.get(f"{ns}n*:1") is None
        assert await store.get(f"{ns}nX:1") == b"plain"

    @async_test
    async def test_large_value(self, store: Backend, ns: str) -> None:
        """A value of ``large_value_size`` bytes round-trips."""
        value = os.urandom(self.large_value_size)
        await store.set(ns + "big", value, 60)
        assert await store.get(ns + "big") == value

    @async_test
    async def test_concurrent_use(self, store: Backend, ns: str) -> None:
        """Hundreds of concurrent sets and gets each see their own value."""

        async def one(i: int) -> bytes | None:
            await store.set(f"{ns}c:{i}", f"value-{i}".encode(), 60)
            return await store.get(f"{ns}c:{i}")

        results = await asyncio.gather(*(one(i) for i in range(300)))
        assert results == [f"value-{i}".encode() for i in range(300)]

    @async_test
    async def test_usable_after_close(self, store: Backend, ns: str) -> None:
        """close() releases connections; the next call reconnects."""
        await store.set(ns + "k", b"v", 60)
        await store.close()
        assert await store.get(ns + "k") == b"v"

    @async_test
    @pytest.mark.parametrize("lookalike", list(LOOKALIKES.values()), ids=list(LOOKALIKES))
    async def test_clear_treats_wildcards_literally(self, store: Backend, ns: str, lookalike: str) -> None:
        """``_ % * ? [ ] \\`` and NUL in a namespace match only themselves, both ways round."""
        await self._check_lookalikes(store, f"{ns}{lookalike}:", f"{ns}{PLAIN}:")

    @async_test
    @pytest.mark.parametrize("lookalike", list(LOOKALIKES.values()), ids=list(LOOKALIKES))
    async def test_clear_treats_wildcards_literally_in_prefix(self, store: Backend, lookalike: str) -> None:
        """The same characters in a key's first segment (the cache prefix) match only themselves."""
        tail = uuid.uuid4().hex[:12]
        special, plain = f"{lookalike}{tail}:", f"{PLAIN}{tail}:"
        try:
            await self._check_lookalikes(store, special, plain)
        finally:
            await store.clear(special)
            await store.clear(plain)

    @staticmethod
    async def _check_lookalikes(store: Backend, special: str, plain: str) -> None:
        for first, second in ((special, plain), (plain, special)):
            await store.set(f"{first}k:1", b"cleared", 60)
            await store.set(f"{second}k:1", b"kept", 60)
            await store.clear(first)
            assert await store.get(f"{first}k:1") is None, f"clear({first!r}) left its own key"
            assert await store.get(f"{second}k:1") == b"kept", f"clear({first!r}) removed {second!r}'s key"
            await store.clear(second)

    def test_unknown_option_rejected(self, backend_factory: BackendFactory, backend_url: str) -> None:
        """A misspelt ``?option=`` is a ConfigurationError naming it, never silently ignored."""
        url = with_option(backend_url, "cf_no_such_option", "1")
        with pytest.raises(ConfigurationError, match="cf_no_such_option"):
            backend_factory.from_url(url, None)

    @async_test
    async def test_store_errors_are_backend_errors(
        self, backend_factory: BackendFactory, unreachable_url: str | None, ns: str
    ) -> None:
        """Against a store it cannot reach, every call raises BackendError, within the deadline."""
        if unreachable_url is None:
            pytest.skip("unreachable_url is None: the backend has no store to lose")
        broken = bounded_view(backend_factory.from_url(unreachable_url, None), self.call_timeout)
        calls: list[tuple[str, Callable[[], Any]]] = [
            ("get", lambda: broken.get(ns + "k")),
            ("set", lambda: broken.set(ns + "k", b"v", 60)),
            ("delete", lambda: broken.delete(ns + "k")),
            ("clear", lambda: broken.clear(ns)),
        ]
        if isinstance(broken, SupportsTTL):
            calls.append(("ttl", lambda: broken.ttl(ns + "k")))
        if isinstance(broken, SupportsAdd):
            calls.append(("add", lambda: broken.add(ns + "k", b"v", 60)))
        if isinstance(broken, SupportsLock):
            calls.append(("acquire_lock", lambda: broken.acquire_lock(ns + "l", "t", 1.0)))
        if isinstance(broken, SupportsStamps):
            calls.append(("read_stamped", lambda: broken.read_stamped(ns + "k", [ns + "!s:a"])))
            calls.append(("write_stamps", lambda: broken.write_stamps({ns + "!s:a": b"t" * 8}, 60)))
        try:
            for name, call in calls:
                try:
                    await call()
                except BackendError:
                    continue
                except Exception as exc:
                    pytest.fail(
                        f"{name}() against {unreachable_url!r} raised {type(exc).__name__}: {exc}; "
                        "re-raise driver errors as cacheframe.BackendError (raise ... from exc)",
                        pytrace=False,
                    )
                pytest.fail(f"{name}() against {unreachable_url!r} raised nothing", pytrace=False)
        finally:
            with contextlib.suppress(BackendError):
                await broken.close()

    def test_each_event_loop_gets_its_own_connections(
        self, backend_factory: BackendFactory, backend_url: str
    ) -> None:
        """One backend serves several event loops, one after another and side by side."""
        backend = self._fresh(backend_factory, backend_url)
        key = _ns() + "loops"
        first = asyncio.new_event_loop()
        try:
            self._run(first, backend.set(key, b"first", 60), "set() in the first loop")

            def other() -> bytes | None:
                loop = asyncio.new_event_loop()
                try:
                    got = self._run(loop, backend.get(key), "get() in a second loop")
                    self._run(loop, backend.set(key, b"second", 60), "set() in a second loop")
                    return got  # type: ignore[no-any-return]
                finally:
                    loop.close()  # closed without backend.close(): its connections must be let go

            results: list[Any] = []
            thread = threading.Thread(target=lambda: results.append(_outcome(other)))
            thread.start()
            thread.join(4 * self.call_timeout)
            assert results, "a second event loop in another thread never finished"
            assert results[0] == ("ok", b"first"), results[0]
            assert self._run(first, backend.get(key), "get() back in the first loop") == b"second"
            self._run(first, backend.delete(key), "delete()")
            self._run(first, backend.close(), "close()")
        finally:
            first.close()

    def test_usable_after_fork(self, backend_factory: BackendFactory, backend_url: str) -> None:
        """A forked child, on the same event loop object, works over connections of its own."""
        if not hasattr(os, "fork"):
            pytest.skip("no os.fork on this platform")
        backend = self._fresh(backend_factory, backend_url)
        key = _ns() + "fork"
        loop = asyncio.new_event_loop()
        try:
            self._run(loop, backend.set(key, b"parent", 60), "set() before fork")
            read_end, write_end = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: report through the pipe, never return into pytest
                os.close(read_end)
                report = "the child crashed"
                try:
                    got = loop.run_until_complete(asyncio.wait_for(backend.get(key), self.call_timeout))
                    report = "ok" if got == b"parent" else f"get() returned {got!r}, not b'parent'"
                except BaseException as exc:
                    report = f"get() raised {type(exc).__name__}: {exc}"
                finally:
                    os.write(write_end, report.encode()[:4000])
                    os._exit(0)
            os.close(write_end)
            try:
                _wait_child(pid, 4 * self.call_timeout)
                with os.fdopen(read_end, "rb") as pipe:
                    report = pipe.read().decode(errors="replace")
            except BaseException:
                os.close(read_end)
                raise
            assert report == "ok", f"after fork, in the child: {report}"
            assert self._run(loop, backend.get(key), "get() in the parent after fork") == b"parent"
            self._run(loop, backend.delete(key), "delete()")
            self._run(loop, backend.close(), "close()")
        finally:
            loop.close()

    # -- optional capabilities --------------------------------------------------------

    @staticmethod
    def _require(store: Any, capability: type) -> None:
        if not isinstance(store, capability):
            pytest.skip(f"backend does not declare {capability.__name__}")

    @async_test
    async def test_remaining_ttl(self, store: Backend, ns: str) -> None:
        """SupportsTTL: remaining seconds, None when absent."""
        self._require(store, SupportsTTL)
        assert isinstance(store, SupportsTTL)
        await store.set(ns + "k", b"v", 100)
        left = await store.ttl(ns + "k")
        assert left is not None and 95 <= left <= 100
        assert await store.ttl(ns + "absent") is None

    @async_test
    async def test_add(self, store: Backend, ns: str) -> None:
        """SupportsAdd: set-if-absent is atomic under concurrency."""
        self._require(store, SupportsAdd)
        assert isinstance(store, SupportsAdd)
        results = await asyncio.gather(*(store.add(ns + "k", str(i).encode(), 60) for i in range(20)))
        assert results.count(True) == 1
        winner = results.index(True)
        assert await store.get(ns + "k") == str(winner).encode()

    @async_test
    async def test_lock(self, store: Backend, ns: str) -> None:
        """SupportsLock: one owner; a wrong token cannot release; the lease expires."""
        self._require(store, SupportsLock)
        assert isinstance(store, SupportsLock)
        assert await store.acquire_lock(ns + "lock", "a", 1.0) is True
        assert await store.acquire_lock(ns + "lock", "b", 1.0) is False
        assert await store.release_lock(ns + "lock", "b") is False
        assert await store.release_lock(ns + "lock", "a") is True
        assert await store.acquire_lock(ns + "lock", "b", EXPIRY_TTL) is True
        await asyncio.sleep(EXPIRY_WAIT)
        assert await store.acquire_lock(ns + "lock", "c", 1.0) is True

    @async_test
    async def test_lock_round_trips(self, store: Backend, ns: str) -> None:
        """SupportsLockRoundTrips: the combined calls act as their two halves would."""
        self._require(store, SupportsLockRoundTrips)
        assert isinstance(store, SupportsLockRoundTrips)
        lock, key = ns + "k:lock", ns + "k"
        assert await store.acquire_lock_and_get(lock, "a", 5.0, key) == (True, None)
        assert await store.acquire_lock_and_get(lock, "b", 5.0, key) == (False, None)
        assert await store.set_and_release_lock(key, b"v", 60, lock, "b") is False  # not b's lock
        assert await store.get(key) == b"v"  # the write happened all the same
        assert await store.acquire_lock_and_get(lock, "c", 5.0, key) == (False, b"v")  # a still holds it
        assert await store.set_and_release_lock(key, b"w", 60, lock, "a") is True
        assert await store.acquire_lock_and_get(lock, "c", 5.0, key) == (True, b"w")
        await store.release_lock(lock, "c")

    @async_test
    async def test_stamped_read(self, store: Backend, backend: Backend, ns: str) -> None:
        """SupportsStamps: ``[entry, *stamps]`` in the order asked, None for what is absent;
        the entry is what ``get`` reads; ``read_stamped_nowait`` (if offered) agrees."""
        self._require(store, SupportsStamps)
        assert isinstance(store, SupportsStamps)
        entry, a, b, absent = ns + "v:e", ns + "!s:r:a1", ns + "!s:t:b2", ns + "!s:t:c3"
        await store.set(entry, b"entry", 60)
        await store.write_stamps({a: b"A" * 8, b: b"B" * 8}, 60)
        assert await store.read_stamped(entry, [b, absent, a]) == [b"entry", b"B" * 8, None, b"A" * 8]
        assert await store.read_stamped(entry, []) == [await store.get(entry)] == [b"entry"]
        assert await store.read_stamped(ns + "v:absent", [a, a]) == [None, b"A" * 8, b"A" * 8]
        if isinstance(backend, SupportsStampsNowait):
            for stamps in ([b, absent, a], (b, absent, a), (b, absent, a)):  # a list, a tuple twice
                got, tokens = backend.read_stamped_nowait(entry, stamps)
                assert (got, list(tokens)) == (b"entry", [b"B" * 8, None, b"A" * 8])
        await store.write_stamps({}, 60)  # nothing to write is no error

    @async_test
    async def test_stamped_read_nowait_sees_every_change(
        self, store: Backend, backend: Backend, ns: str
    ) -> None:
        """SupportsStampsNowait: the same tuple of stamps read again reflects every change
        since (a store that hands out kept tokens must drop them): a write, a creation, a
        delete, a namespace clear and an expiry."""
        self._require(backend, SupportsStampsNowait)
        assert isinstance(backend, SupportsStampsNowait) and isinstance(store, SupportsStamps)
        entry, a, b, c = ns + "v:e", ns + "!s:r:a1", ns + "!s:t:b2", ns + "!s:t:c3"
        stamps = (a, b, c)

        def tokens() -> list[bytes | None]:
            return list(backend.read_stamped_nowait(entry, stamps)[1])

        await store.write_stamps({a: b"A" * 8, b: b"B" * 8}, 600)
        assert tokens() == tokens() == [b"A" * 8, b"B" * 8, None]
        await store.write_stamps({a: b"a" * 8}, 600)
        assert tokens() == [b"a" * 8, b"B" * 8, None]
        if isinstance(store, SupportsCreateStamps):
            await store.create_stamps({c: b"C" * 8}, 600)
            assert tokens() == [b"a" * 8, b"B" * 8, b"C" * 8]
        await store.delete(b)
        assert tokens()[1] is None
        await store.write_stamps({b: b"b" * 8}, EXPIRY_TTL)
        assert tokens()[1] == b"b" * 8
        await asyncio.sleep(EXPIRY_WAIT)
        assert tokens()[1] is None
        await store.clear(ns)
        assert tokens() == [None, None, None]

    @async_test
    async def test_write_stamps_replaces_and_expires(self, store: Backend, ns: str) -> None:
        """SupportsStamps: a write replaces a stamp; a stamp is gone after its ttl, one without stays."""
        self._require(store, SupportsStamps)
        assert isinstance(store, SupportsStamps)
        short, kept, forever = ns + "!s:r:1", ns + "!s:r:2", ns + "!s:g:3"
        await store.write_stamps({short: b"old-old-", kept: b"kept-kep"}, 600)
        await store.write_stamps({forever: b"forever-"}, None)
        await store.write_stamps({short: b"new-new-"}, EXPIRY_TTL)
        assert await store.read_stamped(ns + "e", [short, kept, forever]) == [
            None,
            b"new-new-",
            b"kept-kep",
            b"forever-",
        ]
        await asyncio.sleep(EXPIRY_WAIT)
        assert await store.read_stamped(ns + "e", [short, kept, forever]) == [
            None,
            None,
            b"kept-kep",
            b"forever-",
        ]

    @async_test
    async def test_stamps_and_entries_never_collide(self, store: Backend, ns: str) -> None:
        """SupportsStamps: stamps and entries share one key space, each key its own value;
        writing one never changes the other, look-alike keys included."""
        self._require(store, SupportsStamps)
        assert isinstance(store, SupportsStamps)
        entries = [f"{ns}k", f"{ns}k:s", f"{ns}!s:r", f"{ns}{{tag}}:k", f"{ns}" + "L" * 300]
        stamps = [
            f"{ns}k:!s:r:1",
            f"{ns}!s:r:1",
            f"{ns}!s:r:10",
            f"{ns}{{tag}}:!s",
            f"{ns}" + "L" * 299 + "M",
        ]
        for i, key in enumerate(entries):
            await store.set(key, f"entry-{i}".encode(), 60)
        await store.write_stamps({key: f"stamp-{i}".encode() for i, key in enumerate(stamps)}, 60)
        for i, key in enumerate(entries):
            await store.set(key, f"entry-{i}".encode(), 60)  # an entry written after the stamps
            got = await store.read_stamped(key, stamps)
            assert got == [f"entry-{i}".encode()] + [f"stamp-{j}".encode() for j in range(len(stamps))], key

    @async_test
    async def test_stats(self, store: Backend) -> None:
        """SupportsStats: a mapping of figures."""
        self._require(store, SupportsStats)
        assert isinstance(store, SupportsStats)
        stats = await store.stats()
        assert isinstance(dict(stats), dict) and stats


def _outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return ("ok", call())
    except BaseException as exc:  # reported by the test in the main thread
        return ("error", exc)


def _wait_child(pid: int, seconds: float) -> tuple[int, int]:
    """``os.waitpid`` with a bound: a child stuck past ``seconds`` is killed and the test fails."""
    import signal
    import time

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return done, status
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail(f"the forked child did not finish within {seconds:g} s", pytrace=False)
