"""Reliability: cancellation storms, more operations than ring entries, EMFILE on accept,
shutdown with operations in flight, and the runtime's own leak check."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap

import pytest

import keel.runtime as kr
from keel.runtime.scheduler import current_runtime

PAIRS = 250
ROUNDS = 8  # 2000 reads cancelled mid-flight in all


def test_cancellation_storm_leaves_buffers_untouched(run) -> None:
    async def main() -> int:
        pairs = [kr.UnixStream.pair() for _ in range(PAIRS)]
        cancelled = 0
        try:
            for _ in range(ROUNDS):
                buffers = [bytearray(16) for _ in range(PAIRS)]

                async def reader(stream: kr.UnixStream, buffer: bytearray) -> None:
                    await stream.read(buffer)
                    raise AssertionError("read completed although nothing was sent")

                async with kr.TaskGroup() as group:
                    for (left, _right), buffer in zip(pairs, buffers, strict=True):
                        group.spawn(reader, left, buffer)
                    await kr.sleep(0.005)  # every read is in flight in the kernel now
                    group.cancel()
                cancelled += PAIRS
                assert current_runtime().driver.in_flight() == 0
                # Data sent after the cancellation must not land in the old buffers.
                for _left, right in pairs:
                    await right.write(b"after")
                await kr.sleep(0.005)
                assert all(buffer == bytearray(16) for buffer in buffers)
                for left, _right in pairs:
                    assert await left.read_exactly(5) == b"after"
        finally:
            for left, right in pairs:
                left.close()
                right.close()
        return cancelled

    assert run(main) == PAIRS * ROUNDS


def test_more_operations_than_ring_entries(run) -> None:
    ring_entries = 8
    operations = 300

    async def main() -> int:
        pairs = [kr.UnixStream.pair() for _ in range(operations)]
        done = 0
        try:
            async def echo_once(left: kr.UnixStream, right: kr.UnixStream) -> None:
                nonlocal done
                await right.write(b"x")
                count, buffer = await left.read(bytearray(1))
                assert (count, bytes(buffer)) == (1, b"x")
                await kr.sleep(0.001)
                done += 1

            async with kr.TaskGroup() as group:
                for left, right in pairs:
                    group.spawn(echo_once, left, right)
        finally:
            for left, right in pairs:
                left.close()
                right.close()
        return done

    assert run(main, ring_entries=ring_entries) == operations


def test_shutdown_with_operations_in_flight(run) -> None:
    async def stuck_reader(stream: kr.UnixStream) -> None:
        with stream:
            await stream.read(bytearray(10))

    async def main() -> int:
        for _ in range(50):
            left, right = kr.UnixStream.pair()
            kr.spawn(stuck_reader, left)
            kr.spawn(stuck_reader, right)
        await kr.sleep(0.01)
        return current_runtime().driver.in_flight()

    # The main task returns with 100 reads in flight: shutdown cancels the tasks, waits for
    # the kernel, and the fd/thread leak check of the test plugin then finds nothing open.
    assert run(main) == 100


def test_leak_check_reports_an_unclosed_listener(driver: str) -> None:
    kept: list[kr.TcpListener] = []

    async def main() -> None:
        listener = kr.TcpListener.bind()
        kept.append(listener)

        async def accept_once() -> None:
            await listener.accept()

        with kr.move_on_after(0.01):
            await accept_once()

    try:
        if driver == "io_uring":
            with pytest.raises(kr.LeakError, match="still in flight"):
                kr.run(main, driver=driver, strict=True)
        else:
            kr.run(main, driver=driver, strict=True)  # epoll holds nothing in the kernel
    finally:
        kept[0].socket.close()


def test_main_failure_is_not_hidden_by_the_leak_it_causes(driver: str) -> None:
    kept: list[kr.TcpListener] = []

    async def main() -> None:
        listener = kr.TcpListener.bind()
        kept.append(listener)
        with kr.move_on_after(0.01):
            await listener.accept()
        raise ValueError("the main task failed")

    try:
        with pytest.raises(ValueError, match="the main task failed") as raised:
            kr.run(main, driver=driver, strict=True)
        notes = getattr(raised.value, "__notes__", [])
        if driver == "io_uring":
            assert any("still in flight" in note for note in notes), notes
        else:
            assert notes == []  # epoll holds nothing in the kernel
    finally:
        kept[0].socket.close()


EMFILE_SERVER = textwrap.dedent("""
    import errno, resource, sys
    import keel.runtime as kr

    LIMIT = 48

    async def hold(stream, served):
        with stream:
            data = await stream.read_exactly(1)
            await stream.write(data)
            await stream.read(bytearray(1))  # until the client closes
            served.append(1)

    async def main():
        emfile = 0
        served = []
        async with kr.TaskGroup() as group:
            with kr.TcpListener.bind("127.0.0.1", 0) as listener:
                print(listener.port, flush=True)
                resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, LIMIT))
                while len(served) < int(sys.argv[2]):
                    try:
                        with kr.move_on_after(0.2):
                            stream, _ = await listener.accept()
                            group.spawn(hold, stream, served)
                    except OSError as error:
                        if error.errno != errno.EMFILE:
                            raise
                        emfile += 1
                        await kr.sleep(0.01)
                group.cancel()
        print("emfile", emfile, "served", len(served), flush=True)

    kr.run(main, driver=sys.argv[1])
""")


@pytest.mark.timeout(120)
def test_emfile_on_accept_then_keeps_serving(driver: str, tmp_path) -> None:
    connections = 80  # more than the server's fd limit allows at once
    script = tmp_path / "server.py"
    script.write_text(EMFILE_SERVER)
    server = subprocess.Popen([sys.executable, str(script), driver, str(connections)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    clients: list[socket.socket] = []
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        for _ in range(connections):
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=30))
        for client in clients:
            client.sendall(b"!")
        # The first ones get answers; later ones wait in the backlog while the server is at
        # its fd limit. Closing the early ones frees fds and the rest get served.
        answered = 0
        for client in clients:
            assert client.recv(1) == b"!"
            answered += 1
            client.close()
        output, errors = server.communicate(timeout=60)
    finally:
        for client in clients:
            client.close()
        if server.poll() is None:
            server.kill()
            server.communicate()
    assert server.returncode == 0, errors
    emfile = int(output.split()[1])
    assert emfile >= 1, output
    assert f"served {connections}" in output
    assert answered == connections


def test_racing_cancellations_never_lose_or_duplicate_data(run) -> None:
    """Reads cancelled at random moments while data arrives: every byte that was written is
    read exactly once, in order (a read that completed as its cancel was submitted hands
    its data back instead of dropping it)."""
    import random

    total = 200_000
    rng = random.Random(3)

    async def main() -> bytes:
        left, right = kr.UnixStream.pair()
        payload = bytes(rng.randrange(256) for _ in range(total))
        received = bytearray()
        with left, right:
            async def writer() -> None:
                sent = 0
                while sent < total:
                    chunk = payload[sent:sent + rng.randrange(1, 4096)]
                    await right.write(chunk)
                    sent += len(chunk)
                    if rng.random() < 0.3:
                        await kr.sleep(0.0002)

            async with kr.TaskGroup() as group:
                group.spawn(writer)
                buffer = bytearray(1024)
                while len(received) < total:
                    with kr.move_on_after(rng.choice((0, 0.00005, 0.0002, 0.001))):
                        while len(received) < total:
                            count, buffer = await left.read(buffer)
                            received += buffer[:count]
        return bytes(received) == payload

    assert run(main)
