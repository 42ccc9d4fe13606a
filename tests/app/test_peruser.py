"""Per-user data stays per user (issue 10, part 3), through the app, on every backend.

``private=True`` keys every security scheme's credential; a cookie set during the
request keeps the response out of the store whatever the view returns; per-user
state read outside the declared parameters is never shared; per-user replies say
``Cache-Control: private``.
"""

import collections
import logging
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI, Request, Response, Security
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import (
    APIKeyCookie,
    APIKeyHeader,
    APIKeyQuery,
    HTTPAuthorizationCredentials,
    HTTPBasic,
    HTTPBasicCredentials,
    HTTPBearer,
    OAuth2PasswordBearer,
    OpenIdConnect,
)
from fastapi.security.base import SecurityBase
from fastapi.testclient import TestClient
from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

import cacheframe
from cacheframe import _peruser, fastpath

pytestmark = pytest.mark.usefixtures("app_cache")

runs: collections.Counter[str] = collections.Counter()


def _text(value: Any) -> str:
    """Whatever a scheme returned, as text the view can echo."""
    if isinstance(value, HTTPAuthorizationCredentials):
        return value.credentials
    if isinstance(value, HTTPBasicCredentials):
        return value.username
    return str(value)


class HeaderUser(AuthenticationBackend):
    """Authenticates the user named in X-User (an unkeyed header: only the backend reads it)."""

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser] | None:
        name = conn.headers.get("x-user")
        return None if name is None else (AuthCredentials(["me"]), SimpleUser(name))


class TrackedSession(dict[str, Any]):
    """A session marking itself accessed on ``request.session``, as Starlette's Session does."""

    accessed = False

    def mark_accessed(self) -> None:
        self.accessed = True


class CookieSessions:
    """A session middleware in the manner of Starlette's: the session follows the ``sid`` cookie."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sid = HTTPConnection(scope).cookies.get("sid")
        scope["session"] = TrackedSession({} if sid is None else {"user": sid})
        await self.app(scope, receive, send)


class CustomScheme(SecurityBase):
    """A hand-written scheme: cacheframe cannot tell where its credential travels."""

    def __init__(self) -> None:
        self.scheme_name = "custom"

    async def __call__(self, request: Request) -> str:
        return request.headers.get("x-custom", "")


class OddHeader(APIKeyHeader):
    """FastAPI's APIKeyHeader, but reading another header than the one it declares."""

    async def __call__(self, request: HTTPConnection) -> str | None:  # type: ignore[override]
        return request.headers.get("x-odd")


SCHEMES: dict[str, tuple[Any, dict[str, Any], dict[str, Any]]] = {
    # name: (scheme, Alice's request kwargs, Bob's)
    "api-key-header": (
        APIKeyHeader(name="X-API-Key"),
        {"headers": {"X-API-Key": "alice"}},
        {"headers": {"X-API-Key": "bob"}},
    ),
    "api-key-cookie": (APIKeyCookie(name="key"), {"cookies": {"key": "alice"}}, {"cookies": {"key": "bob"}}),
    "api-key-query": (
        APIKeyQuery(name="api_key"),
        {"params": {"api_key": "alice"}},
        {"params": {"api_key": "bob"}},
    ),
    "http-basic": (HTTPBasic(), {"auth": ("alice", "pw")}, {"auth": ("bob", "pw")}),
    "http-bearer": (
        HTTPBearer(),
        {"headers": {"Authorization": "Bearer alice"}},
        {"headers": {"Authorization": "Bearer bob"}},
    ),
    "oauth2": (
        OAuth2PasswordBearer(tokenUrl="token"),
        {"headers": {"Authorization": "Bearer alice"}},
        {"headers": {"Authorization": "Bearer bob"}},
    ),
    "openid-connect": (
        OpenIdConnect(openIdConnectUrl="https://id.example/.well-known"),
        {"headers": {"Authorization": "alice"}},
        {"headers": {"Authorization": "bob"}},
    ),
}


def scheme_app(
    scheme: Any, *, key_builder: Any = None, vary: tuple[str, ...] = (), private: bool = True
) -> FastAPI:
    """One route guarded by ``scheme``, echoing the credential it received."""
    app = FastAPI()

    @app.get("/me")
    @cacheframe.cache(ttl=60, private=private, vary=vary, key_builder=key_builder)
    async def me(credential: Annotated[Any, Security(scheme)]) -> dict[str, str]:
        runs["me"] += 1
        return {"user": _text(credential)}

    return app


