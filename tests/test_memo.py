"""BytesMemo, and the memos built on it: a binding's URL keys and reply headers never mix entries."""

from __future__ import annotations

from typing import Any

import pytest

from cacheframe import _replies, keys
from cacheframe._memo import BytesMemo
from cacheframe.backends.memory import MemoryBackend
from engines import new_binding, new_engine, policy, response_entry


def test_holds_at_most_max_bytes() -> None:
    """However many values are put, the sizes kept never add up to more than ``max_bytes``."""
    memo: BytesMemo[int, str] = BytesMemo(100)
    for i in range(50):
        memo.put(i, str(i), 7 + i % 5)
        assert memo.nbytes <= 100
    assert memo.nbytes == sum(7 + i % 5 for i in range(50) if memo.get(i) is not None)


def test_drops_oldest_first() -> None:
    """Making room drops the values put earliest, one at a time, and no more than needed."""
    memo: BytesMemo[str, int] = BytesMemo(30)
    for name in "abc":
        memo.put(name, ord(name), 10)
    memo.put("d", 4, 10)
    assert memo.get("a") is None and [memo.get(k) for k in "bcd"] == [98, 99, 4]
    memo.put("e", 5, 20)
    assert memo.get("b") is None and memo.get("c") is None
    assert memo.get("d") == 4 and memo.get("e") == 5 and memo.nbytes == 30


def test_a_read_does_not_make_a_value_young() -> None:
    """The order is that of puts: reading the oldest value does not keep it (no LRU bookkeeping)."""
    memo: BytesMemo[str, int] = BytesMemo(20)
    memo.put("a", 1, 10)
    memo.put("b", 2, 10)
    assert memo.get("a") == 1
    memo.put("c", 3, 10)
    assert memo.get("a") is None and memo.get("b") == 2


def test_value_over_max_item_is_not_kept() -> None:
    """A value larger than ``max_item`` is not kept, and pushes nothing out to make room."""
    memo: BytesMemo[str, int] = BytesMemo(100, max_item=40)
    memo.put("small", 1, 40)
    memo.put("large", 2, 41)
    assert memo.get("large") is None and memo.get("small") == 1 and memo.nbytes == 40


def test_max_item_defaults_to_and_is_capped_by_max_bytes() -> None:
    """Without ``max_item`` one value may fill the memo; a ``max_item`` over the bound is cut to it."""
    assert BytesMemo[str, int](64).max_item == 64
    assert BytesMemo[str, int](64, max_item=1000).max_item == 64


def test_replacing_a_key_updates_nbytes() -> None:
    """Putting a key again replaces its value and size, and makes it the youngest."""
    memo: BytesMemo[str, int] = BytesMemo(30)
    memo.put("a", 1, 10)
    memo.put("b", 2, 10)
    memo.put("a", 3, 15)
    assert memo.get("a") == 3 and memo.nbytes == 25 and len(memo) == 2
    memo.put("c", 4, 5)
    memo.put("d", 5, 5)  # room is made from the oldest: "b", not the replaced "a"
    assert memo.get("b") is None and memo.get("a") == 3


def test_replacing_with_a_value_over_max_item_forgets_the_old_one() -> None:
    """A key whose new value is too large to keep no longer answers with its old value."""
    memo: BytesMemo[str, int] = BytesMemo(100, max_item=10)
    memo.put("a", 1, 10)
    memo.put("a", 2, 11)
    assert memo.get("a") is None and memo.nbytes == 0 and len(memo) == 0


def test_clear_forgets_everything() -> None:
    """``clear`` empties the memo and its byte count; it is usable afterwards."""
    memo: BytesMemo[str, int] = BytesMemo(100)
    memo.put("a", 1, 10)
    memo.put("b", 2, 10)
    memo.clear()
    assert memo.get("a") is None and len(memo) == 0 and memo.nbytes == 0
    memo.put("c", 3, 100)
    assert memo.get("c") == 3


# -- a binding's memo of URL keys ------------------------------------------------------------

_BASE: dict[str, Any] = {
    "method": "GET",
    "scheme": "http",
    "host": "example.com",
    "root_path": "",
    "path": "/items",
    "query_string": b"a=1",
}
_ONE_FIELD_CHANGED = [
    {"method": "POST"},
    {"scheme": "https"},
    {"host": "example.org"},
    {"host": "Example.com"},
    {"root_path": "/api"},
    {"path": "/items/"},
    {"query_string": b"a=2"},
    {"query_string": b"a=1&"},
    {"query_string": b""},
    {"root_path": "/items", "path": ""},  # the same bytes joined differently
    {"path": "/items?a=1", "query_string": b""},
]


def _url_key(memo: Any, namespace: str, fields: dict[str, Any]) -> tuple[str, str]:
    """The key ``url_key`` answers through ``memo``, and the key computed afresh."""
    scope, host = {k: v for k, v in fields.items() if k != "host"}, fields["host"]
    return keys.url_key(memo, namespace, scope, host), keys.view_key(namespace, scope, host)


