"""TCP streams and listeners on both drivers: echo, ownership passing, cancellation, errors."""

from __future__ import annotations

import socket
import struct

import pytest

import keel.runtime as kr

MESSAGE = b"hello keel" * 13


async def _echo(stream: kr.TcpStream) -> None:
    buffer = bytearray(4096)
    with stream:
        while True:
            count, buffer = await stream.read(buffer)
            if count == 0:
                return
            await stream.write(memoryview(buffer)[:count])


async def _serve(listener: kr.TcpListener, group: kr.TaskGroup) -> None:
    with listener:
        while True:
            stream, _peer = await listener.accept()
            group.spawn(_echo, stream)


def test_echo_round_trips_and_hands_the_buffer_back(run) -> None:
    async def main() -> None:
        async with kr.TaskGroup() as group:
            listener = kr.TcpListener.bind("127.0.0.1", 0)
            group.spawn(_serve, listener, group)
            with await kr.TcpStream.connect("127.0.0.1", listener.port) as client:
                assert client.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                written, original = await client.write(MESSAGE)
                assert written == len(MESSAGE) and original is MESSAGE
                received = await client.read_exactly(len(MESSAGE))
                assert received == MESSAGE
                buffer = bytearray(16)
                await client.write(b"abc")
                count, returned = await client.read(buffer)
                assert returned is buffer and buffer[:count] == b"abc"
            group.cancel()

    run(main)


def test_many_concurrent_connections(run) -> None:
    connections = 50

    async def client(port: int, number: int, results: list[int]) -> None:
        with await kr.TcpStream.connect("127.0.0.1", port) as stream:
            payload = struct.pack("!I", number) * 256
            await stream.write(payload)
            echoed = await stream.read_exactly(len(payload))
            assert echoed == payload
            results.append(number)

    async def main() -> list[int]:
        results: list[int] = []
        async with kr.TaskGroup() as group:
            listener = kr.TcpListener.bind("127.0.0.1", 0)
            group.spawn(_serve, listener, group)
            async with kr.TaskGroup() as clients:
                for number in range(connections):
                    clients.spawn(client, listener.port, number, results)
            group.cancel()
        return results

    assert sorted(run(main)) == list(range(connections))


def test_cancelled_read_never_writes_into_the_returned_buffer(run) -> None:
    async def main() -> None:
        listener = kr.TcpListener.bind("127.0.0.1", 0)
        with listener, await kr.TcpStream.connect("127.0.0.1", listener.port) as client:
            server, _ = await listener.accept()
            with server:
                buffer = bytearray(64)
                with kr.move_on_after(0.02) as scope:
                    await client.read(buffer)
                assert scope.cancelled_caught
                # The read was cancelled and the kernel let go: data sent now must not
                # appear in the old buffer, and must still be readable.
                await server.write(b"late data")
                await kr.sleep(0.02)
                assert buffer == bytearray(64)
                count, fresh = await client.read(bytearray(64))
                assert fresh[:count] == b"late data"

    run(main)


def test_close_while_reading_raises_closed(run) -> None:
    async def main() -> None:
        listener = kr.TcpListener.bind("127.0.0.1", 0)
        with listener, await kr.TcpStream.connect("127.0.0.1", listener.port) as client:
            server, _ = await listener.accept()
            with server:
                async def reader() -> None:
                    with pytest.raises(kr.ClosedResourceError):
                        await client.read(bytearray(10))

                async with kr.TaskGroup() as group:
                    group.spawn(reader)
                    await kr.sleep(0.01)
                    client.close()
                with pytest.raises(kr.ClosedResourceError):
                    await client.read(bytearray(10))
                with pytest.raises(kr.ClosedResourceError):
                    await client.write(b"x")

    run(main)


def test_close_listener_while_accepting(run) -> None:
    async def main() -> None:
        listener = kr.TcpListener.bind("127.0.0.1", 0)

        async def acceptor() -> None:
            with pytest.raises(kr.ClosedResourceError):
                await listener.accept()

        async with kr.TaskGroup() as group:
            group.spawn(acceptor)
            await kr.sleep(0.01)
            listener.close()

    run(main)