def client_for(app: FastAPI) -> TestClient:
    runs.clear()
    return TestClient(app)


def send(client: TestClient, request: dict[str, Any]) -> Any:
    """GET /me with per-request cookies set on the client (and cleared afterwards)."""
    client.cookies.clear()
    for name, value in request.get("cookies", {}).items():
        client.cookies.set(name, value)
    kwargs = {k: v for k, v in request.items() if k != "cookies"}
    return client.get("/me", **kwargs)


# -- private=True keys every security scheme's credential -------------------------------------


@pytest.mark.parametrize("name", sorted(SCHEMES))
@pytest.mark.parametrize("custom_key", [False, True], ids=["url-key", "custom-key"])
def test_private_keys_every_scheme_credential(name: str, custom_key: bool) -> None:
    """private=True: each user gets their own entry, wherever the scheme's credential travels."""
    scheme, alice, bob = SCHEMES[name]
    builder = (lambda func, request, args, kwargs: "same-for-everyone") if custom_key else None
    client = client_for(scheme_app(scheme, key_builder=builder))
    first = send(client, alice)
    other = send(client, bob)
    again = send(client, alice)
    assert first.json() == again.json() == {"user": "alice"}
    assert other.json() == {"user": "bob"}, f"Bob received {other.json()}"
    assert (first.headers["x-cache"], other.headers["x-cache"], again.headers["x-cache"]) == (
        "MISS",
        "MISS",
        "HIT",
    )
    assert again.headers["cache-control"].startswith("private,")


def test_vary_authorization_on_api_key_route_keys_the_api_key() -> None:
    """vary=["Authorization"] on an APIKeyHeader route still keys the API key (never shared)."""
    client = client_for(scheme_app(APIKeyHeader(name="X-API-Key"), vary=("Authorization",), private=False))
    alice = client.get("/me", headers={"X-API-Key": "alice"})
    bob = client.get("/me", headers={"X-API-Key": "bob"})
    assert alice.json() == {"user": "alice"} and bob.json() == {"user": "bob"}
    assert runs["me"] == 2


OPAQUE = [CustomScheme(), OddHeader(name="X-API-Key")]


@pytest.mark.parametrize("scheme", OPAQUE, ids=["custom", "overridden"])
def test_private_with_unknown_credential_place_refused_at_decoration(scheme: Any) -> None:
    """private=True on a view depending on a scheme cacheframe cannot locate: a clear error."""

    def user(credential: Annotated[Any, Security(scheme)]) -> Any:
        return credential

    for options in ({"private": True}, {"vary": ["Authorization"]}):
        with pytest.raises(
            cacheframe.ConfigurationError, match=type(scheme).__name__ + ".*cannot tell where"
        ):

            @cacheframe.cache(ttl=60, **options)
            async def me(u: Annotated[Any, Depends(user)]) -> None: ...


@pytest.mark.parametrize("scheme", OPAQUE, ids=["custom", "overridden"])
def test_router_level_unknown_scheme_bypasses(scheme: Any, caplog: pytest.LogCaptureFixture) -> None:
    """A router-level scheme cacheframe cannot locate (seen only at request time): BYPASS, logged."""
    app = FastAPI(dependencies=[Depends(scheme)])

    @app.get("/me")
    @cacheframe.cache(ttl=60, private=True)
    async def me(request: Request) -> dict[str, str]:
        runs["me"] += 1
        return {"user": request.headers.get("x-custom") or request.headers.get("x-odd") or ""}

    client = client_for(app)
    with caplog.at_level(logging.WARNING, logger="cacheframe"):
        alice = client.get("/me", headers={"X-API-Key": "k", "X-Custom": "alice", "X-Odd": "alice"})
    bob = client.get("/me", headers={"X-API-Key": "k", "X-Custom": "bob", "X-Odd": "bob"})
    assert alice.headers["x-cache"] == bob.headers["x-cache"] == "BYPASS"
    assert bob.json() == {"user": "bob"} and runs["me"] == 2
    assert "cannot tell where its credential travels" in caplog.text


def test_wrapped_scheme_is_security_and_opaque() -> None:
    """A scheme reached through a wrapper counts as security (BYPASS) and cannot be keyed."""
    import functools

    inner = APIKeyHeader(name="X-API-Key")

    @functools.wraps(inner)
    async def wrapper(request: Request) -> str | None:
        return request.headers.get("x-other")

    client = client_for(scheme_app(wrapper, private=False))
    assert client.get("/me", headers={"X-Other": "alice"}).headers["x-cache"] == "BYPASS"
    with pytest.raises(cacheframe.ConfigurationError, match="APIKeyHeader"):
        scheme_app(wrapper)


