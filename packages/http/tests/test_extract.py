"""Extractors from annotations, their errors, custom extractors and the body rule."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Annotated

import msgspec
import pytest

from keel.http import (
    Body,
    BodyStream,
    Cookie,
    Cookies,
    Form,
    Header,
    Headers,
    HTTPException,
    Json,
    Parameter,
    Path,
    Query,
    Request,
    RouteError,
    Router,
    State,
    TestClient,
    get,
    post,
)
from keel.http.extract import ExtractFunction


class Item(msgspec.Struct):
    name: str
    price: float
    tags: list[str] = []


class Search(msgspec.Struct):
    q: str
    limit: int = 10
    tag: list[str] = []


@dataclasses.dataclass
class Config:
    greeting: str


class Bearer:
    """A custom extractor: the token of an Authorization: Bearer header, or 401."""

    consumes_body = False

    def bind(self, parameter: Parameter) -> ExtractFunction:
        async def extract(request: Request) -> str:
            value = request.headers.get("authorization", "")
            scheme, _, token = value.partition(" ")
            if scheme.lower() != "bearer" or not token:
                raise HTTPException(401, "a Bearer token is required",
                                    [("www-authenticate", "Bearer")])
            return token
        return extract


Token = Annotated[str, Bearer()]


def make_app() -> Router:
    app = Router().with_state(Config("hi"))

    @app.get("/path/{a}/{b}")
    async def two(a: Path[int], b: Path[float]) -> list[float]:
        return [a, b]

    @app.get("/search")
    async def search(params: Query[Search]) -> Search:
        return params

    @app.get("/page")
    async def page(number: Query[int] = 1, size: Query[int] = 20) -> list[int]:
        return [number, size]

    @app.post("/items")
    async def create(item: Json[Item]) -> tuple[int, Item]:
        return 201, item

    @app.post("/form")
    async def form(data: Form[Search]) -> Search:
        return data

    @app.get("/headers")
    async def headers(user_agent: Header[str], all_headers: Headers) -> list[str]:
        return [user_agent, all_headers["x-extra"]]

    @app.get("/cookies")
    async def cookies(session: Cookie[str], jar: Cookies) -> list[object]:
        return [session, jar]

    @app.get("/state")
    async def state(config: State[Config]) -> str:
        return config.greeting

    @app.post("/raw")
    async def raw(data: Body[bytes]) -> int:
        return len(data)

    @app.post("/text")
    async def text(data: Body[str]) -> str:
        return data[::-1]

    @app.post("/stream")
    async def stream(chunks: BodyStream) -> str:
        total = 0
        async for chunk in chunks:
            total += len(chunk)
        return str(total)

    @app.get("/secret")
    async def secret(token: Token) -> str:
        return f"token={token}"

    @app.post("/request")
    async def whole(request: Request) -> str:
        return f"{request.method} {(await request.body()).decode()}"

    return app


@pytest.fixture
def client() -> TestClient:
    with TestClient(make_app()) as test_client:
        yield test_client  # type: ignore[misc]


def test_path_parameters_are_typed(client: TestClient) -> None:
    assert client.get("/path/3/2.5").json() == [3, 2.5]
    bad = client.get("/path/x/2")
    assert bad.status == 400 and "path parameter 'a'" in bad.text


def test_query_struct_and_scalars(client: TestClient) -> None:
    found = client.get("/search?q=shoes&limit=5&tag=a&tag=b").json()
    assert found == {"q": "shoes", "limit": 5, "tag": ["a", "b"]}
    assert client.get("/search?q=x&tag=one").json()["tag"] == ["one"]
    missing = client.get("/search?limit=5")
    assert missing.status == 400 and "q" in missing.text
    assert client.get("/page?size=3").json() == [1, 3]
    assert client.get("/page?size=big").status == 400
    flood = client.get("/search?" + "&".join(f"f{index}=1" for index in range(1100)))
    assert flood.status == 400 and "fields" in flood.text


def test_json_body_typed_by_msgspec(client: TestClient) -> None:
    created = client.post("/items", json={"name": "pen", "price": 1.5})
    assert created.status == 201 and created.json() == {"name": "pen", "price": 1.5, "tags": []}
    invalid = client.post("/items", json={"name": "pen", "price": "free"})
    assert invalid.status == 422 and "price" in invalid.text
    malformed = client.post("/items", content=b"{nope", headers={"content-type":
                                                                  "application/json"})
    assert malformed.status == 400 and "malformed" in malformed.text
    wrong_type = client.post("/items", content=b"{}", headers={"content-type": "text/plain"})
    assert wrong_type.status == 415


def test_form_body(client: TestClient) -> None:
    assert client.post("/form", data={"q": "x", "limit": "2"}).json() == \
        {"q": "x", "limit": 2, "tag": []}
    assert client.post("/form", data={"limit": "2"}).status == 422


def test_headers_and_cookies(client: TestClient) -> None:
    assert client.get("/headers", headers={"User-Agent": "ua", "X-Extra": "e"}).json() == \
        ["ua", "e"]
    assert client.get("/headers").status == 400
    assert client.get("/cookies", headers={"cookie": "session=abc; theme=dark"}).json() == \
        ["abc", {"session": "abc", "theme": "dark"}]


def test_typed_state(client: TestClient) -> None:
    assert client.get("/state").text == "hi"
    app = Router().with_state("not a Config")

    @app.get("/state")
    async def state(config: State[Config]) -> str:
        return config.greeting

    with TestClient(app) as other:
        response = other.get("/state")
        assert response.status == 500 and "Config" in response.text


def test_body_bytes_text_and_stream(client: TestClient) -> None:
    assert client.post("/raw", content=b"12345").json() == 5
    assert client.post("/text", content="abc").text == "cba"
    assert client.post("/stream", content=b"x" * 1000).text == "1000"
    assert client.post("/request", content=b"hello").text == "POST hello"


def test_custom_extractor(client: TestClient) -> None:
    assert client.get("/secret", headers={"authorization": "Bearer t0k"}).text == "token=t0k"
    refused = client.get("/secret")
    assert refused.status == 401 and refused.headers["www-authenticate"] == "Bearer"


def test_only_the_last_parameter_may_consume_the_body() -> None:
    async def two_bodies(first: Json[Item], second: Body[bytes]) -> str:
        return ""

    async def body_first(item: Json[Item], page: Query[int]) -> str:
        return ""

    with pytest.raises(RouteError, match="must be the last parameter"):
        post(two_bodies)
    with pytest.raises(RouteError, match="'item' consumes the request body"):
        post(body_first)

    async def request_then_path(request: Request, user_id: Path[int]) -> str:
        return ""

    with pytest.raises(RouteError, match="last parameter"):
        get(request_then_path)


def test_stream_iterator_type_is_async_iterator() -> None:
    async def handler(chunks: BodyStream) -> str:
        assert isinstance(chunks, AsyncIterator)
        return "ok"

    with TestClient(Router().route("/", post(handler))) as client:
        assert client.post("/", content=b"x").text == "ok"
