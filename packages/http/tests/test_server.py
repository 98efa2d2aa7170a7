"""The server over real sockets on 127.0.0.1, on every backend."""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path as FilePath

import pytest
import trustme

from keel.http import (
    Body,
    BodyStream,
    Limits,
    Router,
    ServerConfig,
    StreamingResponse,
    Timeouts,
)
from keel.http.concurrency import sleep
from keel.http.server.server import Server
from tests.conftest import (
    ResponseReader,
    connect,
    read_until_closed,
    request,
    running_server,
    wait_for,
)

CHUNK = b"x" * 65536
BIG_CHUNKS = 2000  # 128 MiB if nothing pushed back


def make_app(state: dict[str, int]) -> Router:
    app = Router()

    @app.get("/")
    async def index() -> str:
        return "Hello, World!"

    @app.post("/echo")
    async def echo(body: Body[bytes]) -> bytes:
        return body

    @app.post("/stream-echo")
    async def stream_echo(body: BodyStream) -> StreamingResponse:
        async def back() -> AsyncIterator[bytes]:
            async for chunk in body:
                yield chunk.upper()
        return StreamingResponse(back())

    @app.get("/chunks")
    async def chunks() -> StreamingResponse:
        async def parts() -> AsyncIterator[str]:
            for index in range(3):
                yield f"part{index};"
        return StreamingResponse(parts(), content_type="text/plain")

    @app.get("/slow")
    async def slow() -> str:
        state["slow_started"] = state.get("slow_started", 0) + 1
        await sleep(0.5)
        return "done"

    @app.get("/big")
    async def big() -> StreamingResponse:
        async def produce() -> AsyncIterator[bytes]:
            for _ in range(BIG_CHUNKS):
                state["produced"] = state.get("produced", 0) + 1
                yield CHUNK
        return StreamingResponse(produce())

    return app


GET = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"


def test_keep_alive_and_pipelining(backend: str) -> None:
    with running_server(make_app({}), backend) as (_, address), connect(address) as sock:
        reader = ResponseReader(sock)
        sock.sendall(GET)
        assert reader.read() [2] == b"Hello, World!"
        sock.sendall(GET * 3 + b"GET /chunks HTTP/1.1\r\nHost: t\r\n\r\n")
        bodies = [reader.read()[2] for _ in range(4)]
        assert bodies == [b"Hello, World!"] * 3 + [b"part0;part1;part2;"]


def test_chunked_request_and_streaming_echo(backend: str) -> None:
    with running_server(make_app({}), backend) as (_, address):
        status, headers, body = request(address, (
            b"POST /stream-echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"))
        assert (status, body) == (200, b"HELLO WORLD")
        assert headers["transfer-encoding"] == "chunked"


def test_expect_continue_gets_100_before_the_body(backend: str) -> None:
    with running_server(make_app({}), backend) as (_, address), connect(address) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(b"abcde")
        assert ResponseReader(sock).read()[2] == b"abcde"


def test_head_has_headers_and_no_body(backend: str) -> None:
    with running_server(make_app({}), backend) as (_, address), connect(address) as sock:
        sock.sendall(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n" + GET)
        reader = ResponseReader(sock)
        status, headers, _ = reader.read(head_request=True)
        assert status == 200 and headers["content-length"] == "13"
        assert "date" in headers and headers["server"] == "keel"
        assert reader.read()[2] == b"Hello, World!"  # nothing stray between the two


def test_limits_over_the_wire(backend: str) -> None:
    config = ServerConfig(limits=Limits(max_request_line=100, max_header_bytes=1000,
                                        max_body_bytes=10))
    with running_server(make_app({}), backend, config) as (_, address):
        assert request(address, b"GET /" + b"a" * 200 + b" HTTP/1.1\r\nHost: t\r\n\r\n")[0] \
            == 414
        assert request(address, b"GET / HTTP/1.1\r\nHost: t\r\nX: " + b"a" * 2000 +
                       b"\r\n\r\n")[0] == 431
        assert request(address, b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n"
                       b"\r\n" + b"a" * 11)[0] == 413
        assert request(address, GET)[0] == 200


def test_header_timeout_answers_408_and_closes(backend: str) -> None:
    config = ServerConfig(timeouts=Timeouts(header=0.3))
    with running_server(make_app({}), backend, config) as (_, address), \
            connect(address) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost:")
        started = time.monotonic()
        answer = read_until_closed(sock)
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert time.monotonic() - started < 5


def test_idle_keep_alive_connection_is_closed(backend: str) -> None:
    config = ServerConfig(timeouts=Timeouts(idle=0.3))
    with running_server(make_app({}), backend, config) as (_, address), \
            connect(address) as sock:
        sock.sendall(GET)
        ResponseReader(sock).read()
        assert sock.recv(100) == b""  # closed silently after the idle timeout


def test_body_timeout_answers_408(backend: str) -> None:
    config = ServerConfig(timeouts=Timeouts(body=0.3))
    with running_server(make_app({}), backend, config) as (_, address), \
            connect(address) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
        assert read_until_closed(sock).startswith(b"HTTP/1.1 408 ")


def test_half_closed_client_still_gets_its_answer(backend: str) -> None:
    with running_server(make_app({}), backend) as (_, address), connect(address) as sock:
        sock.sendall(GET)
        sock.shutdown(socket.SHUT_WR)
        answer = read_until_closed(sock)
        assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"Hello, World!")


