"""keel.http's client against keel's own server on 127.0.0.1, on both keel.runtime drivers.

Server and client run in one keel.runtime (a task group); raw-socket servers (also keel.runtime
tasks) play the hostile peer for the limit and framing tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

import keel.runtime as kr
from keel.http import Path, Router, Server, StreamingResponse
from keel.http.client import (
    ClientConnectionError,
    ClientLimits,
    ClientProtocolError,
    ClientTimeout,
    HttpClient,
)
from keel.runtime.sync import Event

DRIVERS = ["io_uring", "epoll"]
PATTERN_MODULUS = 251
PATTERN_MULTIPLIER = 31
ONE_MEBIBYTE = 1 << 20
CHUNK = 10_000

app = Router()


def pattern(count: int) -> bytes:
    return bytes(index * PATTERN_MULTIPLIER % PATTERN_MODULUS for index in range(count))


@app.get("/")
async def index() -> str:
    return "hello"


@app.get("/bytes/{count}")
async def some_bytes(count: Path[int]) -> bytes:
    return pattern(count)


@app.get("/chunked/{count}")
async def chunked(count: Path[int]) -> StreamingResponse:
    async def pieces() -> AsyncIterator[bytes]:
        body = pattern(count)
        for start in range(0, count, CHUNK):
            yield body[start:start + CHUNK]
    return StreamingResponse(pieces())


def run_with_server(driver: str, body: Callable[[int], Awaitable[None]]) -> None:
    """Serve `app` on an ephemeral port, run `body(port)`, then stop the server."""
    async def main() -> None:
        server = Server(app, host="127.0.0.1", port=0, backend="runtime")
        ready = Event()
        ports: list[int] = []

        def on_ready(addresses: list[tuple[str, int]]) -> None:
            ports.append(addresses[0][1])
            ready.set()

        async with kr.TaskGroup() as group:
            group.spawn(server.serve, on_ready)
            await ready.wait()
            try:
                await body(ports[0])
            finally:
                server.shutdown()

    kr.run(main, driver=driver)


def run_with_raw_server(driver: str, reply: bytes, body: Callable[[int], Awaitable[None]],
                        close_after_reply: bool = True, connections: int = 1) -> None:
    """A hostile server: per connection, reads one request head, sends `reply` verbatim
    (then closes); `connections` of them, one after the other."""
    async def main() -> None:
        with kr.TcpListener.bind("127.0.0.1", 0) as listener:
            async def serve_once() -> None:
                for _ in range(connections):
                    await serve_connection()

            async def serve_connection() -> None:
                stream, _ = await listener.accept()
                with stream:
                    buffer = bytearray(4096)
                    received = b""
                    while b"\r\n\r\n" not in received:
                        count, buffer = await stream.read(buffer)
                        if count == 0:
                            return
                        received += bytes(buffer[:count])
                    await stream.write(reply)
                    if not close_after_reply:
                        await kr.sleep(3600)

            async with kr.TaskGroup() as group:
                group.spawn(serve_once)
                try:
                    await body(listener.port)
                finally:
                    group.cancel()

    kr.run(main, driver=driver)


@pytest.mark.parametrize("driver", DRIVERS)
def test_keep_alive_reuses_one_connection_for_many_requests(driver: str) -> None:
    async def body(port: int) -> None:
        async with HttpClient("127.0.0.1", port, timeout=10) as client:
            for _ in range(50):
                response = await client.get("/")
                assert response.status == 200
                assert response.body == b"hello"
                assert response.keep_alive
            assert client.connections_opened == 1
            missing = await client.get("/nowhere")
            assert missing.status == 404
    run_with_server(driver, body)


@pytest.mark.parametrize("driver", DRIVERS)
def test_content_length_and_chunked_bodies_arrive_byte_for_byte(driver: str) -> None:
    async def body(port: int) -> None:
        async with HttpClient("127.0.0.1", port, timeout=20) as client:
            whole = await client.get(f"/bytes/{ONE_MEBIBYTE}")
            assert whole.header("content-length") == str(ONE_MEBIBYTE)
            assert whole.body == pattern(ONE_MEBIBYTE)
            streamed = await client.get(f"/chunked/{ONE_MEBIBYTE + 7}")
            assert (streamed.header("Transfer-Encoding") or "").lower() == "chunked"
            assert streamed.body == pattern(ONE_MEBIBYTE + 7)
            assert client.connections_opened == 1
    run_with_server(driver, body)


@pytest.mark.parametrize("driver", DRIVERS)
def test_concurrent_clients_each_get_their_own_answer(driver: str) -> None:
    async def body(port: int) -> None:
        results: dict[int, bytes] = {}

        async def fetch(count: int) -> None:
            async with HttpClient("127.0.0.1", port, timeout=10) as client:
                results[count] = (await client.get(f"/bytes/{count}")).body

        async with kr.TaskGroup() as group:
            for count in range(1, 17):
                group.spawn(fetch, count * 1000)
        assert results == {count * 1000: pattern(count * 1000) for count in range(1, 17)}
    run_with_server(driver, body)


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_connection_the_server_closed_is_replaced_for_the_next_get(driver: str) -> None:
    async def body(port: int) -> None:
        async with HttpClient("127.0.0.1", port, timeout=10) as client:
            closing = await client.get("/", headers=[("Connection", "close")])
            assert closing.status == 200 and not closing.keep_alive
            again = await client.get("/")
            assert again.body == b"hello"
            assert client.connections_opened == 2
    run_with_server(driver, body)


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_get_on_a_kept_alive_connection_the_server_dropped_is_retried_once(
        driver: str) -> None:
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"   # keep-alive, then it closes

    async def body(port: int) -> None:
        async with HttpClient("127.0.0.1", port, timeout=10) as client:
            first = await client.get("/")
            assert first.body == b"ok" and first.keep_alive
            await kr.sleep(0.05)                                 # the server has closed by now
            second = await client.get("/")
            assert second.body == b"ok"
            assert client.connections_opened == 2
    run_with_raw_server(driver, reply, body, connections=2)


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_body_over_the_limit_is_refused(driver: str) -> None:
    async def body(port: int) -> None:
        async with HttpClient("127.0.0.1", port, timeout=10,
                              limits=ClientLimits(max_body_bytes=1000)) as client:
            with pytest.raises(ClientProtocolError, match="body over 1000 bytes"):
                await client.get("/bytes/5000")
            with pytest.raises(ClientProtocolError, match="body over 1000 bytes"):
                await client.get("/chunked/5000")
    run_with_server(driver, body)


@pytest.mark.parametrize("driver", DRIVERS)
def test_endless_headers_are_cut_off_at_the_limit(driver: str) -> None:
    reply = b"HTTP/1.1 200 OK\r\n" + b"X-Filler: " + b"a" * 100_000 + b"\r\n\r\n"

    async def body(port: int) -> None:
        async with HttpClient("127.0.0.1", port, timeout=10,
                              limits=ClientLimits(max_header_bytes=8192)) as client:
            with pytest.raises(ClientProtocolError, match="over 8192 bytes"):
                await client.get("/")
    run_with_raw_server(driver, reply, body, close_after_reply=False)


@pytest.mark.parametrize("driver", DRIVERS)
def test_garbage_is_a_protocol_error(driver: str) -> None:
    async def body(port: int) -> None:
        async with HttpClient("127.0.0.1", port, timeout=10) as client:
            with pytest.raises(ClientProtocolError, match="malformed response"):
                await client.get("/")
    run_with_raw_server(driver, b"SMTP ready\r\n\r\n", body)


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_truncated_body_is_a_connection_error(driver: str) -> None:
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort"

    async def body(port: int) -> None:
        async with HttpClient("127.0.0.1", port, timeout=10) as client:
            with pytest.raises(ClientConnectionError, match="before the whole response"):
                await client.get("/")
    run_with_raw_server(driver, reply, body)


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_body_delimited_by_close_ends_with_the_connection(driver: str) -> None:
    reply = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end"

    async def body(port: int) -> None:
        async with HttpClient("127.0.0.1", port, timeout=10) as client:
            response = await client.get("/")
            assert response.body == b"until the end" and not response.keep_alive
    run_with_raw_server(driver, reply, body)


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_silent_server_times_out(driver: str) -> None:
    async def body(port: int) -> None:
        async with HttpClient("127.0.0.1", port, timeout=0.3) as client:
            with pytest.raises(ClientTimeout, match=r"took over 0\.3 s"):
                await client.get("/")
    run_with_raw_server(driver, b"HTTP/1.1 200 OK\r\n", body, close_after_reply=False)


def test_requests_that_would_be_malformed_are_refused_before_sending() -> None:
    client = HttpClient("127.0.0.1", 80)
    with pytest.raises(ValueError, match="path"):
        kr.run(client.get, "/a b")
    with pytest.raises(ValueError, match="header"):
        kr.run(client.get, "/", [("X-Bad", "a\r\nInjected: 1")])
    with pytest.raises(ValueError, match="port"):
        HttpClient("127.0.0.1", 0)
