"""Property: two requests whose view receives different arguments never share a view key.

Routes are generated with random mixes of path, query, header and cookie parameters, with
and without ``alias``/``validation_alias``/``AliasChoices`` and defaults; requests send the
parameters under random names (the right one, a sibling alias, the plain name, ...). For
every request served, the arguments FastAPI passed to the view and the key the cache
computed are recorded; differing arguments must come with differing keys.
"""

from __future__ import annotations

import inspect
import uuid
from typing import Annotated, Any
from urllib.parse import quote

import pytest
from fastapi import Cookie, FastAPI, Header, Path, Query
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import AliasChoices

import cacheframe
from cacheframe import _views, keys

KINDS = {"query": Query, "header": Header, "cookie": Cookie}
ALIASES = ["k", "x_y", "Z-w"]
VALUES = ["1", "2"]

param_strategy = st.fixed_dictionaries(
    {
        "kind": st.sampled_from([*KINDS, "path"]),
        "base": st.sampled_from(["a", "b_c"]),
        "alias": st.sampled_from(["none", "alias", "validation_alias", "choices"]),
        "alias_values": st.lists(st.sampled_from(ALIASES), min_size=1, max_size=2, unique=True),
        "required": st.booleans(),
    }
)


def _annotation(param: dict[str, Any]) -> tuple[Any, Any]:
    """(annotation, default) of one generated parameter."""
    if param["kind"] == "path":
        return Annotated[str, Path()], inspect.Parameter.empty
    options: dict[str, Any] = {}
    first = param["alias_values"][0]
    if param["alias"] == "alias":
        options["alias"] = first
    elif param["alias"] == "validation_alias":
        options["validation_alias"] = first
    elif param["alias"] == "choices":
        options["validation_alias"] = AliasChoices(*param["alias_values"])
    marker = KINDS[param["kind"]](**options)
    if param["required"]:
        return Annotated[str, marker], inspect.Parameter.empty
    return Annotated[str | None, marker], None


def _app(params: list[dict[str, Any]]) -> FastAPI:
    app = FastAPI()

    async def view(**kwargs: Any) -> dict[str, bool]:
        return {"ok": True}

    view.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter(p["name"], inspect.Parameter.KEYWORD_ONLY, annotation=a, default=d)
            for p in params
            for a, d in [_annotation(p)]
        ]
    )
    path_params = [p["name"] for p in params if p["kind"] == "path"]
    path = "/r" + "".join(f"/{{{name}}}" for name in path_params)
    app.get(path)(cacheframe.cache(ttl=60)(view))
    return app


def _names_to_try(param: dict[str, Any]) -> list[str]:
    """Names to send a parameter under: its aliases first (those FastAPI reads), then the rest."""
    name = param["name"]
    return list(dict.fromkeys([*param["alias_values"], name, name.replace("_", "-"), *ALIASES]))


# (send it?, which name to send it under, value); requests are variations of a first one,
# so pairs differing in one detail (the header's name, a value) are common.
request_part = st.tuples(st.booleans(), st.integers(0, 4), st.sampled_from(VALUES))


@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI time stays put
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@example(  # a validation_alias header, sent with two values (shared one entry before the fix)
    params=[
        {
            "kind": "header",
            "base": "a",
            "alias": "validation_alias",
            "alias_values": ["x_y"],
            "required": False,
        }
    ],
    requests=[[(True, 0, "1")] * 4, [(True, 0, "2")] * 4],
    mutations=[],
)
@given(
    params=st.lists(param_strategy, min_size=1, max_size=4),
    requests=st.lists(st.lists(request_part, min_size=4, max_size=4), min_size=2, max_size=6),
    mutations=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 3), request_part), max_size=6),
)
def test_different_arguments_never_share_a_key(
    monkeypatch: pytest.MonkeyPatch,
    params: list[dict[str, Any]],
    requests: list[list[Any]],
    mutations: list[tuple[int, int, Any]],
) -> None:
    """Any two requests for which FastAPI passes the view different arguments get different keys."""
    seen_path = False
    kept = []
    for i, param in enumerate(params):  # at most one path parameter; unique names
        if param["kind"] == "path":
            if seen_path:
                continue
            seen_path = True
        kept.append({**param, "name": f"{param['base']}{i}"})
    params = kept
    for _, slot, part in mutations:  # a copy of the first request with one part changed
        variant = list(requests[0])
        variant[slot] = part
        requests.append(variant)
    cacheframe.configure(url="memory://", prefix=f"p{uuid.uuid4().hex[:8]}")
    record: dict[str, Any] = {}
    real_serve, real_url_key, real_view_key = _views.serve, keys.url_key, keys.view_key

    async def serve(*args: Any) -> Any:
        record["kwargs"] = dict(args[7])
        return await real_serve(*args)

    def url_key(*args: Any, **kwargs: Any) -> str:
        record["key"] = key = real_url_key(*args, **kwargs)
        return key

    def view_key(*args: Any, **kwargs: Any) -> str:
        record["key"] = key = real_view_key(*args, **kwargs)
        return key

    monkeypatch.setattr(_views, "serve", serve)
    monkeypatch.setattr(keys, "url_key", url_key)
    monkeypatch.setattr(keys, "view_key", view_key)
    with TestClient(_app(params)) as client:
        served = _send_all(client, params, requests, record)
    for i, (kwargs_a, key_a) in enumerate(served):
        for kwargs_b, key_b in served[i + 1 :]:
            if kwargs_a != kwargs_b:
                assert key_a != key_b, (params, kwargs_a, kwargs_b)


def _send_all(
    client: TestClient, params: list[dict[str, Any]], requests: list[list[Any]], record: dict[str, Any]
) -> list[tuple[dict[str, Any], str]]:
    """Send every request; (arguments the view received, key) of each one the cache keyed."""
    served: list[tuple[dict[str, Any], str]] = []
    for parts in requests:
        path, query, headers, cookies = "/r", [], [], []
        for param, (send, pick, value) in zip(params, parts, strict=False):
            if param["kind"] == "path":
                path += f"/{value}"
                continue
            if not send:
                continue
            names = _names_to_try(param)
            name = names[pick % len(names)]
            if param["kind"] == "query":
                query.append(f"{quote(name)}={value}")
            elif param["kind"] == "header":
                headers.append((name, value))
            else:
                cookies.append(f"{name}={value}")
        if cookies:
            headers.append(("cookie", "; ".join(cookies)))
        record.clear()
        url = path + ("?" + "&".join(query) if query else "")
        response = client.get(url, headers=headers)
        if "key" in record:
            assert response.status_code == 200
            served.append((record["kwargs"], record["key"]))
    return served
