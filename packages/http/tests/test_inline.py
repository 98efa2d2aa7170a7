"""Requests that arrive on an idle keep-alive connection, on every backend.

Every backend serves these on arrival (asyncio from `data_received`, keel.runtime and trio
in the connection's task right after the read; see the README), and handlers that take
nothing or only Path values are called by the driver itself. The shapes below are the ones
that must leave that path correctly: a handler that waits, one that raises, a result the
driver does not send itself, `Connection: close`, a body, a split head, a malformed request
after a good one; and the same requests must get the same bytes as through the general path.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import AsyncIterator

import pytest

from keel.http import Body, HTTPException, Path, Query, Router, StreamingResponse
from keel.http.concurrency import sleep
from keel.http.handler import Service
from tests.conftest import ResponseReader, connect, read_until_closed, running_server

PARK_PAUSE = 0.05  # long enough for the server to go idle on the connection
WAIT = 0.05
BIG_TEXT = "x" * 100_000  # past the default 64 KiB write high-water mark
MANY_CONNECTIONS = 32


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

    @app.get("/wait-items/{item_id}")
    async def wait_item(item_id: Path[int]) -> dict[str, int]:
        await sleep(WAIT)
        return {"waited": item_id}

    @app.get("/boom-items/{item_id}")
    async def boom_item(item_id: Path[int]) -> dict[str, int]:
        raise RuntimeError("handler failure")

    @app.get("/pairs/{left}/{right}")
    async def pair(left: Path[str], right: Path[int]) -> list[object]:
        return [left, right]

    @app.get("/unencodable/{item_id}")
    async def unencodable(item_id: Path[int]) -> dict[str, object]:
        return {"x": object()}

    @app.get("/created/{item_id}")
    async def created(item_id: Path[int]) -> tuple[int, dict[str, int]]:
        return 201, {"id": item_id}

    @app.get("/greet/{name}")
    async def greet(name: Path[str]) -> str:
        return f"hello {name}"

    @app.get("/big-text")
    async def big_text() -> str:
        return BIG_TEXT

    @app.get("/chunks")
    async def chunks() -> StreamingResponse:
        async def parts() -> AsyncIterator[str]:
            for index in range(3):
                yield f"part{index};"
        return StreamingResponse(parts(), content_type="text/plain")

    return app


def passthrough(inner: Service) -> Service:
    """A layer that changes nothing, except that the app's handlers go the general path."""
    return inner


def make_general_app() -> Router:
    return make_app().layer(passthrough)


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


def test_path_handlers_on_an_idle_connection(backend: str) -> None:
    with running_server(make_app(), backend) as (_, address), connect(address) as sock:
        reader = ResponseReader(sock)
        _parked(sock, reader)
        sock.sendall(_get("/items/7") + _get("/items/x") + _get("/wait-items/3") +
                     _get("/boom-items/1") + _get("/pairs/a/2?q=1") + _get("/unencodable/1") +
                     _get("/created/5") + _get("/greet/b%20c") + _get("/items/8"))
        status, headers, body = reader.read()
        assert (status, headers["content-type"], body) == (200, "application/json",
                                                           b'{"id":7}')
        status, _, body = reader.read()
        assert status == 400 and b"path parameter 'item_id'" in body
        assert reader.read()[::2] == (200, b'{"waited":3}')
        assert reader.read()[0] == 500
        assert reader.read()[::2] == (200, b'["a",2]')
        assert reader.read()[0] == 500
        assert reader.read()[::2] == (201, b'{"id":5}')
        assert reader.read()[::2] == (200, b"hello b c")
        assert reader.read()[::2] == (200, b'{"id":8}')
        sock.sendall(b"HEAD /items/9 HTTP/1.1\r\nHost: t\r\n\r\n" + _get("/items/10"))
        status, headers, body = reader.read(head_request=True)
        assert (status, headers["content-length"], body) == (200, "8", b"")
        assert reader.read()[::2] == (200, b'{"id":10}')


def test_requests_split_across_reads_on_an_idle_connection(backend: str) -> None:
    with running_server(make_app(), backend) as (_, address), connect(address) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = ResponseReader(sock)
        _parked(sock, reader)
        # A whole request and the start of the next, then the rest of that one.
        sock.sendall(_get("/items/1") + b"GET /items/2 HTTP/1.1\r\nHo")
        time.sleep(PARK_PAUSE)
        sock.sendall(b"st: t\r\n\r\n")
        assert reader.read()[2] == b'{"id":1}'
        assert reader.read()[2] == b'{"id":2}'
        # A head whole, its empty line late.
        time.sleep(PARK_PAUSE)
        sock.sendall(b"GET /items/3 HTTP/1.1\r\nHost: t\r\n")
        time.sleep(PARK_PAUSE)
        sock.sendall(b"\r\n")
        assert reader.read()[2] == b'{"id":3}'


