"""Per-user caching: each user's answer is cached apart from everyone else's.

Run: ``uvicorn examples.per_user:app``, then
``curl -si localhost:8000/me -H 'Authorization: Bearer alice'`` twice (MISS, then HIT)
and with ``Bearer bob`` (MISS: another user, another entry).

``private=True`` adds the request's Authorization and Cookie headers (hashed) to the
key and answers ``Cache-Control: private``, so shared proxies do not keep it.
Without it, a route that reads credentials is never cached (it would mix users).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

import cacheframe

# --8<-- [start:app]
app = FastAPI(lifespan=cacheframe.lifespan)
bearer = HTTPBearer()
computed: list[str] = []  # which users' answers were computed (not served from the cache)


@app.get("/me")
@cacheframe.cache(ttl=60, private=True)
async def me(credentials: Annotated[HTTPAuthorizationCredentials, Depends(bearer)]) -> dict[str, str]:
    """The calling user's profile; a real app would check the token and load the user here."""
    computed.append(credentials.credentials)
    return {"user": credentials.credentials}


# --8<-- [end:app]


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app)