def test_fast_path_never_serves_a_private_secured_route() -> None:
    """With the fast path installed, a private APIKeyHeader route is still keyed per user."""
    app = scheme_app(APIKeyHeader(name="X-API-Key"))
    fastpath.install(app)
    client = client_for(app)
    for user in ("alice", "bob", "alice", "bob"):
        assert client.get("/me", headers={"X-API-Key": user}).json() == {"user": user}
    assert runs["me"] == 2 and cacheframe.get_cache().stats.fast_hits == 0


# -- a cookie set during the request keeps the response out of the store ----------------------


def issue_token(response: Response) -> str:
    """A dependency starting a session: a fresh token, set as a cookie."""
    runs["token"] += 1
    token = f"token-{runs['token']}"
    response.set_cookie("session", token)
    return token


@pytest.mark.parametrize("returns", ["response", "data"])
def test_dependency_cookie_keeps_response_out_whatever_the_view_returns(returns: str) -> None:
    """A dependency's Set-Cookie keeps the response unstored, also when the view returns a Response."""
    app = FastAPI()

    @app.get("/login")
    @cacheframe.cache(ttl=60)
    async def login(token: Annotated[str, Depends(issue_token)]) -> Any:
        return JSONResponse({"token": token}) if returns == "response" else {"token": token}

    client = client_for(app)
    alice, bob = client.get("/login"), client.get("/login")
    assert alice.json() == {"token": "token-1"} and bob.json() == {"token": "token-2"}
    assert alice.headers["x-cache"] == bob.headers["x-cache"] == "MISS"


def test_view_cookie_on_injected_response_counts_when_returning_a_response() -> None:
    """A cookie the view sets on the injected Response keeps its own returned Response unstored."""
    app = FastAPI()

    @app.get("/v")
    @cacheframe.cache(ttl=60)
    async def v(response: Response) -> JSONResponse:
        runs["v"] += 1
        response.set_cookie("session", str(runs["v"]))
        return JSONResponse({"n": runs["v"]})

    client = client_for(app)
    assert [client.get("/v").json() for _ in range(2)] == [{"n": 1}, {"n": 2}]


# -- per-user state read outside the declared parameters ----------------------------------------


def state_app(*, private: bool = False) -> FastAPI:
    """Views and dependencies reading cookies, session, user and auth without parameters."""
    app = FastAPI()

    def who(request: Request) -> str:  # a dependency reading per-user state from the Request
        return request.cookies.get("sid", "anon")

    def session_who(request: Request) -> str:
        return str(request.session.get("user", "anon"))

    def user_who(request: Request) -> str:
        return request.user.display_name if request.user.is_authenticated else "anon"

    def app_state(request: Request) -> str:  # takes the Request, reads nothing per user
        return "state"

    @app.get("/cookies")
    @cacheframe.cache(ttl=60, private=private)
    async def cookies(request: Request) -> dict[str, str]:
        runs["cookies"] += 1
        return {"user": request.cookies.get("sid", "anon")}

    @app.get("/sync-cookies")
    @cacheframe.cache(ttl=60, private=private)
    def sync_cookies(request: Request) -> dict[str, str]:
        runs["sync_cookies"] += 1
        return {"user": request.cookies.get("sid", "anon")}

    @app.get("/session")
    @cacheframe.cache(ttl=60, private=private)
    async def session(request: Request) -> dict[str, str]:
        runs["session"] += 1
        return {"user": str(request.session.get("user", "anon"))}

    @app.get("/user")
    @cacheframe.cache(ttl=60, private=private)
    async def user(request: Request) -> dict[str, str]:
        runs["user"] += 1
        return {"user": request.user.display_name if request.user.is_authenticated else "anon"}

    @app.get("/auth")
    @cacheframe.cache(ttl=60, private=private)
    async def auth(request: Request) -> dict[str, list[str]]:
        runs["auth"] += 1
        return {"scopes": request.auth.scopes}

    @app.get("/dep-cookies")
    @cacheframe.cache(ttl=60, private=private)
    async def dep_cookies(name: Annotated[str, Depends(who)]) -> dict[str, str]:
        runs["dep_cookies"] += 1
        return {"user": name}

    @app.get("/dep-session")
    @cacheframe.cache(ttl=60, private=private)
    async def dep_session(name: Annotated[str, Depends(session_who)]) -> dict[str, str]:
        runs["dep_session"] += 1
        return {"user": name}

    @app.get("/dep-user")
    @cacheframe.cache(ttl=60, private=private)
    async def dep_user(name: Annotated[str, Depends(user_who)]) -> dict[str, str]:
        runs["dep_user"] += 1
        return {"user": name}

    @app.get("/dep-request")
    @cacheframe.cache(ttl=60, private=private)
    async def dep_request(value: Annotated[str, Depends(app_state)]) -> dict[str, str]:
        runs["dep_request"] += 1
        return {"value": value}

    app.add_middleware(AuthenticationMiddleware, backend=HeaderUser())
    app.add_middleware(CookieSessions)
    return app


