"""Decorator ceiling: the cached view's own parameters (``n``, ``k``), returning the constant bytes.

No in-handler cache can beat this: FastAPI still routes, validates the query and
calls the endpoint; only the cache lookup is free.
"""

from fastapi import Response

from apps.common import constant_response, make_app

app = make_app()


@app.get("/items")
async def items(n: int = 100, k: int = 0) -> Response:
    return constant_response()
