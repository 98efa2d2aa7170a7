"""The benchmarked keel application: plaintext and a JSON route with a path parameter."""

from keel.http import Path, Router

app = Router()


@app.get("/plaintext")
async def plaintext() -> str:
    return "Hello, World!"


@app.get("/json/{item_id}")
async def json_item(item_id: Path[int]) -> dict[str, object]:
    return {"id": item_id, "message": "Hello, World!"}
