"""UDP, Unix sockets, files, pipes and signals on both drivers."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

import keel.runtime as kr
from keel.runtime.fs import File, open_pipe
from keel.runtime.signals import open_signal_receiver


def test_udp_round_trip(run) -> None:
    async def main() -> None:
        with kr.UdpSocket.bind() as server, kr.UdpSocket.bind() as client:
            await client.send_to(b"ping", server.local_address)
            count, sender, buffer = await server.recv_from(bytearray(64))
            assert buffer[:count] == b"ping" and sender == client.local_address
            await server.send_to(b"pong", sender)
            count, _, buffer = await client.recv_from(bytearray(64))
            assert buffer[:count] == b"pong"

    run(main)


def test_unix_stream_and_datagram(run, tmp_path: Path) -> None:
    path = str(tmp_path / "stream.sock")

    async def main() -> None:
        with kr.UnixListener.bind(path) as listener:
            async with kr.TaskGroup() as group:
                async def serve() -> None:
                    stream, _ = await listener.accept()
                    with stream:
                        data = await stream.read_exactly(5)
                        await stream.write(bytes(data).upper())

                group.spawn(serve)
                with await kr.UnixStream.connect(path) as client:
                    await client.write(b"hello")
                    assert await client.read_exactly(5) == b"HELLO"
        left, right = kr.UnixDatagram.pair()
        with left, right:
            await left.send(b"datagram")
            count, _, buffer = await right.recv_from(bytearray(32))
            assert buffer[:count] == b"datagram"

    run(main)


def test_file_read_write_fsync_stat(run, tmp_path: Path) -> None:
    path = tmp_path / "data.bin"

    async def main() -> None:
        async with await File.open(path, "w+") as file:
            written, _ = await file.write_at(b"0123456789", 0)
            assert written == 10
            await file.write_at(b"AB", 4)
            await file.fsync()
            count, buffer = await file.read_at(bytearray(20), 0)
            assert buffer[:count] == b"0123AB6789"
            count, buffer = await file.read_at(bytearray(4), 8)
            assert buffer[:count] == b"89"
            count, _ = await file.read_at(bytearray(4), 100)
            assert count == 0
            assert file.stat().st_size == 10
        with pytest.raises(kr.ClosedResourceError):
            await file.read_at(bytearray(1), 0)
        with pytest.raises(FileNotFoundError):
            await File.open(tmp_path / "missing", "r")
        with pytest.raises(ValueError, match="file mode"):
            await File.open(path, "rw")
        async with await File.open(path, "r") as file:
            with pytest.raises(ValueError, match="offset"):
                await file.read_at(bytearray(1), -1)

    run(main)
    assert path.read_bytes() == b"0123AB6789"


def test_many_concurrent_file_reads(run, tmp_path: Path) -> None:
    path = tmp_path / "blocks.bin"
    block = 4096
    path.write_bytes(b"".join(bytes([n % 256]) * block for n in range(64)))

    async def reader(file: File, number: int, seen: dict[int, bytes]) -> None:
        count, buffer = await file.read_at(bytearray(block), number * block)
        seen[number] = bytes(buffer[:count])

    async def main() -> dict[int, bytes]:
        seen: dict[int, bytes] = {}
        async with await File.open(path) as file, kr.TaskGroup() as group:
            for number in range(64):
                group.spawn(reader, file, number, seen)
        return seen

    seen = run(main)
    assert all(seen[n] == bytes([n % 256]) * block for n in range(64))


def test_pipe_round_trip_and_end(run) -> None:
    async def main() -> None:
        reader, writer = open_pipe()
        with reader:
            with writer:
                await writer.write(b"through the pipe")
            data = bytearray()
            while True:
                count, buffer = await reader.read(bytearray(5))
                if count == 0:
                    break
                data += buffer[:count]
            assert data == b"through the pipe"

    run(main)


def test_signal_receiver(run) -> None:
    async def main() -> int:
        with open_signal_receiver(signal.SIGUSR1) as signals:
            threading.Timer(0.02, os.kill, (os.getpid(), signal.SIGUSR1)).start()
            with kr.fail_after(5):
                return await signals.receive()

    assert run(main) == signal.SIGUSR1
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
