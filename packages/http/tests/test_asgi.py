"""ASGI both ways: Starlette and FastAPI on keel's server; a keel app under uvicorn."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import httpx
import msgspec
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi import Request as FastApiRequest
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.responses import StreamingResponse as StarletteStreaming
from starlette.routing import Route

from keel.http import Json, Path, Router, StreamingResponse, TestClient, to_asgi
from tests.conftest import running_server


def starlette_app() -> Starlette:
    async def hello(request: StarletteRequest) -> PlainTextResponse:
        return PlainTextResponse(f"hello {request.path_params['name']}")

    async def echo(request: StarletteRequest) -> JSONResponse:
        body = await request.json()
        return JSONResponse({"got": body, "query": dict(request.query_params)})

    async def stream(request: StarletteRequest) -> StarletteStreaming:
        async def parts() -> AsyncIterator[bytes]:
            for index in range(3):
                yield b"chunk%d " % index
        return StarletteStreaming(parts(), media_type="text/plain")

    return Starlette(routes=[Route("/hello/{name}", hello), Route("/echo", echo,
                                                                 methods=["POST"]),
                             Route("/stream", stream)])


def fastapi_app() -> FastAPI:
    app = FastAPI()

    class Item(msgspec.Struct):
        name: str

    @app.get("/items/{item_id}")
    async def read_item(item_id: int, q: str | None = None) -> dict[str, object]:
        return {"item_id": item_id, "q": q}

    @app.post("/items")
    async def create_item(item: dict[str, str]) -> dict[str, str]:
        return {"created": item["name"]}

    return app


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_starlette_runs_on_keel(backend: str) -> None:
    with running_server(starlette_app(), backend) as (_, (host, port)), \
            httpx.Client(base_url=f"http://{host}:{port}", timeout=10) as client:
        assert client.get("/hello/keel").text == "hello keel"
        echoed = client.post("/echo?x=1", json={"a": [1, 2]})
        assert echoed.json() == {"got": {"a": [1, 2]}, "query": {"x": "1"}}
        assert client.get("/stream").text == "chunk0 chunk1 chunk2 "
        assert client.get("/nowhere").status_code == 404


def test_fastapi_runs_on_keel() -> None:
    with running_server(fastapi_app(), "asyncio") as (_, (host, port)), \
            httpx.Client(base_url=f"http://{host}:{port}", timeout=10) as client:
        assert client.get("/items/5?q=x").json() == {"item_id": 5, "q": "x"}
        assert client.post("/items", json={"name": "pen"}).json() == {"created": "pen"}
        invalid = client.get("/items/notanint")
        assert invalid.status_code == 422
        assert client.get("/openapi.json").json()["paths"]["/items/{item_id}"]


def test_lifespan_of_a_served_asgi_app_runs_startup_and_shutdown() -> None:
    events: list[str] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, str]]:
        events.append("startup")
        yield {"greeting": "from lifespan"}
        events.append("shutdown")

    app = FastAPI(lifespan=lifespan)

    @app.get("/")
    async def index(request: FastApiRequest) -> str:
        return str(request.state.greeting)

    with running_server(app) as (_, (host, port)), \
            httpx.Client(base_url=f"http://{host}:{port}", timeout=10) as client:
        assert client.get("/").json() == "from lifespan"
        assert events == ["startup"]
    assert events == ["startup", "shutdown"]


def test_failed_asgi_startup_stops_the_server_with_its_message() -> None:
    from keel.http import ServerError

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        raise RuntimeError("database unreachable")
        yield

    with pytest.raises(ServerError, match="database unreachable"), \
            running_server(FastAPI(lifespan=lifespan)):
        pass


def test_asgi_apps_work_with_the_test_client() -> None:
    with TestClient(starlette_app()) as client:
        assert client.get("/hello/x").text == "hello x"


def keel_app() -> Router:
    app = Router()

    @app.get("/users/{user_id}")
    async def user(user_id: Path[int]) -> dict[str, int]:
        return {"id": user_id}

    @app.post("/echo")
    async def echo(body: Json[dict[str, int]]) -> dict[str, int]:
        return body

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def parts() -> AsyncIterator[str]:
            yield "a"
            yield "b"
        return StreamingResponse(parts(), content_type="text/plain")

    return app


@contextmanager
def uvicorn_serving(app: object) -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="on", log_level="warning", loop="asyncio",
                            http="h11")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]},
                              name="uvicorn-under-test")
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.started
        yield port
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def test_keel_app_runs_under_uvicorn() -> None:
    with uvicorn_serving(to_asgi(keel_app())) as port, \
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        assert client.get("/users/9").json() == {"id": 9}
        assert client.post("/echo", json={"a": 1}).json() == {"a": 1}
        assert client.get("/stream").text == "ab"
        assert client.get("/users/x").status_code == 400
        assert client.delete("/users/1").headers["allow"] == "GET, HEAD"
