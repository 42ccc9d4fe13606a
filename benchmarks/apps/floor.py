"""Floor: the same bytes as a constant, pre-encoded ``Response`` from a view with no parameters."""

from fastapi import Response

from apps.common import constant_response, make_app

app = make_app()


@app.get("/items")
async def items() -> Response:
    return constant_response()
