"""Store-read ceiling: the ceiling's ``(n, k)`` view, plus one read through cacheframe's backend.

The view fetches the constant bytes with one ``backend.get`` (the same store call a
decorator hit makes: one Redis GET on the lane, one memcached ``gets``) and returns them
as a plain ``Response``. No in-handler cache over this store can beat it: it has no key
to build, no entry to decode, no headers to add. Comparing the decorator path with it
isolates what cacheframe adds on top of the store round trip.
"""

from fastapi import Response

from apps.common import CACHEFRAME_URL, PAYLOAD, PREFIX, make_app
from cacheframe.registry import load_backend_factory

backend = load_backend_factory(CACHEFRAME_URL).from_url(CACHEFRAME_URL)
KEYS = [f"{PREFIX}:ceiling:{k}" for k in range(1000)]

app = make_app()


@app.get("/items")
async def items(n: int = 100, k: int = 0) -> Response:
    body = await backend.get(KEYS[k % len(KEYS)])
    if body is None:  # first request for k (the warm-up): store the bytes
        await backend.set(KEYS[k % len(KEYS)], PAYLOAD, None)
        body = PAYLOAD
    return Response(body, media_type="application/json")
