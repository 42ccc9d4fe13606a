"""Check the store your app uses with cacheframe's backend conformance suite.

Run against the store's URL: ``pytest examples/test_store.py --cacheframe-url redis://127.0.0.1:6379/0``
(``--cacheframe-url`` is the option the cacheframe pytest plugin adds to every run).
It tests bytes round trips, TTLs, clears, deadlines and errors on the real server.
"""

# --8<-- [start:suite]
from cacheframe.testing import BackendConformance


class TestStore(BackendConformance):
    """The whole suite, against the URL given with --cacheframe-url."""


# --8<-- [end:suite]
