"""Routing: segments, precedence, methods, nest, merge, fallback, 404/405, HEAD, slashes."""

from __future__ import annotations

import pytest

from keel.http import Path, Request, RouteError, Router, TestClient, get, post
from keel.http.extract import Json


def make_router() -> Router:
    app = Router()

    @app.get("/")
    async def root() -> str:
        return "root"

    @app.get("/users/me")
    async def me() -> str:
        return "me"

    @app.get("/users/{user_id}")
    async def user(user_id: Path[int]) -> dict[str, int]:
        return {"user": user_id}

    @app.get("/users/{user_id}/posts/{post_id}")
    async def user_post(user_id: Path[int], post_id: Path[str]) -> list[object]:
        return [user_id, post_id]

    @app.get("/files/{*rest}")
    async def files(rest: Path[str]) -> str:
        return f"file:{rest}"

    async def create(request: Request) -> tuple[int, str]:
        return 201, "created"

    app.route("/items", post(create))
    return app


def test_static_param_and_catch_all() -> None:
    with TestClient(make_router()) as client:
        assert client.get("/").text == "root"
        assert client.get("/users/7").json() == {"user": 7}
        assert client.get("/users/7/posts/abc").json() == [7, "abc"]
        assert client.get("/files/a/b/c.txt").text == "file:a/b/c.txt"
        assert client.get("/files/").status == 404


def test_static_segment_wins_over_parameter_whatever_the_order() -> None:
    with TestClient(make_router()) as client:
        assert client.get("/users/me").text == "me"


def test_percent_encoded_path_is_decoded() -> None:
    with TestClient(make_router()) as client:
        assert client.get("/users/7/posts/a%20b").json() == [7, "a b"]


def test_404_and_405_with_allow() -> None:
    with TestClient(make_router()) as client:
        missing = client.get("/nowhere")
        assert missing.status == 404 and "/nowhere" in missing.text
        wrong = client.delete("/users/7")
        assert wrong.status == 405
        assert wrong.headers["allow"] == "GET, HEAD"
        assert client.get("/items").headers["allow"] == "POST"


def test_head_is_answered_by_get_without_a_body() -> None:
    with TestClient(make_router()) as client:
        response = client.head("/users/7")
        assert response.status == 200 and response.content == b""
        assert response.headers["content-length"] == str(len(b'{"user":7}'))


def test_nest_and_merge_and_fallback() -> None:
    api = Router()

    @api.get("/ping")
    async def ping() -> str:
        return "pong"

    @api.get("/")
    async def api_root() -> str:
        return "api"

    other = Router()

    @other.get("/other")
    async def other_route() -> str:
        return "other"

    app = Router().nest("/api/v1", api).merge(other)

    async def fallback(request: Request) -> tuple[int, str]:
        return 404, f"custom miss {request.path}"

    app.fallback(fallback)
    with TestClient(app) as client:
        assert client.get("/api/v1/ping").text == "pong"
        assert client.get("/api/v1").text == "api"
        assert client.get("/other").text == "other"
        miss = client.get("/zzz")
        assert (miss.status, miss.text) == (404, "custom miss /zzz")


def test_method_router_chains_methods_on_one_path() -> None:
    async def read() -> str:
        return "read"

    async def write(body: Json[dict[str, int]]) -> dict[str, int]:
        return body

    app = Router().route("/thing", get(read).post(write))
    with TestClient(app) as client:
        assert client.get("/thing").text == "read"
        assert client.post("/thing", json={"a": 1}).json() == {"a": 1}


def test_trailing_slash_redirect_policy() -> None:
    app = Router(trailing_slash="redirect")

    @app.get("/docs")
    async def docs() -> str:
        return "docs"

    with TestClient(app) as client:
        response = client.get("/docs/?x=1")
        assert response.status == 308 and response.headers["location"] == "/docs?x=1"
    with TestClient(make_router()) as client:
        assert client.get("/users/me/").status == 404  # strict by default


async def _plain() -> str:
    return ""


def test_registration_errors() -> None:
    app = Router()
    app.route("/a", get(_plain))
    with pytest.raises(RouteError, match="registered twice"):
        app.route("/a", get(_plain))
    with pytest.raises(RouteError, match="must start with"):
        app.route("a", get(_plain))
    with pytest.raises(RouteError, match="last segment"):
        app.route("/{*rest}/x", get(_plain))
    with pytest.raises(RouteError, match="mixes"):
        app.route("/x{y}", get(_plain))
    app.route("/p/{a}", get(_plain))
    app.route("/p/{b}/x", get(_plain))
    with pytest.raises(RouteError, match="conflicts"):
        app.build()


def test_handlers_must_be_async_and_annotated() -> None:
    def not_async() -> str:
        return ""

    async def unannotated(x) -> str:  # type: ignore[no-untyped-def]
        return ""

    async def no_extractor(x: int) -> str:
        return ""

    with pytest.raises(RouteError, match="async"):
        get(not_async)  # type: ignore[arg-type]
    with pytest.raises(RouteError, match="no annotation"):
        get(unannotated)
    with pytest.raises(RouteError, match="no extractor"):
        get(no_extractor)


def test_routes_cannot_be_added_after_serving_starts() -> None:
    app = make_router()
    app.build()
    with pytest.raises(RouteError, match="already serving"):
        app.route("/late", get(_plain))
