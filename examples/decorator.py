"""The decorator's options on a view, and where other decorators go.

Run: ``uvicorn examples.decorator:app``. ``/items`` is keyed on ``Accept-Language``
(and says so in ``Vary``). ``/members`` checks the caller's scope on every request,
hits included, because ``@requires`` sits between the route decorator and ``@cache``;
its answer is the same for every member, so one entry serves them all.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from pydantic import BaseModel
from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser, requires
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection

from cacheframe import cache, lifespan


class Item(BaseModel):
    """One catalogue item."""

    id: int
    name: str


class RoleHeader(AuthenticationBackend):
    """Demo authentication: the ``X-Role`` header is the caller's scope (use real auth in an app)."""

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser] | None:
        role = conn.headers.get("x-role")
        return (AuthCredentials([role]), SimpleUser(role)) if role else None


app = FastAPI(lifespan=lifespan)
app.add_middleware(AuthenticationMiddleware, backend=RoleHeader())


# --8<-- [start:options]
@app.get("/items", response_model=list[Item])
@cache(ttl=60, vary=["Accept-Language"])
async def items(n: int = 10) -> list[dict[str, object]]:
    return [{"id": i, "name": f"item {i}"} for i in range(n)]


# --8<-- [end:options]
# --8<-- [start:order]
@app.get("/members")
@requires("member")  # runs on hits too
@cache(ttl=60)
async def members(request: Request) -> dict[str, str]:
    return {"news": "members only"}


# --8<-- [end:order]
