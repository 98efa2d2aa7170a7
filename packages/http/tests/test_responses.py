"""Responses from plain values, streaming and files, and exceptions carrying responses."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path as FilePath

import msgspec
import pytest

from keel.http import (
    FileResponse,
    HTTPException,
    Response,
    ResponseException,
    Router,
    StreamingResponse,
    TestClient,
    into_response,
)
from keel.http.errors import ResponseError


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Pair(msgspec.Struct):
    left: str
    right: str


@pytest.mark.parametrize(("value", "status", "content_type", "body"), [
    ("hi", 200, "text/plain; charset=utf-8", b"hi"),
    (b"\x00\x01", 200, "application/octet-stream", b"\x00\x01"),
    ({"a": 1}, 200, "application/json", b'{"a":1}'),
    ([1, 2], 200, "application/json", b"[1,2]"),
    (Point(1, 2), 200, "application/json", b'{"x":1,"y":2}'),
    (Pair("l", "r"), 200, "application/json", b'{"left":"l","right":"r"}'),
    ((201, "made"), 201, "text/plain; charset=utf-8", b"made"),
    ((202, {"x-a": "1"}, {"ok": True}), 202, "application/json", b'{"ok":true}'),
    (Response.html("<b>", status=203), 203, "text/html; charset=utf-8", b"<b>"),
])
def test_plain_values_become_responses(value: object, status: int, content_type: str,
                                       body: bytes) -> None:
    response = into_response(value)
    assert (response.status, response.header("content-type"), response.body) == \
        (status, content_type, body)


def test_tuple_headers_are_kept() -> None:
    assert into_response((202, {"x-a": "1"}, "x")).header("x-a") == "1"


def test_unconvertible_values_are_refused_with_a_reason() -> None:
    with pytest.raises(ResponseError, match="cannot turn object"):
        into_response(object())
    with pytest.raises(ResponseError, match="tuple response"):
        into_response(("a", "b", "c", "d"))


def make_app(tmp_path: FilePath) -> Router:
    app = Router()
    file_path = tmp_path / "data.txt"
    file_path.write_bytes(b"file contents " * 10000)

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def parts() -> AsyncIterator[bytes]:
            for index in range(5):
                yield b"%d" % index
        return StreamingResponse(parts(), content_type="text/plain")

    @app.get("/file")
    async def file() -> FileResponse:
        return FileResponse(file_path)

    @app.get("/teapot")
    async def teapot() -> str:
        raise HTTPException(418, "short and stout")

    @app.get("/carried")
    async def carried() -> str:
        raise ResponseException(Response.json({"redirected": True}, status=299))

    @app.get("/crash")
    async def crash() -> str:
        raise RuntimeError("boom")

    return app


def test_streaming_file_and_error_responses(tmp_path: FilePath) -> None:
    with TestClient(make_app(tmp_path)) as client:
        assert client.get("/stream").text == "01234"
        file = client.get("/file")
        assert file.content == b"file contents " * 10000
        assert file.headers["content-type"] == "text/plain"
        assert file.headers["content-length"] == str(len(file.content))
        teapot = client.get("/teapot")
        assert (teapot.status, teapot.text) == (418, "short and stout")
        carried = client.get("/carried")
        assert (carried.status, carried.json()) == (299, {"redirected": True})
        crash = client.get("/crash")
        assert crash.status == 500 and "boom" not in crash.text
