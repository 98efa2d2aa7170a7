"""Demo: a thread-per-core TCP echo server on keel.runtime's WorkerPool.

Run it with `python integration/demos/echo_thread_per_core.py [--workers N]` (keel-native
and keel-runtime installed). Each worker is a thread pinned to one core with its own runtime
(its own io_uring), and binds its own SO_REUSEPORT listener on one shared port, so the kernel
spreads connections across workers with no lock or queue between them. A short, bounded
client run (blocking sockets on client threads) sends messages and checks every echoed byte;
the demo then stops the pool and prints what each worker served.
"""

from __future__ import annotations

import argparse
import socket
import threading
import time
from dataclasses import dataclass, field

import keel.runtime as kr
from keel.runtime.workers import WorkerPool, available_cores, reserve_port

HOST = "127.0.0.1"
CLIENT_CONNECTIONS = 16
MESSAGES_PER_CONNECTION = 200
MESSAGE_SIZE = 128
READ_SIZE = 4096
CLIENT_TIMEOUT_SECONDS = 10.0
LISTEN_TIMEOUT_SECONDS = 10.0
MAX_WORKERS = 64


@dataclass
class ClientRun:
    finished: bool = False
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)


@dataclass
class WorkerCounts:
    connections: int = 0
    messages: int = 0
    bytes: int = 0


class EchoService:
    """What every worker runs, and the counts they keep (threads share this object)."""

    def __init__(self, workers: int) -> None:
        self.counts = [WorkerCounts() for _ in range(workers)]
        self.listening = threading.Semaphore(0)

    async def worker(self, index: int, port: int) -> None:
        counts = self.counts[index]
        with kr.TcpListener.bind(HOST, port, reuseport=True) as listener:
            self.listening.release()
            async with kr.TaskGroup() as group:
                while True:
                    stream, _peer = await listener.accept()
                    counts.connections += 1
                    group.spawn(self.echo, stream, counts)

    async def echo(self, stream: kr.TcpStream, counts: WorkerCounts) -> None:
        buffer = bytearray(READ_SIZE)
        with stream:
            while True:
                count, buffer = await stream.read(buffer)
                if count == 0:
                    return
                counts.messages += 1
                counts.bytes += count
                await stream.write(memoryview(buffer)[:count])


def client(port: int, number: int, failures: list[str]) -> None:
    """One connection: send messages, check each echo byte for byte."""
    try:
        with socket.create_connection((HOST, port), timeout=CLIENT_TIMEOUT_SECONDS) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for sequence in range(MESSAGES_PER_CONNECTION):
                message = bytes([(number + sequence) % 256]) * MESSAGE_SIZE
                sock.sendall(message)
                received = b""
                while len(received) < MESSAGE_SIZE:
                    chunk = sock.recv(MESSAGE_SIZE - len(received))
                    if not chunk:
                        raise ConnectionError("the server closed the connection early")
                    received += chunk
                if received != message:
                    raise AssertionError(f"message {sequence} came back different")
    except Exception as error:
        failures.append(f"connection {number}: {error!r}")


def run_clients(service: EchoService, pool: WorkerPool, port: int,
                result: ClientRun) -> None:
    """Wait until every worker listens, run the clients, then stop the pool."""
    try:
        for _ in range(pool.workers):
            if not service.listening.acquire(timeout=LISTEN_TIMEOUT_SECONDS):
                result.failures.append("a worker did not start listening in time")
                return
        failures = result.failures
        threads = [threading.Thread(target=client, args=(port, number, failures))
                   for number in range(CLIENT_CONNECTIONS)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(CLIENT_TIMEOUT_SECONDS * MESSAGES_PER_CONNECTION)
        result.seconds = time.perf_counter() - started
        result.finished = not any(thread.is_alive() for thread in threads)
    finally:
        pool.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=len(available_cores()),
                        help="worker threads, one per core (default: every core)")
    arguments = parser.parse_args()
    if not 1 <= arguments.workers <= MAX_WORKERS:
        parser.error(f"--workers must be between 1 and {MAX_WORKERS}, got {arguments.workers}")
    port = reserve_port(HOST)
    service = EchoService(arguments.workers)
    pool = WorkerPool(service.worker, port, workers=arguments.workers, mode="threads")
    print(f"echo_thread_per_core: {pool.workers} workers on cores {pool.cores}, "
          f"each with its own runtime and SO_REUSEPORT listener on {HOST}:{port}")
    result = ClientRun()
    clients = threading.Thread(target=run_clients, args=(service, pool, port, result),
                               name="echo-demo-clients")
    clients.start()
    pool.run()
    clients.join()
    failures = result.failures if result.finished else [*result.failures, "clients unfinished"]
    seconds = result.seconds
    total = CLIENT_CONNECTIONS * MESSAGES_PER_CONNECTION
    print(f"echo_thread_per_core: {CLIENT_CONNECTIONS} connections x "
          f"{MESSAGES_PER_CONNECTION} messages of {MESSAGE_SIZE} B echoed in {seconds:.2f} s")
    print(f"{'worker':>6} {'core':>4} {'connections':>11} {'reads':>7} {'bytes':>9}")
    for index, counts in enumerate(service.counts):
        print(f"{index:>6} {pool.cores[index]!s:>4} {counts.connections:>11} "
              f"{counts.messages:>7} {counts.bytes:>9}")
    echoed = sum(counts.bytes for counts in service.counts)
    print(f"echo_thread_per_core: {echoed} bytes echoed in all (expected "
          f"{total * MESSAGE_SIZE}); workers stopped, listeners closed")
    if failures or echoed != total * MESSAGE_SIZE:
        raise SystemExit(f"echo_thread_per_core: the client run failed: {failures}")


if __name__ == "__main__":
    main()
