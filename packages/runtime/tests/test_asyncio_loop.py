"""keel's asyncio loop on both drivers: streams, servers, protocols, subprocesses, signals,
timers, executors, and uvicorn serving a Starlette app unchanged."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest

from keel.runtime import asyncio_loop

pytestmark = pytest.mark.timeout(60)


def run_on_keel(driver: str, coroutine_function, *args):  # type: ignore[no-untyped-def]
    with asyncio.Runner(loop_factory=lambda: asyncio_loop.new_event_loop(driver)) as runner:
        assert isinstance(runner.get_loop(), asyncio_loop.KeelEventLoop)
        assert runner.get_loop().keel_driver == driver
        return runner.run(coroutine_function(*args))


def test_streams_server_and_large_transfer(driver: str) -> None:
    payload = os.urandom(3 * 1024 * 1024)  # more than one read's worth: level triggering

    async def main() -> bytes:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            data = await reader.readexactly(len(payload))
            writer.write(data)
            await writer.drain()
            writer.close()
            await writer.wait_closed()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(payload)
            await writer.drain()
            echoed = await reader.readexactly(len(payload))
            writer.close()
            await writer.wait_closed()
        return echoed

    assert run_on_keel(driver, main) == payload


def test_protocols_datagrams_timers_and_executor(driver: str) -> None:
    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        events: list[str] = []
        loop.call_soon(events.append, "soon")
        loop.call_later(0.01, events.append, "later")
        received: asyncio.Future[bytes] = loop.create_future()

        class Echo(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, address: object) -> None:
                received.set_result(data)

        transport, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
        sender, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, remote_addr=transport.get_extra_info("sockname"))
        sender.sendto(b"datagram")
        events.append((await asyncio.wait_for(received, 5)).decode())
        sender.close()
        transport.close()
        events.append(await loop.run_in_executor(None, str.upper, "executor"))
        await asyncio.sleep(0.02)
        loop.call_soon_threadsafe(events.append, "threadsafe")
        await asyncio.sleep(0)
        return events

    events = run_on_keel(driver, main)
    assert events[0] == "soon" and events[-1] == "threadsafe"
    assert sorted(events[1:-1]) == ["EXECUTOR", "datagram", "later"]


def test_subprocess_and_signal_handler(driver: str) -> None:
    async def main() -> tuple[bytes, int, bool]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import sys; print(sys.stdin.read().upper())",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        output, _ = await process.communicate(b"from the child")
        loop = asyncio.get_running_loop()
        got_signal = asyncio.Event()
        loop.add_signal_handler(signal.SIGUSR2, got_signal.set)
        try:
            os.kill(os.getpid(), signal.SIGUSR2)
            await asyncio.wait_for(got_signal.wait(), 5)
        finally:
            loop.remove_signal_handler(signal.SIGUSR2)
        return output.strip(), process.returncode or 0, got_signal.is_set()

    assert run_on_keel(driver, main) == (b"FROM THE CHILD", 0, True)


def test_install_makes_asyncio_run_use_keel() -> None:
    async def main() -> str:
        return type(asyncio.get_running_loop()).__name__

    previous = asyncio.get_event_loop_policy()
    asyncio_loop.install()
    try:
        assert asyncio.run(main()) == "KeelEventLoop"
    finally:
        asyncio.set_event_loop_policy(previous)


def test_uvicorn_serves_starlette_unchanged(driver: str) -> None:
    uvicorn = pytest.importorskip("uvicorn")
    starlette_applications = pytest.importorskip("starlette.applications")
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def hello(request: object) -> JSONResponse:
        return JSONResponse({"hello": "keel", "loop": type(asyncio.get_running_loop()).__name__})

    app = starlette_applications.Starlette(routes=[Route("/", hello)])

    async def main() -> bytes:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, loop="none", lifespan="off",
                                log_level="warning")
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        response = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        await writer.wait_closed()
        server.should_exit = True
        await serving
        return response

    response = run_on_keel(driver, main)
    assert response.startswith(b"HTTP/1.1 200")
    assert b'{"hello":"keel","loop":"KeelEventLoop"}' in response
