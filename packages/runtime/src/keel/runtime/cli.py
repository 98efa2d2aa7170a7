"""`keel runtime ...`: which driver this host gets, and a quick echo self-check.

Why: the driver choice must be observable (FEATURES.md): a user whose container blocks
io_uring should see "epoll" and why, not discover it from a benchmark.
"""

from __future__ import annotations

import json
import os
import time

import click

from keel.runtime.drivers import ENVIRONMENT_VARIABLE, chosen_driver_name, io_uring_usable, probe

ECHO_ROUNDS = 1000
MESSAGE = b"k" * 128


@click.group("runtime")
def runtime_command() -> None:
    """keel.runtime: the io_uring / epoll async runtime."""


@runtime_command.command("info")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def info_command(as_json: bool) -> None:
    """Say which driver `keel.runtime.run` would use here, and why."""
    facts = {
        "probe": probe(),
        "io_uring_usable": io_uring_usable(),
        "environment_override": os.environ.get(ENVIRONMENT_VARIABLE),
        "chosen": chosen_driver_name(),
    }
    if as_json:
        click.echo(json.dumps(facts, indent=2))
        return
    for name, value in facts.items():
        click.echo(f"{name:>22}: {value}")


@runtime_command.command("selftest")
@click.option("--driver", type=click.Choice(["io_uring", "epoll"]), default=None)
def selftest_command(driver: str | None) -> None:
    """Echo 1000 messages over loopback TCP and print the round-trip time."""
    import keel.runtime as kr

    async def main() -> float:
        async with kr.TaskGroup() as group:
            with kr.TcpListener.bind("127.0.0.1", 0) as listener:
                async def echo() -> None:
                    stream, _ = await listener.accept()
                    with stream:
                        buffer = bytearray(len(MESSAGE))
                        while True:
                            count, buffer = await stream.read(buffer)
                            if count == 0:
                                return
                            await stream.write(memoryview(buffer)[:count])

                group.spawn(echo)
                with await kr.TcpStream.connect("127.0.0.1", listener.port) as client:
                    started = time.perf_counter()
                    for _ in range(ECHO_ROUNDS):
                        await client.write(MESSAGE)
                        await client.read_exactly(len(MESSAGE))
                    elapsed = (time.perf_counter() - started) / ECHO_ROUNDS
        return elapsed

    name = chosen_driver_name(driver)
    seconds = kr.run(main, driver=name, strict=True)
    click.echo(f"{name}: {ECHO_ROUNDS} echoes ok, {seconds * 1e6:.1f} us per round trip")