def logged_in(app: FastAPI, name: str) -> TestClient:
    """A client holding ``name``'s session cookie."""
    client = TestClient(app)
    client.cookies.set("sid", name)
    return client


@pytest.mark.parametrize(
    ("url", "counter"),
    [
        ("/cookies", "cookies"),
        ("/sync-cookies", "sync_cookies"),
        ("/session", "session"),
        ("/dep-cookies", "dep_cookies"),
        ("/dep-session", "dep_session"),
    ],
)
def test_cookie_state_read_is_never_shared(url: str, counter: str) -> None:
    """Cookies or the session read by the view or a dependency: Alice's page never reaches Bob."""
    runs.clear()
    app = state_app()
    alice, bob = logged_in(app, "alice"), logged_in(app, "bob")
    first = alice.get(url)
    other = bob.get(url)
    assert first.json() == {"user": "alice"} and other.json() == {"user": "bob"}
    assert first.headers["x-cache"] == other.headers["x-cache"] == "MISS"
    assert alice.get(url).headers["x-cache"] == "MISS"  # not stored at all
    assert runs[counter] == 3


@pytest.mark.parametrize("private", [False, True], ids=["shared", "private"])
@pytest.mark.parametrize(("url", "counter"), [("/user", "user"), ("/dep-user", "dep_user")])
def test_user_read_is_never_stored(url: str, counter: str, private: bool) -> None:
    """request.user read by the view or a dependency: not stored, even with private=True."""
    client = client_for(state_app(private=private))
    alice = client.get(url, headers={"X-User": "alice"})
    bob = client.get(url, headers={"X-User": "bob"})
    assert alice.json() == {"user": "alice"} and bob.json() == {"user": "bob"}
    assert alice.headers["x-cache"] == bob.headers["x-cache"] == "MISS" and runs[counter] == 2


def test_auth_read_is_never_stored() -> None:
    """request.auth read by the view: the response is not stored."""
    client = client_for(state_app())
    assert client.get("/auth").json() == {"scopes": []}
    resp = client.get("/auth", headers={"X-User": "alice"})
    assert resp.json() == {"scopes": ["me"]} and resp.headers["x-cache"] == "MISS"
    assert runs["auth"] == 2


def test_private_keys_cookie_reads() -> None:
    """With private=True the Cookie header is keyed: cookie and session reads are stored per user."""
    runs.clear()
    app = state_app(private=True)
    alice, bob = logged_in(app, "alice"), logged_in(app, "bob")
    for url in ("/cookies", "/session", "/dep-cookies"):
        assert alice.get(url).json() == {"user": "alice"}
        assert bob.get(url).json() == {"user": "bob"}
        again = alice.get(url)
        assert again.json() == {"user": "alice"} and again.headers["x-cache"] == "HIT", url
        assert again.headers["cache-control"].startswith("private,")


def test_request_dependency_without_per_user_state_is_cached() -> None:
    """A dependency taking the Request is cached for requests carrying no per-user state."""
    client = client_for(state_app())
    assert [client.get("/dep-request").headers["x-cache"] for _ in range(2)] == ["MISS", "HIT"]
    # Requests carrying a cookie or a user are not stored (the dependency could have read them).
    assert [client.get("/dep-request?u", headers={"X-User": "bob"}).headers["x-cache"] for _ in range(2)] == [
        "MISS",
        "MISS",
    ]
    client.cookies.set("sid", "alice")
    assert [client.get("/dep-request?c").headers["x-cache"] for _ in range(2)] == ["MISS", "MISS"]


