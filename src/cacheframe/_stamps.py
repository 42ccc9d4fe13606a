"""Stamps: what makes an invalidation exact, O(1) and race-safe across processes.

Every entry depends on a few *stamps*, each a random token under a key of its own:
the cache's prefix (``g``), the decorated function's namespace (``n``), its
*resource* (``r``: a view's path parameters, or a function's arguments) and each
tag (``t``, with a soft twin ``u``). An entry seals the tokens it was computed
under (:class:`~cacheframe.envelope.Seal`) and is valid only while every stamp
still holds its token. Invalidating replaces a stamp: one write, whatever the
number of entries.

- **Race-safe.** The tokens sealed into an entry are those read with the lookup,
  *before* the computation starts. An invalidation made while it runs replaces a
  token the entry sealed, so the entry reads as invalid when it lands, in every
  process sharing the store.
- **Eviction-safe.** A stamp that is missing (evicted, expired, a restarted
  store) never validates anything: its entries are misses. A miss that finds a
  stamp missing writes a fresh token before computing.
- **Soft.** A soft invalidation replaces a tag's soft token only: its entries
  are then stale, served while one refresh runs.
- **Exact.** Stamp keys are digests of the tag or parameters, so ``item:1``
  never reaches ``item:10``.
- **Buckets.** On a store that spreads keys over shards (Redis Cluster, with
  :class:`~cacheframe.types.SupportsStampBuckets`) each stamp is kept in one copy per
  bucket, and each entry lives in one bucket (:meth:`StampKeys.place`): its key and
  the copies of its stamps share a prefix, so a hit reads one shard. An invalidation
  replaces every copy that exists; a copy that does not exist validates nothing, so
  it stays absent until a miss in its bucket creates it. Elsewhere there is one
  bucket, ``""``, and keys are as they always were.
"""

from __future__ import annotations

import contextvars
import hashlib
import secrets
import zlib
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from . import keys
from ._memo import BytesMemo
from .exceptions import ConfigurationError

__all__ = [
    "MAX_TAGS",
    "MAX_TAG_BYTES",
    "Deps",
    "StampKeys",
    "check_tag",
    "collect",
    "collecting",
    "new_tokens",
    "tag",
]

TOKEN_BYTES = 8
STAMP_TTL = 7 * 24 * 3600.0  # a stamp outlives its entries; an expired one only causes misses
MAX_TAGS = 32  # per entry
MAX_TAG_BYTES = 200  # per tag name, UTF-8
_DEPS_MEMO_BYTES = 4 * 1024 * 1024


class Deps(NamedTuple):
    """The stamps one lookup depends on: ``hard`` keys (prefix, namespace, resource, tags),
    then the tags' ``soft`` keys; ``digest`` names the set (sealed into the entry); ``keys``
    is both, in the order of a stamped read's tokens; ``bucket``: the prefix of the entry's
    key and of these copies of the stamps (``""`` without buckets)."""

    hard: tuple[str, ...]
    soft: tuple[str, ...]
    digest: bytes
    keys: tuple[str, ...]  # hard, soft (then the tag epoch): the order of a stamped read's tokens
    bucket: str = ""


def new_tokens(n: int) -> list[bytes]:
    """``n`` fresh random tokens."""
    return [secrets.token_bytes(TOKEN_BYTES) for _ in range(n)]


def check_tag(tag: str) -> str:
    """``tag`` if it is a usable tag name, else ConfigurationError saying why."""
    if not isinstance(tag, str) or not tag:
        raise ConfigurationError(f"a tag is a non-empty string, got {tag!r}")
    if len(tag.encode("utf-8", "surrogatepass")) > MAX_TAG_BYTES:
        raise ConfigurationError(f"tag {tag[:40]!r}... is longer than {MAX_TAG_BYTES} bytes")
    return tag


