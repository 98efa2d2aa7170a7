"""Thread-per-core workers sharing a SO_REUSEPORT port; stop on request and on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import keel.runtime as kr
from keel.runtime.workers import WorkerPool, reserve_port

CLIENTS = 20


async def echo_worker(index: int, port: int, served: list[int]) -> tuple[int, set[int]]:
    affinity = os.sched_getaffinity(0)
    async with kr.TaskGroup() as group:
        with kr.TcpListener.bind("127.0.0.1", port, reuseport=True) as listener:
            while True:
                stream, _ = await listener.accept()

                async def serve(stream: kr.TcpStream) -> None:
                    with stream:
                        data = await stream.read_exactly(4)
                        await stream.write(data)
                        served.append(index)

                group.spawn(serve, stream)
    return index, affinity


def _clients(port: int) -> list[bytes]:
    replies = []
    deadline = time.monotonic() + 10
    for number in range(CLIENTS):
        while True:
            try:
                connection = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except ConnectionRefusedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        with connection:
            connection.sendall(b"%04d" % number)
            replies.append(connection.recv(4))
    return replies


def test_thread_workers_share_a_port_and_stop(driver: str) -> None:
    port = reserve_port()
    served: list[int] = []
    pool = WorkerPool(echo_worker, port, served, workers=2, driver=driver)
    results: list[object] = []
    runner = threading.Thread(target=lambda: results.extend(pool.run(handle_signals=False)))
    runner.start()
    try:
        replies = _clients(port)
    finally:
        pool.stop()
        runner.join(20)
    assert not runner.is_alive()
    assert replies == [b"%04d" % number for number in range(CLIENTS)]
    assert len(served) == CLIENTS and set(served) <= {0, 1}
    assert results == [None, None]  # stopped, not returned
    if len(os.sched_getaffinity(0)) >= 2:
        assert pool.cores[0] != pool.cores[1]


def test_bad_pool_arguments() -> None:
    with pytest.raises(ValueError, match="workers"):
        WorkerPool(echo_worker, workers=0)
    with pytest.raises(ValueError, match="mode"):
        WorkerPool(echo_worker, mode="fibers")


SCRIPT = textwrap.dedent("""
    import os
    import sys
    import keel.runtime as kr
    from keel.runtime.workers import WorkerPool, reserve_port

    def say(line):
        # One write(2) per line: two worker threads share stdout, and print()
        # writes its arguments and the newline separately, so lines interleave.
        os.write(sys.stdout.fileno(), (line + "\\n").encode())

    async def worker(index, port):
        try:
            with kr.TcpListener.bind("127.0.0.1", port, reuseport=True):
                say(f"worker {index} listening")
                await kr.sleep(3600)
        finally:
            say(f"worker {index} cleaned up")

    if __name__ == "__main__":
        pool = WorkerPool(worker, reserve_port(), workers=2, mode=sys.argv[1],
                          driver=sys.argv[2])
        print("results", pool.run(), flush=True)
""")


@pytest.mark.timeout(180)  # spawning interpreters is slow on a loaded 2-core machine
@pytest.mark.parametrize("mode", ["threads", "processes"])
def test_sigterm_stops_every_worker_cleanly(driver: str, mode: str, tmp_path) -> None:
    script = tmp_path / "pool.py"
    script.write_text(SCRIPT)
    process = subprocess.Popen([sys.executable, str(script), mode, driver],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        listening = [process.stdout.readline() for _ in range(2)]
        if not all("listening" in line for line in listening):
            process.kill()
            _, errors = process.communicate()
            pytest.fail(f"workers did not start: {listening!r}\n{errors}")
        process.send_signal(signal.SIGTERM)
        output, errors = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, errors
    assert output.count("cleaned up") == 2
    assert "results [None, None]" in output
