"""The same two routes in FastAPI (served by uvicorn)."""

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

app = FastAPI()


@app.get("/plaintext", response_class=PlainTextResponse)
async def plaintext() -> str:
    return "Hello, World!"


@app.get("/json/{item_id}")
async def json_item(item_id: int) -> dict[str, object]:
    return {"id": item_id, "message": "Hello, World!"}
