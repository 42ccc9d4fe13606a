"""A FastAPI app exercising the decorator's cases; each view counts its calls."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Cookie, Depends, FastAPI, Header, Request, Response, Security
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse
from fastapi.security import HTTPBearer
from pydantic import BaseModel

from cacheframe import cache

calls: collections.Counter[str] = collections.Counter()


class Item(BaseModel):
    id: int
    name: str


class ItemWithSecret(Item):
    secret: str = "hidden"


class DBSession:
    """Stands for a database session: a new object per request, not keyable."""

    def __init__(self) -> None:
        self.items = {1: "one", 2: "two"}


def get_db() -> Iterator[DBSession]:
    yield DBSession()


def current_locale(accept_language: Annotated[str | None, Header()] = None) -> str:
    return accept_language or "en"


bearer = HTTPBearer(auto_error=False)


def session_user(request: Request) -> str:
    """A hand-written security dependency: identifies the user from a cookie."""
    return request.cookies.get("sid", "anon")


class TenantHeaders(BaseModel):
    x_tenant: str | None = None


class ThemeCookies(BaseModel):
    theme: str | None = None


def request_id(response: Response) -> None:
    """A dependency setting a per-request header on the shared Response."""
    calls["request_id"] += 1
    response.headers["X-Request-Id"] = str(calls["request_id"])


def build_app() -> FastAPI:
    app = FastAPI()
    router = APIRouter(prefix="/r")

    @app.get("/items", response_model=list[Item])
    @cache(ttl=60)
    async def items(n: int = 2, tag: str = "x") -> list[ItemWithSecret]:
        """List items."""
        calls["items"] += 1
        return [ItemWithSecret(id=i, name=f"{tag}{i}") for i in range(n)]

    @app.get("/annotated")
    @cache(ttl=60)
    async def annotated() -> Item:
        calls["annotated"] += 1
        return ItemWithSecret(id=1, name="a")  # the return annotation filters 'secret' out

    @app.get("/sync")
    @cache(ttl=60)
    def sync_view(q: str = "a") -> dict[str, str]:
        calls["sync"] += 1
        return {"q": q}

    @app.get("/own-request")
    @cache(ttl=60)
    async def own_request(req: Request, resp: Response) -> dict[str, str]:
        calls["own_request"] += 1
        resp.headers["x-seen-path"] = req.url.path
        return {"path": req.url.path}

    @app.get("/sync-own-response")
    @cache(ttl=60)
    def sync_own_response(out: Response) -> dict[str, int]:
        calls["sync_own_response"] += 1
        out.headers["x-from-view"] = "yes"
        return {"ok": 1}

    @app.get("/db/{item_id}")
    @cache(ttl=60)
    async def with_db(item_id: int, db: Annotated[DBSession, Depends(get_db)]) -> dict[str, str]:
        calls["db"] += 1
        return {"item": db.items[item_id]}

    @app.get("/header-param")
    @cache(ttl=60)
    async def header_param(x_tenant: Annotated[str | None, Header()] = None) -> dict[str, str | None]:
        calls["header_param"] += 1
        return {"tenant": x_tenant}

    @app.get("/dep-header")
    @cache(ttl=60)
    async def dep_header(locale: Annotated[str, Depends(current_locale)]) -> dict[str, str]:
        calls["dep_header"] += 1
        return {"locale": locale}

    @app.get("/cookie-param")
    @cache(ttl=60)
    async def cookie_param(theme: Annotated[str | None, Cookie()] = None) -> dict[str, str | None]:
        calls["cookie_param"] += 1
        return {"theme": theme}

    @app.get("/vary")
    @cache(ttl=60, vary=["X-Region"])
    async def vary(request: Request) -> dict[str, str | None]:
        calls["vary"] += 1
        return {"region": request.headers.get("x-region")}

    @app.get("/private")
    @cache(ttl=60, private=True)
    async def private(request: Request) -> dict[str, str | None]:
        calls["private"] += 1
        return {"user": request.headers.get("authorization")}

    @app.get("/secured")
    @cache(ttl=60)
    async def secured(token: Annotated[object, Depends(bearer)]) -> dict[str, bool]:
        calls["secured"] += 1
        return {"ok": True}

    @app.get("/scoped")
    @cache(ttl=60)
    async def scoped(user: Annotated[str, Security(session_user, scopes=["me"])]) -> dict[str, str]:
        calls["scoped"] += 1
        return {"user": user}

    @app.get("/header-model")
    @cache(ttl=60)
    async def header_model(h: Annotated[TenantHeaders, Header()]) -> dict[str, str | None]:
        calls["header_model"] += 1
        return {"tenant": h.x_tenant}

    @app.get("/cookie-model")
    @cache(ttl=60)
    async def cookie_model(c: Annotated[ThemeCookies, Cookie()]) -> dict[str, str | None]:
        calls["cookie_model"] += 1
        return {"theme": c.theme}

    @app.get("/host")
    @cache(ttl=60)
    async def host(request: Request) -> dict[str, str]:
        calls["host"] += 1
        return {"link": str(request.url_for("host"))}

    @app.get("/dep-header-set")
    @cache(ttl=60)
    async def dep_header_set(_: Annotated[None, Depends(request_id)]) -> dict[str, bool]:
        calls["dep_header_set"] += 1
        return {"ok": True}

    @app.get("/raises/{code}")
    @cache(ttl=60)
    async def raises(code: int) -> dict[str, int]:
        from fastapi import HTTPException

        raise HTTPException(code)

    @app.get("/vary-auth")
    @cache(ttl=60, vary=["Authorization"])
    async def vary_auth(request: Request) -> dict[str, str | None]:
        calls["vary_auth"] += 1
        return {"auth": request.headers.get("authorization")}

    @app.get("/td")
    @cache(ttl=timedelta(seconds=30))
    async def td() -> dict[str, int]:
        calls["td"] += 1
        return {"ok": 1}

    @app.get("/plain")
    @cache(ttl=60)
    async def plain() -> dict[str, int]:
        calls["plain"] += 1
        return {"n": calls["plain"]}

    @app.get("/created", status_code=201)
    @cache(ttl=60)
    async def created() -> dict[str, bool]:
        calls["created"] += 1
        return {"created": True}

    @app.get("/html", response_class=HTMLResponse)
    @cache(ttl=60)
    async def html() -> str:
        calls["html"] += 1
        return "<h1>hi</h1>"

    @app.get("/text", response_class=PlainTextResponse)
    @cache(ttl=60)
    def text() -> str:
        calls["text"] += 1
        return "plain text"

    @app.get("/status/{code}")
    @cache(ttl=60)
    async def status(code: int, response: Response) -> dict[str, int]:
        calls[f"status{code}"] += 1
        response.status_code = code
        return {"code": code}

    @app.get("/json-response/{code}")
    @cache(ttl=60)
    async def json_response(code: int) -> JSONResponse:
        calls[f"json{code}"] += 1
        return JSONResponse({"code": code}, status_code=code)

    @app.get("/set-cookie")
    @cache(ttl=60)
    async def set_cookie(response: Response) -> dict[str, bool]:
        calls["set_cookie"] += 1
        response.set_cookie("session", "abc")
        return {"ok": True}

    @app.get("/own-cache-control/{value}")
    @cache(ttl=60)
    async def own_cache_control(value: str, response: Response) -> dict[str, str]:
        calls[f"cc-{value}"] += 1
        response.headers["Cache-Control"] = value
        return {"cc": value}

    @app.get("/vary-star")
    @cache(ttl=60)
    async def vary_star(response: Response) -> dict[str, bool]:
        calls["vary_star"] += 1
        response.headers["Vary"] = "*"
        return {"ok": True}

    @app.get("/vary-unkeyed")
    @cache(ttl=60)
    async def vary_unkeyed(response: Response) -> dict[str, bool]:
        calls["vary_unkeyed"] += 1
        response.headers["Vary"] = "Accept-Language"
        return {"ok": True}

    @app.get("/stream")
    @cache(ttl=60)
    async def stream() -> StreamingResponse:
        calls["stream"] += 1

        async def body() -> Iterator[bytes]:  # type: ignore[misc]
            yield b"chunk"

        return StreamingResponse(body())

    @app.get("/background")
    @cache(ttl=60)
    async def background(tasks: BackgroundTasks) -> dict[str, bool]:
        calls["background"] += 1
        tasks.add_task(lambda: calls.update(["background_task"]))
        return {"ok": True}

    @app.api_route("/both", methods=["GET", "HEAD"])
    @cache(ttl=60)
    async def both() -> dict[str, str]:
        calls["both"] += 1
        return {"payload": "x" * 20}

    @app.get("/short")
    @cache(ttl=2)
    async def short() -> dict[str, int]:
        calls["short"] += 1
        return {"n": calls["short"]}

    @router.get("/routed")
    @cache(ttl=60)
    async def routed(k: int = 0) -> dict[str, int]:
        calls["routed"] += 1
        return {"k": k}

    app.include_router(router)
    return app


def build_plain_app() -> FastAPI:
    """The same /items route without the decorator, for OpenAPI comparison."""
    app = FastAPI()

    @app.get("/items", response_model=list[Item])
    async def items(n: int = 2, tag: str = "x") -> list[ItemWithSecret]:
        """List items."""
        return []

    @app.get("/own-request")
    async def own_request(req: Request, resp: Response) -> dict[str, str]:
        return {}

    @app.get("/db/{item_id}")
    async def with_db(item_id: int, db: Annotated[DBSession, Depends(get_db)]) -> dict[str, str]:
        return {}

    return app