def test_slow_reader_does_not_make_the_server_buffer(backend: str) -> None:
    state: dict[str, int] = {}
    config = ServerConfig(timeouts=Timeouts(send=5))
    with running_server(make_app(state), backend, config) as (_, address), \
            connect(address) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
        assert wait_for(lambda: state.get("produced", 0) > 0)
        time.sleep(0.5)
        # Socket buffers hold a few MiB at most; the producer must be waiting on them.
        assert state["produced"] < 200, state
        received = len(sock.recv(65536))
        assert received > 0


def test_graceful_shutdown_finishes_in_flight_and_refuses_new(backend: str) -> None:
    state: dict[str, int] = {}
    with running_server(make_app(state), backend) as (server, address):
        idle = connect(address)
        busy = connect(address)
        try:
            idle.sendall(GET)
            ResponseReader(idle).read()
            busy.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
            assert wait_for(lambda: state.get("slow_started") == 1)
            server.shutdown_threadsafe()
            status, headers, body = ResponseReader(busy).read()
            assert (status, body) == (200, b"done")
            assert headers.get("connection") == "close" or busy.recv(10) == b""
            assert idle.recv(10) == b""  # idle keep-alive connection closed
            assert wait_for(lambda: _refused(address))
        finally:
            idle.close()
            busy.close()


def _refused(address: tuple[str, int]) -> bool:
    try:
        socket.create_connection(address, timeout=1).close()
    except OSError:
        return True
    return False


def test_hostile_clients_do_not_stop_others(backend: str) -> None:
    from tests.test_core import SMUGGLING_AND_MALFORMED

    config = ServerConfig(timeouts=Timeouts(header=2))
    with running_server(make_app({}), backend, config) as (_, address):
        slow_loris = connect(address)
        try:
            slow_loris.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nX-A: ")
            for data in SMUGGLING_AND_MALFORMED:
                with connect(address) as sock:
                    sock.sendall(data)
                    answer = read_until_closed(sock)
                    assert answer == b"" or answer.startswith(b"HTTP/1.1 4") or \
                        answer.startswith(b"HTTP/1.1 5"), (data, answer[:80])
            assert request(address, GET)[2] == b"Hello, World!"
        finally:
            slow_loris.close()


def test_access_log(backend: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="keel.http.access"), \
            running_server(make_app({}), backend, ServerConfig(access_log=True)) as (_, address):
        request(address, GET)
    assert any('"GET / HTTP/1.1" 200 13' in record.getMessage() for record in caplog.records)


def test_tls(backend: str, tmp_path: FilePath) -> None:
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate.configure_cert(server_context)
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)
    with running_server(make_app({}), backend, ssl_context=server_context) as (_, address), \
            socket.create_connection(address, timeout=10) as raw, \
            client_context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        sock.sendall(GET)
        assert ResponseReader(sock).read()[2] == b"Hello, World!"


def test_many_concurrent_connections(backend: str) -> None:
    with running_server(make_app({}), backend) as (_, address):
        sockets = [connect(address) for _ in range(50)]
        try:
            for sock in sockets:
                sock.sendall(GET)
            assert all(ResponseReader(sock).read()[0] == 200 for sock in sockets)
        finally:
            for sock in sockets:
                sock.close()


def test_server_refuses_a_taken_port() -> None:
    from keel.http.server.server import ServerError, bind_socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(ServerError, match="cannot listen"):
            bind_socket("127.0.0.1", taken.getsockname()[1])


def test_server_threads_are_joined() -> None:
    before = threading.active_count()
    with running_server(make_app({}), "asyncio") as (_, address):
        request(address, GET)
    assert threading.active_count() == before
    assert isinstance(Server, type)


def test_waiting_handler_after_an_idle_keep_alive_period(backend: str) -> None:
    """On asyncio an idle connection is parked; a handler that then waits moves to a task."""
    state: dict[str, int] = {}
    config = ServerConfig(timeouts=Timeouts(header=0.5))
    with running_server(make_app(state), backend, config) as (_, address), \
            connect(address) as sock:
        reader = ResponseReader(sock)
        sock.sendall(GET)
        assert reader.read()[2] == b"Hello, World!"
        time.sleep(0.1)  # idle: parked
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        assert reader.read()[2] == b"done"
        sock.sendall(GET)
        assert reader.read()[2] == b"Hello, World!"
        time.sleep(0.1)
        sock.sendall(b"GET / HTTP/1.1\r\n")  # a partial head after parking: header timeout
        assert read_until_closed(sock).startswith(b"HTTP/1.1 408 ")
