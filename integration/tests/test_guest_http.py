"""HTTP over virtio-net inside a booted guest: lwIP in a keel.vmm guest, keel.http's client
on keel.runtime on the host side of a TAP in a namespace this test makes.

The guest (`http-lwip`) is built by keel's guest tooling from Debian's lwip source package and
keel's CPL 3 virtio-net driver; the VMM opens the TAP inside the namespace; the client runs on
a thread that has joined that namespace. Every body is checked byte for byte.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from guest_http import (
    CONCURRENT_CLIENTS,
    GUEST_ADDRESS,
    HTTP_PORT,
    ONE_MEBIBYTE,
    REQUESTS_PER_CONCURRENT_CLIENT,
    SEQUENTIAL_REQUESTS,
    GuestHttpServer,
    exercise,
)

import keel.runtime as kr
from keel.http.client import HttpClient
from keel.native.testing.skips import requires_kvm, requires_tap
from keel.vmm.errors import GuestBuildError
from keel.vmm.guests import lwip

pytestmark = [
    requires_kvm,
    requires_tap,
    pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to build the guest"),
    pytest.mark.timeout(240),
]
RAW_TIMEOUT_SECONDS = 10.0
REQUEST_HEAD_LIMIT = 4096   # the guest's bound on one request head (lwip_http_server.c)


@pytest.fixture(scope="module")
def guest() -> Iterator[GuestHttpServer]:
    with GuestHttpServer() as server:
        yield server
        assert server.vm is not None and server.vm.exit is None, server.serial_output


@pytest.mark.parametrize("driver", ["io_uring", "epoll"])
def test_sequential_concurrent_and_one_mebibyte_requests_arrive_intact(
        guest: GuestHttpServer, driver: str) -> None:
    report = guest.run_inside(lambda: kr.run(exercise, driver=driver))
    expected = 1 + SEQUENTIAL_REQUESTS + CONCURRENT_CLIENTS * REQUESTS_PER_CONCURRENT_CLIENT + 1
    assert report.requests == expected
    # keep-alive held: one connection for the sequential run, one per concurrent client, one
    # for the large response
    assert report.connections == 1 + CONCURRENT_CLIENTS + 1
    assert report.bytes_checked > ONE_MEBIBYTE
    assert "Hello from lwIP" in report.index_page


def test_unknown_paths_methods_and_sizes_get_their_status(guest: GuestHttpServer) -> None:
    async def statuses() -> list[tuple[int, bytes, str | None]]:
        async with HttpClient(GUEST_ADDRESS, HTTP_PORT, timeout=RAW_TIMEOUT_SECONDS) as client:
            answers = []
            for method, path in [("GET", "/nope"), ("GET", f"/bytes/{ONE_MEBIBYTE + 1}"),
                                 ("GET", "/bytes/12x"), ("DELETE", "/"), ("GET", "/bytes/0")]:
                response = await client.request(method, path)
                answers.append((response.status, response.body, response.header("connection")))
            return answers

    answers = guest.run_inside(lambda: kr.run(statuses))
    assert [status for status, _, _ in answers] == [404, 400, 404, 405, 200]
    assert answers[0][1] == b"not found\n"
    assert answers[4][1] == b""
    assert all(connection == "keep-alive" for _, _, connection in answers)


def _raw_exchange(request: bytes) -> bytes:
    """Send `request` on a plain socket inside the namespace; everything until the close."""
    address = (GUEST_ADDRESS, HTTP_PORT)
    with socket.create_connection(address, timeout=RAW_TIMEOUT_SECONDS) as sock:
        sock.sendall(request)
        received = b""
        while len(received) < 1 << 16:
            data = sock.recv(65536)
            if not data:
                break
            received += data
        return received


def test_an_oversized_request_head_is_refused_and_closed(guest: GuestHttpServer) -> None:
    request = (b"GET / HTTP/1.1\r\nHost: guest\r\nX-Filler: " + b"a" * REQUEST_HEAD_LIMIT +
               b"\r\n\r\n")
    reply = guest.run_inside(lambda: _raw_exchange(request))
    assert reply.startswith(b"HTTP/1.1 431 ")
    assert b"Connection: close" in reply


def test_a_request_body_is_refused_and_garbage_is_a_bad_request(guest: GuestHttpServer) -> None:
    with_body = b"GET / HTTP/1.1\r\nHost: guest\r\nContent-Length: 5\r\n\r\nhello"
    assert guest.run_inside(lambda: _raw_exchange(with_body)).startswith(b"HTTP/1.1 400 ")
    chunked = b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    assert guest.run_inside(lambda: _raw_exchange(chunked)).startswith(b"HTTP/1.1 400 ")
    garbage = b"\x16\x03\x01 hello there\r\n\r\n"
    assert guest.run_inside(lambda: _raw_exchange(garbage)).startswith(b"HTTP/1.1 400 ")


def test_pipelined_requests_are_answered_in_order_and_close_is_honoured(
        guest: GuestHttpServer) -> None:
    requests = (b"GET /bytes/3 HTTP/1.1\r\nHost: guest\r\n\r\n"
                b"GET /nope HTTP/1.1\r\nHost: guest\r\n\r\n"
                b"GET /bytes/2 HTTP/1.1\r\nHost: guest\r\nConnection: close\r\n\r\n")
    reply = guest.run_inside(lambda: _raw_exchange(requests))
    heads = reply.split(b"HTTP/1.1 ")[1:]
    assert [head[:3] for head in heads] == [b"200", b"404", b"200"]
    assert heads[0].endswith(b"\r\n\r\n\x00\x1f>")   # bytes 0..2 of the pattern
    assert heads[2].endswith(b"Connection: close\r\n\r\n\x00\x1f")


def test_lwip_fetch_failure_names_apt_and_the_package(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An apt source nobody answers (a closed port on loopback): apt cannot fetch lwip.
    sources = tmp_path / "debian.sources"
    sources.write_text("Types: deb\nURIs: http://127.0.0.1:9/debian\nSuites: bookworm\n"
                       "Components: main\nTrusted: yes\n")
    monkeypatch.setattr(lwip, "SYSTEM_SOURCE_FILES", (sources,))
    messages: list[str] = []
    with pytest.raises(GuestBuildError, match="apt could not fetch Debian's lwip source package"):
        lwip.lwip_source(progress=messages.append, directory=tmp_path / "lwip")
    assert messages and messages[0].startswith("lwip: updating a private deb-src")
    assert lwip.cached_source(tmp_path / "lwip") is None
