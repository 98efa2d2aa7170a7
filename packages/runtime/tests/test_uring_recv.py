"""The io_uring driver's two read paths: multishot recv with provided buffers (the default
where the kernel has it) and one RECV SQE per read (older kernels, `multishot_recv=False`)."""

from __future__ import annotations

import pytest

import keel.runtime as kr
from keel.runtime.drivers.uring import RECV_BUFFER_BYTES, RECV_BUFFERS, UringDriver
from keel.runtime.drivers.uring_recv import PENDING_LIMIT_BYTES, RecvStream
from keel.runtime.scheduler import current_runtime

pytestmark = pytest.mark.timeout(60)

MULTISHOT = [True, False]


def uring(multishot: bool) -> UringDriver:
    return UringDriver(multishot_recv=multishot)


def test_multishot_recv_is_used_on_this_kernel() -> None:
    """This project's machines run Linux 6.18: the fast path must actually be taken."""

    async def main() -> bool:
        driver = current_runtime().driver
        assert isinstance(driver, UringDriver)
        left, right = kr.UnixStream.pair()
        with left, right:
            await right.write(b"ping")
            count, buffer = await left.read(bytearray(8))
            assert bytes(buffer[:count]) == b"ping"
            return isinstance(driver._recvs.get(left.fileno()), RecvStream)

    driver = uring(True)
    assert driver.multishot_recv
    assert kr.run(main, driver=driver, strict=True)


@pytest.mark.parametrize("multishot", MULTISHOT)
def test_bytes_arriving_without_a_reader_come_out_in_order(multishot: bool) -> None:
    """Several messages land before anyone reads; small reads take them piece by piece."""

    async def main() -> bytes:
        left, right = kr.UnixStream.pair()
        received = bytearray()
        with left, right:
            await right.write(b"first|")   # arms the recv with an outstanding read below
            count, buffer = await left.read(bytearray(64))
            received += buffer[:count]
            for part in (b"second|", b"third|", b"x" * (3 * RECV_BUFFER_BYTES)):
                await right.write(part)
            await kr.sleep(0.01)  # every byte is pending in the driver or the socket now
            right.shutdown_write()
            small = bytearray(5)
            while True:
                count, small = await left.read(small)
                if count == 0:
                    break
                received += small[:count]
        return bytes(received)

    expected = b"first|second|third|" + b"x" * (3 * RECV_BUFFER_BYTES)
    assert kr.run(main, driver=uring(multishot), strict=True) == expected


def test_unread_bytes_stay_bounded_and_arrive_whole() -> None:
    """A peer writing far more than the pending limit while nobody reads: the driver
    pauses its recv (the socket buffers fill, the writer waits), then delivers everything."""
    total = 32 * PENDING_LIMIT_BYTES  # far beyond what the limit plus the buffers hold
    chunk = b"".join(bytes([index % 251]) for index in range(251)) * 64

    async def writer(stream: kr.UnixStream) -> None:
        sent = 0
        while sent < total:
            part = chunk[: total - sent]
            await stream.write(part)
            sent += len(part)
        stream.shutdown_write()

    async def main() -> tuple[int, int, bool]:
        left, right = kr.UnixStream.pair()
        driver = current_runtime().driver
        assert isinstance(driver, UringDriver)
        with left, right:
            async with kr.TaskGroup() as group:
                group.spawn(writer, right)
                await kr.sleep(0.05)  # nobody reads: the writer fills everything it can
                count, buffer = await left.read(bytearray(16))  # creates/arms the receiver
                receiver = driver._recvs[left.fileno()]
                await kr.sleep(0.05)
                peak = len(receiver.pending)
                received = bytearray(buffer[:count])
                big = bytearray(65536)
                while True:
                    count, big = await left.read(big)
                    if count == 0:
                        break
                    received += big[:count]
        expected = (chunk * (total // len(chunk) + 1))[:total]
        return len(received), peak, bytes(received) == expected

    length, peak, intact = kr.run(main, driver=uring(True), strict=True)
    assert length == total
    assert intact, "bytes were lost, duplicated or reordered"
    # Paused past the limit; the kernel fills at most the ring's buffers in the one turn
    # before the cancel reaches it.
    assert peak <= PENDING_LIMIT_BYTES + RECV_BUFFERS * RECV_BUFFER_BYTES


@pytest.mark.parametrize("multishot", MULTISHOT)
def test_close_ends_a_waiting_read_and_cancelled_reads_lose_nothing(multishot: bool) -> None:
    async def main() -> tuple[bool, bytes]:
        left, right = kr.UnixStream.pair()
        buffer = bytearray(16)
        with kr.move_on_after(0.02):
            await left.read(buffer)
        await right.write(b"kept")
        await kr.sleep(0.01)
        assert buffer == bytearray(16), "a cancelled read wrote into its buffer"
        data = await left.read_exactly(4)

        closed = False

        async def reader() -> None:
            nonlocal closed
            try:
                await left.read(bytearray(8))
            except kr.ClosedResourceError:
                closed = True

        async with kr.TaskGroup() as group:
            group.spawn(reader)
            await kr.sleep(0.01)
            left.close()
        right.close()
        return closed, bytes(data)

    assert kr.run(main, driver=uring(multishot), strict=True) == (True, b"kept")


@pytest.mark.parametrize("multishot", MULTISHOT)
def test_tcp_echo_many_connections(multishot: bool) -> None:
    connections = 32
    rounds = 20

    async def echo(stream: kr.TcpStream) -> None:
        buffer = bytearray(4096)
        with stream:
            while True:
                count, buffer = await stream.read(buffer)
                if count == 0:
                    return
                await stream.write(memoryview(buffer)[:count])

    async def client(port: int, index: int) -> None:
        stream = await kr.TcpStream.connect("127.0.0.1", port)
        with stream:
            for round_number in range(rounds):
                message = f"{index}:{round_number}".encode() * 10
                await stream.write(message)
                assert await stream.read_exactly(len(message)) == message

    async def main() -> None:
        with kr.TcpListener.bind("127.0.0.1", 0) as listener:
            async with kr.TaskGroup() as servers, kr.TaskGroup() as clients:
                for index in range(connections):
                    clients.spawn(client, listener.port, index)
                for _ in range(connections):
                    stream, _peer = await listener.accept()
                    servers.spawn(echo, stream)

    kr.run(main, driver=uring(multishot), strict=True)
