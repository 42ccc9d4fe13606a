"""No cache: build the items and serialise them through ``response_model`` on every request."""

from apps.common import Item, make_app, view_body

app = make_app()


@app.get("/items", response_model=list[Item])
async def items(n: int = 100, k: int = 0) -> list[Item]:
    return view_body(n, k)