def test_fast_path_never_serves_a_cookie_reading_view() -> None:
    """A dependency-free route reading request.cookies is never stored, so the fast path has nothing."""
    app = FastAPI()

    @app.get("/hello")
    @cacheframe.cache(ttl=60)
    async def hello(request: Request) -> dict[str, str]:
        return {"user": request.cookies.get("sid", "anon")}

    fastpath.install(app)
    client = client_for(app)
    for user in ("alice", "bob", "alice"):
        client.cookies.set("sid", user)
        assert client.get("/hello").json() == {"user": user}
    assert cacheframe.get_cache().stats.fast_hits == 0


def test_custom_request_class_keeps_working_while_watched() -> None:
    """A route_class's own Request subclass keeps its behaviour inside the view, and comes back."""

    class TaggedRequest(Request):
        @property
        def tag(self) -> str:
            return "tagged"

    class TaggedRoute(APIRoute):
        def get_route_handler(self) -> Any:
            handler = super().get_route_handler()

            async def route_handler(request: Request) -> Response:
                return await handler(TaggedRequest(request.scope, request.receive))

            return route_handler

    app = FastAPI()
    app.router.route_class = TaggedRoute
    seen: list[Any] = []

    @app.get("/t")
    @cacheframe.cache(ttl=60)
    async def t(request: Request) -> dict[str, str]:
        seen.append(request)
        return {"tag": request.tag}  # type: ignore[attr-defined]

    client = client_for(app)
    assert [client.get("/t").headers["x-cache"] for _ in range(2)] == ["MISS", "HIT"]
    assert client.get("/t").json() == {"tag": "tagged"}
    assert type(seen[0]) is TaggedRequest


def test_watch_records_reads_and_restores_the_class() -> None:
    """watch() records each per-user property read and leaves the request as it found it."""
    scope = {
        "type": "http",
        "headers": [(b"cookie", b"a=1")],
        "session": TrackedSession(),
        "user": None,
        "auth": None,
    }
    request = Request(scope)
    with _peruser.watch(request) as reads:
        assert request.cookies == {"a": "1"}
        request.session, request.user  # noqa: B018
    assert reads == {"cookies", "session", "user"}
    assert type(request) is Request and "_cacheframe_reads" not in request.__dict__
    request.auth  # noqa: B018  (read after the watch: not recorded)
    assert reads == {"cookies", "session", "user"}


# -- per-user replies say Cache-Control: private ------------------------------------------------


@pytest.mark.parametrize("options", [{"vary": ["Authorization"]}, {"private": True}], ids=["vary", "private"])
def test_per_user_replies_say_private(options: dict[str, Any]) -> None:
    """vary=["Authorization"] and private=True answer Cache-Control: private, on miss and hit."""
    app = FastAPI()

    @app.get("/p")
    @cacheframe.cache(ttl=60, **options)
    async def p(request: Request) -> dict[str, str | None]:
        return {"auth": request.headers.get("authorization")}

    client = client_for(app)
    miss, hit = (client.get("/p", headers={"Authorization": "Bearer a"}) for _ in range(2))
    assert (miss.headers["x-cache"], hit.headers["x-cache"]) == ("MISS", "HIT")
    for resp in (miss, hit):
        assert resp.headers["cache-control"].split(",")[0] == "private"


def test_unwatchable_request_counts_as_an_unknown_read() -> None:
    """A request class that cannot be watched: the response is treated as reading per-user state."""

    class Stubborn(Request):
        def __init_subclass__(cls, **kwargs: Any) -> None:
            raise RuntimeError("no subclasses")

    request = Stubborn({"type": "http", "headers": []})
    with _peruser.watch(request) as reads:
        pass
    assert type(request) is Stubborn
    reason = _peruser.unkeyed_reason(request.scope, reads, reads_connection=False, cookie_keyed=True)
    assert reason is not None and "unwatchable" in reason


async def test_concurrent_users_on_a_cookie_reading_view_each_get_their_own() -> None:
    """Concurrent misses share no computation whose response read per-user state."""
    import asyncio

    import httpx

    app = FastAPI()

    @app.get("/hello")
    @cacheframe.cache(ttl=60)
    async def hello(request: Request) -> dict[str, str]:
        await asyncio.sleep(0.05)  # the others arrive while this one computes
        return {"user": request.cookies.get("sid", "anon")}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        users = [f"u{i}" for i in range(30)]
        replies = await asyncio.gather(*(client.get("/hello", headers={"Cookie": f"sid={u}"}) for u in users))
    assert [r.json()["user"] for r in replies] == users
