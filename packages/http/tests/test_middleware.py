"""Layers: order as written, from_fn, timeout, gzip, CORS, request id, limits."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator

from keel.http import (
    Body,
    BodyLimitLayer,
    CompressionLayer,
    ConcurrencyLimitLayer,
    CorsLayer,
    Next,
    Request,
    RequestIdLayer,
    Response,
    Router,
    StreamingResponse,
    TestClient,
    TimeoutLayer,
    from_fn,
    get,
)
from keel.http.concurrency import sleep


def tagging(name: str, seen: list[str]):  # type: ignore[no-untyped-def]
    async def middleware(request: Request, next: Next) -> Response:
        seen.append(f"{name}>")
        response = await next(request)
        seen.append(f"<{name}")
        response.headers.append(("x-layer", name))
        return response
    return from_fn(middleware)


def test_layers_run_in_the_order_written_global_then_route() -> None:
    seen: list[str] = []

    async def handler() -> str:
        seen.append("handler")
        return "ok"

    app = Router().route("/", get(handler).layer(tagging("route1", seen),
                                                 tagging("route2", seen)))
    app.layer(tagging("global1", seen), tagging("global2", seen))
    with TestClient(app) as client:
        assert client.get("/").text == "ok"
        assert client.get("/missing").status == 404
    assert seen[:9] == ["global1>", "global2>", "route1>", "route2>", "handler",
                        "<route2", "<route1", "<global2", "<global1"]
    assert seen[9:] == ["global1>", "global2>", "<global2", "<global1"]  # fallback is wrapped


def test_from_fn_can_short_circuit_with_a_plain_value() -> None:
    async def guard(request: Request, next: Next) -> object:
        if request.headers.get("x-key") != "secret":
            return 403, "forbidden"
        return await next(request)

    async def handler() -> str:
        return "inside"

    app = Router().route("/", get(handler)).layer(from_fn(guard))
    with TestClient(app) as client:
        assert client.get("/").status == 403
        assert client.get("/", headers={"x-key": "secret"}).text == "inside"


def test_timeout_layer() -> None:
    async def slow() -> str:
        await sleep(2)
        return "late"

    async def fast() -> str:
        return "fast"

    app = Router().route("/slow", get(slow)).route("/fast", get(fast))
    app.layer(TimeoutLayer(0.05))
    with TestClient(app) as client:
        assert client.get("/slow").status == 408
        assert client.get("/fast").text == "fast"


def test_gzip_compression() -> None:
    async def big() -> str:
        return "a" * 5000

    async def small() -> str:
        return "a"

    async def streamed() -> StreamingResponse:
        async def parts() -> AsyncIterator[bytes]:
            for _ in range(10):
                yield b"b" * 1000
        return StreamingResponse(parts(), content_type="text/plain")

    app = Router().route("/big", get(big)).route("/small", get(small)) \
        .route("/stream", get(streamed)).layer(CompressionLayer())
    with TestClient(app) as client:
        compressed = client.get("/big", headers={"accept-encoding": "br, gzip"})
        assert compressed.headers["content-encoding"] == "gzip"
        assert gzip.decompress(compressed.content) == b"a" * 5000
        assert len(compressed.content) < 100
        assert "content-encoding" not in client.get("/big").headers
        assert "content-encoding" not in client.get(
            "/small", headers={"accept-encoding": "gzip"}).headers
        assert "content-encoding" not in client.get(
            "/big", headers={"accept-encoding": "gzip;q=0"}).headers
        stream = client.get("/stream", headers={"accept-encoding": "gzip"})
        assert gzip.decompress(stream.content) == b"b" * 10000


def test_cors_preflight_and_simple_requests() -> None:
    async def data() -> dict[str, int]:
        return {"n": 1}

    app = Router().route("/data", get(data)).layer(
        CorsLayer(allow_origins=["https://app.example"], allow_headers=["content-type"],
                  allow_credentials=True))
    with TestClient(app) as client:
        preflight = client.options("/data", headers={
            "origin": "https://app.example", "access-control-request-method": "GET"})
        assert preflight.status == 204
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        assert "GET" in preflight.headers["access-control-allow-methods"]
        assert preflight.headers["access-control-allow-credentials"] == "true"
        simple = client.get("/data", headers={"origin": "https://app.example"})
        assert simple.headers["access-control-allow-origin"] == "https://app.example"
        foreign = client.get("/data", headers={"origin": "https://evil.example"})
        assert "access-control-allow-origin" not in foreign.headers
        refused = client.options("/data", headers={
            "origin": "https://evil.example", "access-control-request-method": "GET"})
        assert refused.status == 403


def test_request_id_is_kept_or_made() -> None:
    async def show(request: Request) -> str:
        return str(request.extensions["request_id"])

    app = Router().route("/", get(show)).layer(RequestIdLayer())
    with TestClient(app) as client:
        kept = client.get("/", headers={"x-request-id": "abc-123"})
        assert kept.text == "abc-123" and kept.headers["x-request-id"] == "abc-123"
        made = client.get("/", headers={"x-request-id": "bad id\x7f"})
        assert len(made.text) == 32 and made.headers["x-request-id"] == made.text


def test_body_and_concurrency_limits() -> None:
    async def echo(body: Body[bytes]) -> bytes:
        return body

    app = Router().route("/echo", get(echo).post(echo).layer(BodyLimitLayer(10)))
    with TestClient(app) as client:
        assert client.post("/echo", content=b"12345").content == b"12345"
        assert client.post("/echo", content=b"x" * 11).status == 413

    limit = ConcurrencyLimitLayer(1)

    async def slow() -> str:
        await sleep(0.2)
        return "done"

    limited = Router().route("/", get(slow)).layer(limit)

    async def two_at_once() -> list[int]:
        import asyncio

        client = TestClient(limited)
        results = await asyncio.gather(client.arequest("GET", "/"),
                                       client.arequest("GET", "/"))
        return sorted(response.status for response in results)

    import asyncio

    assert asyncio.run(two_at_once()) == [200, 503]