@pytest.mark.parametrize("change", _ONE_FIELD_CHANGED, ids=lambda c: ",".join(c))
def test_url_key_memo_never_mixes_requests(change: dict[str, Any]) -> None:
    """Requests differing in one URL field get their own key through the memo, before and after
    the other was memoised, and the key is always the one computed without the memo."""
    binding = new_binding(new_engine(MemoryBackend()))
    other = {**_BASE, **change}
    base_key, base_fresh = _url_key(binding.url_keys, binding.namespace, _BASE)
    other_key, other_fresh = _url_key(binding.url_keys, binding.namespace, other)
    assert base_key == base_fresh and other_key == other_fresh and base_key != other_key
    assert len(binding.url_keys) == 2
    assert _url_key(binding.url_keys, binding.namespace, _BASE)[0] == base_key
    assert _url_key(binding.url_keys, binding.namespace, other)[0] == other_key


def test_url_key_memo_keeps_head_and_get_apart_yet_gives_one_key() -> None:
    """HEAD shares GET's store key, yet the memo keeps the two methods under their own slots."""
    binding = new_binding(new_engine(MemoryBackend()))
    get_key, _ = _url_key(binding.url_keys, binding.namespace, _BASE)
    head_key, head_fresh = _url_key(binding.url_keys, binding.namespace, {**_BASE, "method": "HEAD"})
    assert head_key == head_fresh == get_key and len(binding.url_keys) == 2


def test_url_key_memo_skips_long_urls() -> None:
    """A URL longer than the memo's limit is keyed afresh each time and not kept."""
    binding = new_binding(new_engine(MemoryBackend()))
    long = {**_BASE, "query_string": b"q=" + b"x" * 4000}
    key, fresh = _url_key(binding.url_keys, binding.namespace, long)
    assert key == fresh and len(binding.url_keys) == 0


# -- a binding's memo of reply headers ---------------------------------------------------------


def test_reply_headers_follow_the_entry_of_the_key() -> None:
    """A key's memoised headers are not served for another entry under the same key."""
    binding = new_binding(new_engine(MemoryBackend()))
    first, second = response_entry(etag=b'"one"'), response_entry(etag=b'"two"')
    assert (b"etag", b'"one"') in _replies.hit_headers(binding, "k", first, 3)
    headers = _replies.hit_headers(binding, "k", second, 3)
    assert (b"etag", b'"two"') in headers and (b"etag", b'"one"') not in headers


def test_reply_headers_follow_the_age() -> None:
    """The same entry a second older gets headers with its own Age, then the first again."""
    binding = new_binding(new_engine(MemoryBackend()))
    entry = response_entry()
    assert (b"age", b"3") in _replies.hit_headers(binding, "k", entry, 3)
    assert (b"age", b"4") in _replies.hit_headers(binding, "k", entry, 4)
    assert (b"age", b"3") in _replies.hit_headers(binding, "k", entry, 3)


def test_reply_headers_of_two_keys_stay_apart() -> None:
    """Two keys, each with its entry: each gets its own entry's headers, whatever the order."""
    binding = new_binding(new_engine(MemoryBackend()))
    one, two = response_entry(etag=b'"one"'), response_entry(etag=b'"two"')
    for _ in range(2):
        assert (b"etag", b'"one"') in _replies.hit_headers(binding, "k1", one, 0)
        assert (b"etag", b'"two"') in _replies.hit_headers(binding, "k2", two, 0)


def test_reply_headers_are_a_copy() -> None:
    """A caller editing the list it got (a middleware adding a header) does not edit the memo."""
    binding = new_binding(new_engine(MemoryBackend()))
    entry = response_entry()
    headers = _replies.hit_headers(binding, "k", entry, 0)
    headers.append((b"x-added", b"1"))
    assert (b"x-added", b"1") not in _replies.hit_headers(binding, "k", entry, 0)


def test_reply_headers_match_a_reply_built_without_the_memo() -> None:
    """The memoised headers are exactly those of ``reply`` for a plain hit."""
    binding = new_binding(new_engine(MemoryBackend()))
    entry = response_entry()
    _replies.hit_headers(binding, "k", entry, 2)
    status, headers, body = _replies.reply(binding, entry, b"HIT", 2, None, False)
    assert (status, body) == (200, b"body")
    assert _replies.hit_headers(binding, "k", entry, 2) == headers


def test_url_key_memo_is_one_budget_per_cache_and_keeps_namespaces_apart() -> None:
    """Every binding of an engine shares its URL-key memo (one byte bound per cache, however
    many functions are decorated), and the namespace is a field of the memo's key: two views
    asked for the same URL get their own store keys."""
    engine = new_engine(MemoryBackend())
    first = engine.bind(policy(), "mod.first", "", True)
    second = engine.bind(policy(), "mod.second", "", True)
    assert first.url_keys is second.url_keys is engine.url_keys
    assert first.replies is second.replies is engine.replies
    key_one, _ = _url_key(first.url_keys, first.namespace, _BASE)
    key_two, fresh = _url_key(second.url_keys, second.namespace, _BASE)
    assert key_two == fresh and key_one != key_two and len(engine.url_keys) == 2