BATCHES = [
    # Everything the direct path handles or hands over, then a request that closes.
    _get("/") + _get("/items/7") + _get("/items/x") + _get("/items/7?x=1") +
    _get("/items/%37") + _get("/wait-items/2") + _get("/boom-items/1") + _get("/pairs/a/2") +
    _get("/pairs/a/b") + _get("/unencodable/1") + _get("/created/5") + _get("/greet/z") +
    _get("/wait") + _get("/boom") + _get("/teapot") + _get("/plain-json") + _get("/nowhere") +
    _get("/items/") + _get("/items/1/2") +
    b"HEAD /items/9 HTTP/1.1\r\nHost: t\r\n\r\n" + b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n" +
    b"POST /items/1 HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi" +
    b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi" +
    _get("/items/6", "Connection: close\r\n"),
    # An expectation never answered with 100 closes the connection after the response.
    _get("/items/1") + b"GET /items/4 HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n\r\n" +
    _get("/items/5"),
    # A good request, then smuggling shapes.
    _get("/items/1") + b"GET /items/2 HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    _get("/items/1") + b"GET /items/2 HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    _get("/items/1") + b"GET /items/2 HTTP/1.1\r\nHost: t\r\nX: a\r\n folded\r\n\r\n",
    _get("/items/1") + b"GET /items/2 HTTP/1.1\r\nHost: t\rX: y\r\n\r\n",
    # HTTP/1.0 and an upgrade: answered, then closed.
    _get("/items/1") + b"GET /items/2 HTTP/1.0\r\n\r\n",
    _get("/items/1") + b"GET /items/2 HTTP/1.1\r\nHost: t\r\nUpgrade: h2c\r\n"
    b"Connection: upgrade\r\n\r\n",
]
_DATE = re.compile(rb"date: [^\r]*\r\n")


def _exchange(app: Router, backend: str, batch: bytes, piece: int) -> bytes:
    """Everything the server answers to `batch`, sent in pieces of `piece` bytes."""
    with running_server(app, backend) as (_, address), connect(address) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = ResponseReader(sock)
        _parked(sock, reader)
        try:
            for start in range(0, len(batch), piece):
                sock.sendall(batch[start:start + piece])
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed first (after a closing answer); what it sent still counts
        return _DATE.sub(b"", read_until_closed(sock))


@pytest.mark.parametrize("piece", [1 << 16, 7])
def test_direct_and_general_paths_answer_alike(backend: str, piece: int) -> None:
    # In small pieces only the batches whose answers do not depend on where reads end: a
    # good request read together with a malformed one is answered with `connection: close`
    # (the parser failed in that read), read alone it is not, on either path.
    for batch in BATCHES if piece > len(BATCHES[0]) else BATCHES[:2]:
        direct = _exchange(make_app(), backend, batch, piece)
        general = _exchange(make_general_app(), backend, batch, piece)
        assert direct == general, batch
        assert direct.startswith(b"HTTP/1.1 200 OK\r\n")


def test_which_handlers_the_driver_calls_directly() -> None:
    """Static and Path-only handlers without layers; everything else is the general path."""
    app = Router()

    @app.get("/items/{item_id}")
    async def item(item_id: Path[int]) -> dict[str, int]:
        return {"id": item_id}

    @app.get("/search/{term}")
    async def search(term: Path[str], page: Query[int] = 1) -> str:
        return term

    built = app.build()
    for method, target in [("GET", b"/items/7"), ("HEAD", b"/items/7"),
                           ("GET", b"/items/7?x=1"), ("GET", b"/items/x")]:
        started = built.plain_call(method, target)
        assert started is not None, target
        started.close()  # type: ignore[attr-defined]  # a coroutine, never started
    for method, target in [("POST", b"/items/7"), ("GET", b"/items/%37"),
                           ("GET", b"/search/a"), ("GET", b"/nowhere"), ("GET", b"*"),
                           ("GET", b"http://t/items/7")]:
        assert built.plain_call(method, target) is None, target
    layered = make_app().layer(passthrough).build()
    assert layered.plain_call("GET", b"/items/7") is None
    assert layered.plain_call("GET", b"/") is None


def test_pipelined_whole_streamed_and_large_answers_keep_their_order(backend: str) -> None:
    """Whole answers may wait for the end of the loop turn (asyncio's WriteBatch); a
    streamed answer, a large one past the high-water mark and the close come after them."""
    with running_server(make_app(), backend) as (_, address), connect(address) as sock:
        reader = ResponseReader(sock)
        _parked(sock, reader)
        sock.sendall(_get("/") + _get("/chunks") + _get("/big-text") + _get("/items/1") +
                     _get("/big-text") + _get("/items/2") +
                     _get("/items/3", "Connection: close\r\n"))
        assert reader.read()[2] == b"Hello, World!"
        _, headers, body = reader.read()
        assert (headers["transfer-encoding"], body) == ("chunked", b"part0;part1;part2;")
        assert reader.read()[2] == BIG_TEXT.encode()
        assert reader.read()[2] == b'{"id":1}'
        assert reader.read()[2] == BIG_TEXT.encode()
        assert reader.read()[2] == b'{"id":2}'
        assert reader.read()[2] == b'{"id":3}'
        assert reader.buffer + read_until_closed(sock) == b""


def test_many_idle_connections_answered_together(backend: str) -> None:
    with running_server(make_app(), backend) as (_, address):
        sockets = [connect(address) for _ in range(MANY_CONNECTIONS)]
        try:
            readers = [ResponseReader(sock) for sock in sockets]
            for sock, reader in zip(sockets, readers, strict=True):
                sock.sendall(_get("/"))
                assert reader.read()[2] == b"Hello, World!"
            time.sleep(PARK_PAUSE)
            for round_index in range(3):
                for index, sock in enumerate(sockets):
                    sock.sendall(_get(f"/items/{index}") + _get("/"))
                for index, reader in enumerate(readers):
                    assert reader.read()[2] == b'{"id":%d}' % index, round_index
                    assert reader.read()[2] == b"Hello, World!"
        finally:
            for sock in sockets:
                sock.close()
