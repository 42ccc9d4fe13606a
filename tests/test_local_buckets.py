"""The in-process tier forgets copies under a cleared prefix in every stamp bucket too (a
cluster's entry keys start with their bucket's hash tag)."""

from __future__ import annotations

import time

from cacheframe._local import LocalTier
from cacheframe.backends.memory import MemoryBackend
from cacheframe.settings import CacheSettings
from cacheframe.stats import CacheStats


def test_a_prefix_drop_reaches_copies_in_every_bucket() -> None:
    settings = CacheSettings(local_max_entries=100, local_ttl=60)
    tier = LocalTier(MemoryBackend(), settings, CacheStats(), "test")
    until = time.time() + 60
    for key in ("p:ns:a", "{s03~0001}p:ns:b", "{s20~00ff}p:ns:c", "{s03~0001}p:other:d", "p:nsx:e"):
        tier.fill(tier.applied, key, b"v", until, (), ())
    tier.drop(["p:ns:*"])
    assert sorted(tier._values) == ["p:nsx:e", "{s03~0001}p:other:d"]
    tier.drop(["{s03~0001}p:other:d"])
    assert list(tier._values) == ["p:nsx:e"]