class StampKeys:
    """The stamp keys of one cache (its prefix), the store's buckets (``("",)``: none), and
    the memo of the dependency sets it built. Stamp keys are logical (one per stamp); a
    bucket's copy is the bucket prefix followed by that key."""

    def __init__(self, prefix: str, buckets: tuple[str, ...] = ("",)) -> None:
        self.buckets = buckets
        self.bucketed = len(buckets) > 1
        self._width = len(buckets[0])
        self._base = f"{prefix}:!s:"
        self.global_key = self._key("g", b"")
        # Replaced by every tag invalidation, before the tags' own stamps: a computation that
        # tags its result reads it before it starts and again after, and stores nothing if
        # it changed (a tag it only learns from its result may have been invalidated meanwhile).
        self.epoch_key = self._key("e", b"")
        self._deps: BytesMemo[tuple[Any, ...], Deps] = BytesMemo(_DEPS_MEMO_BYTES)

    def place(self, key: str) -> str:
        """The store key of the entry ``key``: in its bucket (a stable hash of ``key`` picks
        it) where the store has buckets, else ``key`` itself."""
        if not self.bucketed:
            return key
        buckets = self.buckets
        return buckets[zlib.crc32(key.encode("utf-8", "surrogatepass")) % len(buckets)] + key

    def bucket_of(self, key: str) -> str:
        """The bucket of a store key made by :meth:`place` (``""`` without buckets)."""
        return key[: self._width]

    def _key(self, kind: str, identity: bytes) -> str:
        return f"{self._base}{kind}:{hashlib.blake2b(identity, digest_size=16).hexdigest()}"

    def namespace(self, namespace: str) -> str:
        """The stamp of every entry under the store namespace ``namespace``."""
        return self._key("n", namespace.encode("utf-8", "surrogatepass"))

    def resource(self, namespace: str, identity: bytes) -> str:
        """The stamp of one resource of a namespace (a view's path parameters, a function's
        arguments, as canonical bytes)."""
        return self._key("r", namespace.encode("utf-8", "surrogatepass") + b"\0" + identity)

    def tag(self, tag: str) -> tuple[str, str]:
        """The hard and soft stamps of ``tag``."""
        name = tag.encode("utf-8", "surrogatepass")
        return self._key("t", name), self._key("u", name)

    def params_identity(self, params: Mapping[str, Any]) -> bytes:
        """Canonical bytes of named parameters (sorted by name)."""
        return keys.canonical(sorted(params.items()))

    def deps(
        self,
        namespace: str,
        resource: bytes | None,
        tags: Iterable[str],
        epoch: bool = False,
        bucket: str = "",
    ) -> Deps:
        """The stamps of an entry of ``namespace`` for ``resource`` (None: none beyond the
        namespace) and ``tags``, their copies in ``bucket`` (the entry's); with ``epoch``, the
        tag epoch is read too (last in ``keys``, never sealed): the function tags its results.
        Memoised, since hot keys repeat."""
        tag_names = tuple(tags)
        memo_key = (namespace, resource, tag_names, epoch, bucket)
        known = self._deps.get(memo_key)
        if known is not None:
            return known
        hard = [bucket + self.global_key, bucket + self.namespace(namespace)]
        if resource is not None:
            hard.append(bucket + self.resource(namespace, resource))
        soft = []
        for tag in tag_names:
            tag_hard, tag_soft = self.tag(tag)
            hard.append(bucket + tag_hard)
            soft.append(bucket + tag_soft)
        digest = hashlib.blake2b("\n".join(hard).encode(), digest_size=8).digest()
        epoch_keys = (bucket + self.epoch_key,) if epoch else ()
        made = Deps(tuple(hard), tuple(soft), digest, (*hard, *soft, *epoch_keys), bucket)
        size = sum(len(k) for k in hard) * 2 + len(namespace) + len(resource or b"") + 200
        self._deps.put(memo_key, made, size)
        return made


# The tags a computation running in this context took from its result (None: no computation
# of a cached function is running here).
_RESULT_TAGS: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "cacheframe_result_tags", default=None
)


def tag(*names: str) -> None:
    """Tag the entry being computed (call it inside a cached view or function): it is then
    invalidated by ``invalidate_tags`` of any of ``names``. Outside a cached computation (a
    call that bypasses the cache, say) it does nothing."""
    collected = _RESULT_TAGS.get()
    if collected is not None:  # checked when the entry is sealed: a bad one only skips storing
        collected.extend(names)


def collect() -> tuple[list[str], contextvars.Token[list[str] | None]]:
    """Start collecting the result tags of a computation in this context."""
    collected: list[str] = []
    return collected, _RESULT_TAGS.set(collected)


def stop_collecting(token: contextvars.Token[list[str] | None]) -> None:
    """Stop collecting (``collect``'s token). The tags collected also tag the computation this
    one ran inside, if any: a cached view built from a cached helper depends on what the
    helper's result depends on."""
    inner = _RESULT_TAGS.get()
    _RESULT_TAGS.reset(token)
    if inner:
        outer = _RESULT_TAGS.get()
        if outer is not None:
            outer.extend(inner)


def collecting() -> list[str] | None:
    """The tags of the computation running in this context (None: none runs)."""
    return _RESULT_TAGS.get()
