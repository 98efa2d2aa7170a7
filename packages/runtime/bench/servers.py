"""Echo servers for the benchmark, one per competitor; run as `servers.py KIND`.

Each binds 127.0.0.1 on a free port, prints the port on stdout, and echoes until killed.
asyncio-style competitors use a Protocol (their fastest idiom); keel uses its own streams.
"""

from __future__ import annotations

import asyncio
import socket
import sys

BUFFER_BYTES = 65536
HOST = "127.0.0.1"


def announce(port: int) -> None:
    print(port, flush=True)


def keel_server(driver: str) -> None:
    import keel.runtime as kr

    async def echo(stream: kr.TcpStream) -> None:
        buffer = bytearray(BUFFER_BYTES)
        with stream:
            while True:
                try:
                    count, buffer = await stream.read(buffer)
                except OSError:
                    return
                if count == 0:
                    return
                await stream.write(buffer, count)

    async def main() -> None:
        async with kr.TaskGroup() as group:
            with kr.TcpListener.bind(HOST, 0) as listener:
                announce(listener.port)
                while True:
                    stream, _ = await listener.accept()
                    group.spawn(echo, stream)

    kr.run(main, driver=driver)


class EchoProtocol(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


async def protocol_main() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(EchoProtocol, HOST, 0)
    announce(server.sockets[0].getsockname()[1])
    await asyncio.Event().wait()


def trio_server() -> None:
    import trio

    async def echo(stream: trio.SocketStream) -> None:
        async with stream:
            while True:
                try:
                    data = await stream.receive_some(BUFFER_BYTES)
                except trio.BrokenResourceError:
                    return
                if not data:
                    return
                await stream.send_all(data)

    async def main() -> None:
        listeners = await trio.open_tcp_listeners(0, host=HOST)
        announce(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(echo, listeners)

    trio.run(main)


def main(kind: str) -> None:
    if kind in ("keel-io_uring", "keel-epoll"):
        keel_server(kind.removeprefix("keel-"))
    elif kind == "asyncio":
        asyncio.run(protocol_main())
    elif kind == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(protocol_main())
    elif kind == "keel-asyncio":
        from keel.runtime import asyncio_loop

        with asyncio.Runner(loop_factory=asyncio_loop.new_event_loop) as runner:
            runner.run(protocol_main())
    elif kind == "trio":
        trio_server()
    else:
        raise SystemExit(f"unknown server kind {kind!r}")


if __name__ == "__main__":
    main(sys.argv[1])