def test_peer_reset_raises_connection_reset(run) -> None:
    async def main() -> None:
        listener = kr.TcpListener.bind("127.0.0.1", 0)
        with listener, await kr.TcpStream.connect("127.0.0.1", listener.port) as client:
            server, _ = await listener.accept()
            with server:
                # SO_LINGER 0: close sends RST instead of FIN.
                client.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                         struct.pack("ii", 1, 0))
                client.close()
                with pytest.raises(ConnectionResetError):
                    await server.read(bytearray(10))

    run(main)


def test_end_of_stream_reads_zero(run) -> None:
    async def main() -> None:
        listener = kr.TcpListener.bind("127.0.0.1", 0)
        with listener, await kr.TcpStream.connect("127.0.0.1", listener.port) as client:
            server, _ = await listener.accept()
            with server:
                client.shutdown_write()
                count, _ = await server.read(bytearray(10))
                assert count == 0

    run(main)


def test_connect_refused(run) -> None:
    async def main() -> None:
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        with pytest.raises(ConnectionRefusedError):
            await kr.TcpStream.connect("127.0.0.1", port)

    run(main)


def test_bad_buffers_and_sizes(run) -> None:
    async def main() -> None:
        listener = kr.TcpListener.bind("127.0.0.1", 0)
        with listener, await kr.TcpStream.connect("127.0.0.1", listener.port) as client:
            server, _ = await listener.accept()
            with server:
                with pytest.raises(TypeError, match="read-only"):
                    await client.read(b"immutable")  # type: ignore[type-var]
                with pytest.raises(TypeError, match="buffer protocol"):
                    await client.read("text")  # type: ignore[type-var]
                with pytest.raises(TypeError, match="buffer protocol"):
                    await client.write(12)  # type: ignore[type-var]
                with pytest.raises(ValueError, match=">= 0"):
                    await client.read(bytearray(4), -1)
                with pytest.raises(ValueError, match=">= 0"):
                    await client.read_exactly(-5)
        with pytest.raises(ValueError, match="port"):
            kr.TcpListener.bind("127.0.0.1", 70000)

    run(main)


def test_two_readers_on_one_stream_is_busy(run) -> None:
    async def main() -> None:
        listener = kr.TcpListener.bind("127.0.0.1", 0)
        with listener, await kr.TcpStream.connect("127.0.0.1", listener.port) as client:
            server, _ = await listener.accept()
            with server:
                async with kr.TaskGroup() as group:
                    group.spawn(client.read, bytearray(4))
                    await kr.sleep(0.01)
                    with pytest.raises(kr.BusyResourceError):
                        await client.read(bytearray(4))
                    group.cancel()

    run(main)


def test_reuseport_listeners_share_a_port(run) -> None:
    async def main() -> None:
        first = kr.TcpListener.bind("127.0.0.1", 0, reuseport=True)
        with first, kr.TcpListener.bind("127.0.0.1", first.port, reuseport=True) as second:
            assert second.port == first.port

    run(main)


def test_steady_state_is_one_kernel_entry_per_loop_turn(run) -> None:
    """Issue 3, point 1: batched submission, one io_uring_enter per loop turn."""
    connections = 16
    messages = 50

    async def client(port: int) -> None:
        with await kr.TcpStream.connect("127.0.0.1", port) as stream:
            buffer = bytearray(128)
            for _ in range(messages):
                await stream.write(b"m" * 128)
                done = 0
                while done < 128:
                    count, buffer = await stream.read(memoryview(buffer)[done:])
                    done += count

    async def main() -> dict[str, int]:
        driver = kr.current_runtime().driver
        async with kr.TaskGroup() as group:
            listener = kr.TcpListener.bind("127.0.0.1", 0)
            group.spawn(_serve, listener, group)
            before = driver.statistics()
            async with kr.TaskGroup() as clients:
                for _ in range(connections):
                    clients.spawn(client, listener.port)
            after = driver.statistics()
            group.cancel()
        return {name: after[name] - before[name] for name in ("turns", "enters", "completions")}

    delta = run(main)
    assert delta["enters"] == delta["turns"]
    # Many operations complete per entry: batching works (every echo is 2 reads here).
    assert delta["completions"] >= connections * messages * 2
    assert delta["completions"] / delta["turns"] > 2
