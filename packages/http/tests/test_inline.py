"""Requests that arrive on an idle keep-alive connection, on every backend.

The asyncio stream serves these inline from `data_received` (no task, see the README); the
shapes below are the ones that must leave that path correctly: a handler that waits, one that
raises, `Connection: close`, a body, a split head, a malformed request after a good one.
"""

from __future__ import annotations

import socket
import time

from keel.http import Body, HTTPException, Path, Router
from keel.http.concurrency import sleep
from tests.conftest import ResponseReader, connect, read_until_closed, running_server

PARK_PAUSE = 0.05  # long enough for the server to go idle on the connection
WAIT = 0.05


def make_app() -> Router:
    app = Router()

    @app.get("/")
    async def index() -> str:
        return "Hello, World!"

    @app.get("/wait")
    async def wait() -> str:
        await sleep(WAIT)
        return "waited"

    @app.get("/boom")
    async def boom() -> str:
        raise RuntimeError("handler failure")

    @app.get("/teapot")
    async def teapot() -> str:
        raise HTTPException(418, "short and stout")

    @app.get("/plain-json")
    async def plain_json() -> dict[str, int]:
        return {"a": 1}

    @app.get("/items/{item_id}")
    async def item(item_id: Path[int]) -> dict[str, int]:
        return {"id": item_id}

    @app.post("/echo")
    async def echo(body: Body[bytes]) -> bytes:
        return body

    return app


def _get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode()


def _parked(sock: socket.socket, reader: ResponseReader) -> None:
    """One request answered, then a pause: the connection is idle (parked on asyncio)."""
    sock.sendall(_get("/"))
    assert reader.read()[2] == b"Hello, World!"
    time.sleep(PARK_PAUSE)


def test_a_pipelined_batch_on_an_idle_connection(backend: str) -> None:
    with running_server(make_app(), backend) as (_, address), connect(address) as sock:
        reader = ResponseReader(sock)
        _parked(sock, reader)
        sock.sendall(_get("/") + _get("/wait") + _get("/boom") + _get("/teapot") +
                     _get("/nowhere") + _get("/") + _get("/", "Connection: close\r\n"))
        assert reader.read()[::2] == (200, b"Hello, World!")
        assert reader.read()[::2] == (200, b"waited")
        assert reader.read()[0] == 500
        assert reader.read()[::2] == (418, b"short and stout")
        assert reader.read()[0] == 404
        assert reader.read()[::2] == (200, b"Hello, World!")
        status, headers, body = reader.read()
        assert (status, body, headers["connection"]) == (200, b"Hello, World!", "close")
        assert reader.buffer + read_until_closed(sock) == b""


def test_idle_connection_keeps_serving_after_a_waiting_handler(backend: str) -> None:
    with running_server(make_app(), backend) as (_, address), connect(address) as sock:
        reader = ResponseReader(sock)
        for _ in range(3):
            _parked(sock, reader)
            sock.sendall(_get("/wait"))
            assert reader.read()[2] == b"waited"
        sock.sendall(_get("/items/7"))
        assert reader.read()[2] == b'{"id":7}'


def test_plain_handlers_on_an_idle_connection(backend: str) -> None:
    with running_server(make_app(), backend) as (_, address), connect(address) as sock:
        reader = ResponseReader(sock)
        _parked(sock, reader)
        sock.sendall(_get("/plain-json") + _get("/?x=1") + _get("/plain-json?y") +
                     b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi" + _get("/"))
        status, headers, body = reader.read()
        assert (status, headers["content-type"], body) == (200, "application/json", b'{"a":1}')
        assert reader.read()[::2] == (200, b"Hello, World!")
        assert reader.read()[::2] == (200, b'{"a":1}')
        status, headers, _ = reader.read()
        assert (status, headers["allow"]) == (405, "GET, HEAD")
        assert reader.read()[::2] == (200, b"Hello, World!")


def test_body_and_head_on_an_idle_connection(backend: str) -> None:
    with running_server(make_app(), backend) as (_, address), connect(address) as sock:
        reader = ResponseReader(sock)
        _parked(sock, reader)
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello" +
                     b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert reader.read()[2] == b"hello"
        status, headers, body = reader.read(head_request=True)
        assert (status, headers["content-length"], body) == (200, "13", b"")
        time.sleep(PARK_PAUSE)
        # The body arrives after the head: the request waits for it.
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nab")
        time.sleep(PARK_PAUSE)
        sock.sendall(b"cde")
        assert reader.read()[2] == b"abcde"


def test_split_head_on_an_idle_connection(backend: str) -> None:
    with running_server(make_app(), backend) as (_, address), connect(address) as sock:
        reader = ResponseReader(sock)
        _parked(sock, reader)
        sock.sendall(b"GET / HT")
        time.sleep(PARK_PAUSE)
        sock.sendall(b"TP/1.1\r\nHost: t\r\n\r\n")
        assert reader.read()[2] == b"Hello, World!"


def test_malformed_request_on_an_idle_connection(backend: str) -> None:
    with running_server(make_app(), backend) as (_, address), connect(address) as sock:
        reader = ResponseReader(sock)
        _parked(sock, reader)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nBad Header\r\n\r\n")
        assert reader.read()[0] == 400
        assert reader.buffer + read_until_closed(sock) == b""


def test_malformed_request_after_a_good_one_on_an_idle_connection(backend: str) -> None:
    with running_server(make_app(), backend) as (_, address), connect(address) as sock:
        reader = ResponseReader(sock)
        _parked(sock, reader)
        sock.sendall(_get("/") + b"GET / HTTP/1.1\r\nHost: t\r\nBad Header\r\n\r\n")
        # The parser fails in the same read: the good request is answered with
        # `connection: close`, and the connection ends there.
        status, headers, body = reader.read()
        assert (status, body, headers["connection"]) == (200, b"Hello, World!", "close")
        assert reader.buffer + read_until_closed(sock) == b""
