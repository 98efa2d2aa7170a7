"""Responses, and how a handler's plain return value becomes one.

Why a `Responder`: the connection driver, the ASGI adapter and the test client each deliver a
response differently, so a response only knows how to `send` itself through the four calls of
this protocol; small bodies go out in one write together with the head.
"""

from __future__ import annotations

import dataclasses
import mimetypes
import os
from collections.abc import AsyncIterable, Mapping, Sequence
from http import HTTPStatus
from typing import Any, Protocol

import msgspec

from keel.http.errors import ResponseError

FILE_CHUNK_SIZE = 64 * 1024
TEXT_TYPE = "text/plain; charset=utf-8"
JSON_TYPE = "application/json"
BYTES_TYPE = "application/octet-stream"
HTML_TYPE = "text/html; charset=utf-8"
OK = 200
TUPLE_WITH_HEADERS = 3
TUPLE_WITH_STATUS = 2

TEXT_HEADERS: tuple[tuple[str, str], ...] = (("content-type", TEXT_TYPE),)
JSON_HEADERS: tuple[tuple[str, str], ...] = (("content-type", JSON_TYPE),)

_json_encoder = msgspec.json.Encoder()
# The encoder's bound method, for hot paths that handle its errors themselves.
encode_json_unchecked = _json_encoder.encode


class Responder(Protocol):
    """Where a response goes: the wire, an ASGI `send`, or the test client's buffer."""

    async def send_whole(self, status: int, headers: Sequence[tuple[str, str]],
                         body: bytes) -> None: ...

    async def start(self, status: int, headers: Sequence[tuple[str, str]],
                    content_length: int | None) -> None: ...

    async def write(self, data: bytes) -> None: ...

    async def end(self) -> None: ...


HeaderInput = Mapping[str, str] | Sequence[tuple[str, str]] | None


def header_list(headers: HeaderInput) -> list[tuple[str, str]]:
    if headers is None:
        return []
    if isinstance(headers, Mapping):
        return list(headers.items())
    return list(headers)


class Response:
    """A status, headers and a body held in memory."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, body: bytes | str = b"", status: int = OK, headers: HeaderInput = None,
                 content_type: str | None = None) -> None:
        self.status = status
        self.headers = header_list(headers)
        if isinstance(body, str):
            body = body.encode()
            content_type = content_type or TEXT_TYPE
        self.body = body
        if content_type is not None:
            self.headers.append(("content-type", content_type))

    @classmethod
    def text(cls, text: str, status: int = OK, headers: HeaderInput = None) -> Response:
        return cls(text.encode(), status, headers, TEXT_TYPE)

    @classmethod
    def html(cls, html: str, status: int = OK, headers: HeaderInput = None) -> Response:
        return cls(html.encode(), status, headers, HTML_TYPE)

    @classmethod
    def json(cls, value: Any, status: int = OK, headers: HeaderInput = None) -> Response:
        return cls(encode_json(value), status, headers, JSON_TYPE)

    @classmethod
    def redirect(cls, location: str, status: int = 307) -> Response:
        return cls(b"", status, [("location", location)])

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return None

    def set_header(self, name: str, value: str) -> None:
        lowered = name.lower()
        self.headers = [(k, v) for k, v in self.headers if k.lower() != lowered]
        self.headers.append((name, value))

    async def send(self, responder: Responder) -> None:
        await responder.send_whole(self.status, self.headers, self.body)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.status}>"


class StreamingResponse(Response):
    """A body produced piece by piece; chunked unless `content_length` is given."""

    __slots__ = ("content_length", "iterator")

    def __init__(self, iterator: AsyncIterable[bytes | str], status: int = OK,
                 headers: HeaderInput = None, content_type: str | None = BYTES_TYPE,
                 content_length: int | None = None) -> None:
        super().__init__(b"", status, headers, content_type)
        self.iterator = iterator
        self.content_length = content_length

    async def send(self, responder: Responder) -> None:
        await responder.start(self.status, self.headers, self.content_length)
        async for piece in self.iterator:
            await responder.write(piece.encode() if isinstance(piece, str) else piece)
        await responder.end()


class FileResponse(Response):
    """A file sent in bounded chunks, with its length and a guessed content type."""

    __slots__ = ("chunk_size", "path")

    def __init__(self, path: str | os.PathLike[str], status: int = OK,
                 headers: HeaderInput = None, content_type: str | None = None,
                 chunk_size: int = FILE_CHUNK_SIZE) -> None:
        self.path = os.fspath(path)
        if content_type is None:
            content_type = mimetypes.guess_type(self.path)[0] or BYTES_TYPE
        super().__init__(b"", status, headers, content_type)
        self.chunk_size = chunk_size

    async def send(self, responder: Responder) -> None:
        with open(self.path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            await responder.start(self.status, self.headers, size)
            remaining = size
            while remaining > 0:
                chunk = file.read(min(self.chunk_size, remaining))
                if not chunk:
                    raise ResponseError(f"{self.path} shrank while it was being sent")
                remaining -= len(chunk)
                await responder.write(chunk)
        await responder.end()


def encode_json(value: Any) -> bytes:
    try:
        return _json_encoder.encode(value)
    except (TypeError, msgspec.EncodeError) as error:
        raise ResponseError(f"cannot encode {type(value).__name__} as JSON: {error}") from None


def _body_response(body: Any, status: int, headers: HeaderInput) -> Response:
    if isinstance(body, Response):
        body.status = status
        body.headers.extend(header_list(headers))
        return body
    response = into_response(body)
    response.status = status
    if headers:
        response.headers.extend(header_list(headers))
    return response


def into_response(value: Any) -> Response:
    """A handler's return value as a Response (str, bytes, JSON-able, tuples, Response)."""
    if isinstance(value, Response):
        return value
    if isinstance(value, str):
        return Response(value.encode(), OK, None, TEXT_TYPE)
    if isinstance(value, bytes | bytearray | memoryview):
        return Response(bytes(value), OK, None, BYTES_TYPE)
    if value is None:
        return Response(b"", OK)
    if isinstance(value, tuple):
        if len(value) == TUPLE_WITH_HEADERS and isinstance(value[0], int):
            return _body_response(value[2], value[0], value[1])
        if len(value) == TUPLE_WITH_STATUS and isinstance(value[0], int):
            return _body_response(value[1], value[0], None)
        raise ResponseError(f"a tuple response must be (status, body) or (status, headers, "
                            f"body), got {len(value)} items starting with {value[:1]!r}")
    if isinstance(value, dict | list | msgspec.Struct | int | float) or \
            dataclasses.is_dataclass(value):
        return Response(encode_json(value), OK, None, JSON_TYPE)
    raise ResponseError(f"cannot turn {type(value).__name__} into a response; return str, "
                        "bytes, a number, dict, list, a dataclass, a msgspec Struct, a tuple "
                        "or a Response")


def error_response(status: int, detail: object = None,
                   headers: HeaderInput = None) -> Response:
    """A plain-text (or JSON, for structured detail) error response."""
    if detail is None:
        try:
            detail = HTTPStatus(status).phrase
        except ValueError:
            detail = f"error {status}"
    if isinstance(detail, str):
        return Response(detail.encode(), status, headers, TEXT_TYPE)
    return Response(encode_json({"detail": detail}), status, headers, JSON_TYPE)
